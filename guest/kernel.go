package guest

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
)

// statusSymbol names the status page in the image.
const statusSymbol = "pc_status"

// multibootSearch is how far into the file the multiboot header may start.
const multibootSearch = 8192

// ErrNoMultiboot reports an image without a valid multiboot header in its
// first 8 KiB.
var ErrNoMultiboot = errors.New("no multiboot header in the first 8 KiB")

// A Kernel is a guest image parsed for a monitor: what to copy where, where
// to start and where to find the status page.
type Kernel struct {
	Entry          uint32    // physical address where every CPU starts
	Segments       []Segment // PT_LOAD segments, in file order
	StatusAddr     uint64    // physical address of the status page (pc_status)
	MultibootFlags uint32    // flags of the image's multiboot header
}

// A Segment is one PT_LOAD program header: Data is copied to Addr and the
// rest of MemSize (the bss) is zeroed.
type Segment struct {
	Addr    uint64 // physical load address (p_paddr)
	Data    []byte // the file bytes, shared with the image
	MemSize uint64 // bytes in memory, at least len(Data)
}

// Load parses a guest image: an ELF32 i386 executable with a multiboot
// header and a pc_status symbol, linked between ImageAddr and
// ReplayTableAddr.
func Load(img []byte) (*Kernel, error) {
	f, err := elf.NewFile(bytes.NewReader(img))
	if err != nil {
		return nil, fmt.Errorf("load guest image: %w", err)
	}
	if f.Class != elf.ELFCLASS32 {
		return nil, fmt.Errorf("load guest image: class %v, want ELFCLASS32", f.Class)
	}
	if f.Machine != elf.EM_386 {
		return nil, fmt.Errorf("load guest image: machine %v, want EM_386", f.Machine)
	}
	flags, err := multibootFlags(img)
	if err != nil {
		return nil, fmt.Errorf("load guest image: %w", err)
	}
	k := &Kernel{Entry: uint32(f.Entry), MultibootFlags: flags}

	for _, p := range f.Progs {
		if p.Type != elf.PT_LOAD {
			continue
		}
		if p.Off+p.Filesz > uint64(len(img)) || p.Filesz > p.Memsz {
			return nil, fmt.Errorf("load guest image: segment at %#x: bad sizes", p.Paddr)
		}
		if p.Paddr < ImageAddr || p.Paddr+p.Memsz > ReplayTableAddr {
			return nil, fmt.Errorf("load guest image: segment %#x+%#x outside [%#x, %#x)",
				p.Paddr, p.Memsz, ImageAddr, ReplayTableAddr)
		}
		k.Segments = append(k.Segments, Segment{
			Addr:    p.Paddr,
			Data:    img[p.Off : p.Off+p.Filesz],
			MemSize: p.Memsz,
		})
	}
	if len(k.Segments) == 0 {
		return nil, errors.New("load guest image: no PT_LOAD segments")
	}

	syms, err := f.Symbols()
	if err != nil {
		return nil, fmt.Errorf("load guest image: symbols: %w", err)
	}
	for _, s := range syms {
		if s.Name == statusSymbol {
			k.StatusAddr = s.Value
		}
	}
	if k.StatusAddr == 0 {
		return nil, fmt.Errorf("load guest image: symbol %s not found", statusSymbol)
	}
	if k.StatusAddr%PageSize != 0 {
		return nil, fmt.Errorf("load guest image: %s at %#x is not page aligned", statusSymbol, k.StatusAddr)
	}
	return k, nil
}

// multibootFlags finds the multiboot header: magic, flags and a checksum
// that makes the three sum to zero, 4-byte aligned in the first 8 KiB.
func multibootFlags(img []byte) (uint32, error) {
	n := min(len(img), multibootSearch)
	for off := 0; off+12 <= n; off += 4 {
		magic := binary.LittleEndian.Uint32(img[off:])
		flags := binary.LittleEndian.Uint32(img[off+4:])
		sum := binary.LittleEndian.Uint32(img[off+8:])
		if magic == multibootMagic && magic+flags+sum == 0 {
			return flags, nil
		}
	}
	return 0, ErrNoMultiboot
}

// LoadInto copies the image into guest memory (indexed by physical
// address) and zeroes each segment's bss.
func (k *Kernel) LoadInto(mem []byte) error {
	for _, s := range k.Segments {
		if s.Addr+s.MemSize > uint64(len(mem)) {
			return fmt.Errorf("load guest image: segment %#x+%#x beyond memory of %#x bytes",
				s.Addr, s.MemSize, len(mem))
		}
		seg := mem[s.Addr : s.Addr+s.MemSize]
		n := copy(seg, s.Data)
		clear(seg[n:])
	}
	return nil
}
