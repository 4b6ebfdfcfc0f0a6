package migrator

import (
	"errors"
	"hash/crc32"

	"golang.org/x/sys/unix"

	"github.com/pagecast/pagecast/bitmap"
)

// MemoryFile is implemented by a Guest or a Destination whose Memory is a
// shared mapping, from offset 0, of a file: a memfd, or a file on tmpfs
// (pagecast's own VMs' memory, and a QEMU's with shared RAM). Reading a
// page of such memory that was never written allocates it, so the engine
// takes the file's holes for zero pages without reading them: in the
// source's passes, and in the checksums both ends take of all memory at
// the switch-over. (Read, a 5 GiB QEMU guest that had written 1 GiB came
// to hold all 5 GiB at both ends, and the destination's checksums took
// 3.4 s of the downtime.) MemoryFD is the file's descriptor, or -1.
type MemoryFile interface {
	MemoryFD() int
}

// memoryFD is x's MemoryFD, or -1.
func memoryFD(x any) int {
	if f, ok := x.(MemoryFile); ok {
		return f.MemoryFD()
	}
	return -1
}

// Holes returns the pages of g's memory that are holes of the file it
// maps (see MemoryFile), or nil if g has none: pages that read as zero,
// and that reading would allocate.
func Holes(g Guest) (*bitmap.Bitmap, error) {
	fd := memoryFD(g)
	if fd < 0 {
		return nil, nil
	}
	return holes(fd, g.MemoryBytes()/PageSize)
}

// holes returns the pages among the first pages of file fd that are holes
// now: never written since the file was made, or punched out.
func holes(fd int, pages uint64) (*bitmap.Bitmap, error) {
	b := bitmap.New(pages)
	size := int64(pages * PageSize)
	for off := int64(0); off < size; {
		data, err := nextData(fd, off, size)
		if err != nil {
			return nil, err
		}
		for p := (off + PageSize - 1) / PageSize; p < data/PageSize; p++ {
			b.Set(uint64(p))
		}
		if data >= size {
			break
		}
		if off, err = unix.Seek(fd, data, unix.SEEK_HOLE); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// nextData is the offset of the first byte of data at or after off in
// file fd, or end if there is none before it. It does not move the file's
// offset for anyone who reads it: nothing reads these files through fd.
func nextData(fd int, off, end int64) (int64, error) {
	data, err := unix.Seek(fd, off, unix.SEEK_DATA)
	if errors.Is(err, unix.ENXIO) {
		return end, nil
	}
	if err != nil {
		return 0, err
	}
	return min(data, end), nil
}

// holeContents is mappedContents that takes the pages in holes for zero
// without reading them. holes were the file's holes once the dirty log had
// started; holeLog clears from them the pages each harvest names. So a
// page written since it was found a hole may be sent as zero, but its
// write is in the log, and it goes again.
type holeContents struct {
	mappedContents
	holes *bitmap.Bitmap
}

func (h holeContents) Zero(gfn uint64) bool {
	return h.holes.Has(gfn) || h.mappedContents.Zero(gfn)
}

// holeLog is a DirtyLog whose harvests clear the pages they name from
// holes; holeLister is one that also lists them.
type holeLog struct {
	DirtyLog
	holes *bitmap.Bitmap
}

func (l holeLog) Harvest() (*bitmap.Bitmap, error) {
	h, err := l.DirtyLog.Harvest()
	if err == nil {
		l.holes.AndNot(h)
	}
	return h, err
}

type holeLister struct {
	holeLog
	lister PageLister
}

func (l holeLister) HarvestPages() ([]uint64, error) {
	pages, err := l.lister.HarvestPages()
	for _, g := range pages {
		l.holes.Unset(g)
	}
	return pages, err
}

// trackHoles makes the source take the holes of its guest's memory file
// for zero pages (see MemoryFile), from the log on: it returns the log to
// harvest and the contents to read. A guest without such a file, or whose
// holes cannot be found, is read as it is.
func trackHoles(g Guest, mem []byte, log DirtyLog) (DirtyLog, Contents) {
	fd := memoryFD(g)
	if fd < 0 || len(mem) == 0 {
		return log, mappedContents(mem)
	}
	h, err := holes(fd, uint64(len(mem))/PageSize)
	if err != nil {
		return log, mappedContents(mem)
	}
	l := holeLog{DirtyLog: log, holes: h}
	if pl, ok := log.(PageLister); ok {
		return holeLister{holeLog: l, lister: pl}, holeContents{mappedContents(mem), h}
	}
	return l, holeContents{mappedContents(mem), h}
}

// zeroBuf is read as zeros where a checksum covers a hole.
var zeroBuf [64 << 10]byte

// updateZeros is crc updated with n zero bytes.
func updateZeros(crc uint32, n int64) uint32 {
	for ; n > 0; n -= int64(len(zeroBuf)) {
		crc = crc32.Update(crc, wireCastagnoli, zeroBuf[:min(n, int64(len(zeroBuf)))])
	}
	return crc
}

// sumPages is the checksum of pages [lo, hi) of mem, those in holes taken
// as zeros without being read; zeroSum is the checksum of that many zero
// pages, if known (else 0).
func sumPages(mem []byte, lo, hi uint64, holes *bitmap.Bitmap, zeroSum uint32) uint32 {
	var crc uint32
	for p := lo; p < hi; {
		hole := holes.Has(p)
		q := p + 1
		for q < hi && holes.Has(q) == hole {
			q++
		}
		switch {
		case hole && p == lo && q == hi && zeroSum != 0:
			return zeroSum
		case hole:
			crc = updateZeros(crc, int64(q-p)*PageSize)
		default:
			crc = crc32.Update(crc, wireCastagnoli, mem[p*PageSize:q*PageSize])
		}
		p = q
	}
	return crc
}
