package trace

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"maps"
	"math"
	"regexp"
	"slices"
	"sync/atomic"
	"time"
)

// Format constants; doc.go lays them out byte by byte.
const (
	// Magic opens every trace file.
	Magic = "PCTRACE\x00"
	// MajorVersion is the format's major version. A reader refuses a file
	// with a newer major version: its layout may differ.
	MajorVersion = 1
	// MinorVersion is the format's minor version. Minor versions only add
	// metadata fields, which older readers skip.
	MinorVersion = 0

	// headerFixed is the size of the header before the metadata: magic,
	// major, minor, metadata length.
	headerFixed = 8 + 2 + 2 + 4
	// maxMetaBytes bounds the metadata a header may declare.
	maxMetaBytes = 1 << 20

	// recordFixed is a record's overhead besides its body: marker, body
	// length, CRC.
	recordFixed = 4 + 4 + 4
	// minBody is the smallest body: three one-byte uvarints.
	minBody = 3

	// MinPageSize and MaxPageSize bound a trace's page size: what
	// hypervisors use, from x86's 4 KiB pages to 1 GiB huge pages.
	MinPageSize = 4 << 10
	MaxPageSize = 1 << 30
	// MinAnyPageSize is the smallest page size AllowAnyPageSize lets in.
	MinAnyPageSize = 512
	// MaxMemoryBytes bounds a trace's memory size: 4 PiB, the most a
	// 52-bit physical address (x86-64, arm64) reaches.
	MaxMemoryBytes = 1 << 52
)

// recordMarker opens every epoch record. Its 0x00 almost never occurs in a
// payload (a canonical uvarint ends in 0x00 only when it is 0, and deltas
// are at least 1), so resynchronisation after damage seldom stops at a
// false marker, and a false one is rejected by the record's CRC anyway.
var recordMarker = [4]byte{0x00, 'P', 'C', 'R'}

// Metadata field tags (see doc.go).
const (
	tagMemory   = 1
	tagPageSize = 2
	tagEpoch    = 3
	tagHook     = 4
	tagSource   = 5
	tagStart    = 6
	tagExtra    = 7
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrNotTrace is returned, possibly wrapped, when a file does not begin
// with the trace magic: it is not a pagecast trace at all.
var ErrNotTrace = errors.New("not a pagecast trace")

// ErrVersion is returned, wrapped, for a trace written in a major version
// of the format this reader does not know.
var ErrVersion = errors.New("unsupported trace format version")

// Meta describes the traced machine and how the trace was recorded. It is
// stored once, in the header.
type Meta struct {
	// MemoryBytes is the guest memory size; a multiple of PageSize.
	MemoryBytes uint64
	// PageSize is the guest page size in bytes, a power of two.
	PageSize uint32
	// Epoch is the length of one epoch.
	Epoch time.Duration
	// Hook names what recorded the writes, e.g.
	// "tp_btf/kvm_dirty_ring_push".
	Hook string
	// Source names the traced machine, e.g. "pagecast vm pid 1234".
	Source string
	// Start is when epoch offset 0 was; zero if unknown.
	Start time.Time
	// Extra holds free-form key/value strings.
	Extra map[string]string
}

// ExtraGuest is the Extra key naming the guest that was traced, where the
// recorder knew it: GuestPagecast for pagecast's own guest. A simulation
// takes a throttled guest to write as that kind of guest does (see
// simulate.Response): pagecast's in proportion to its CPU time, Linux far
// more.
const ExtraGuest = "guest"

// GuestPagecast is ExtraGuest's value for pagecast's own guest.
const GuestPagecast = "pagecast"

// Guest is the traced guest as Extra names it (ExtraGuest), "" where the
// recorder did not know it. A trace from before ExtraGuest was written
// names pagecast's own guest by its Source: pagecast profile's of
// pagecast's monitor ("pagecast pid N"), which runs no other, or the
// demo's ("pagecast demo").
func (m Meta) Guest() string {
	if g, ok := m.Extra[ExtraGuest]; ok {
		return g
	}
	if ownMonitorSource.MatchString(m.Source) || m.Source == "pagecast demo" {
		return GuestPagecast
	}
	return ""
}

// ownMonitorSource is Source as pagecast profile writes it of pagecast's
// monitor.
var ownMonitorSource = regexp.MustCompile(`^pagecast pid [0-9]+$`)

// Pages is the number of guest pages, MemoryBytes/PageSize: every page
// number in the trace is below it.
func (m Meta) Pages() uint64 {
	if m.PageSize == 0 {
		return 0
	}
	return m.MemoryBytes / uint64(m.PageSize)
}

// anyPageSize is AllowAnyPageSize's setting.
var anyPageSize atomic.Bool

// AllowAnyPageSize sets whether CheckPageSize, and so every trace header
// read or written, accepts any power of two from MinAnyPageSize to
// MaxPageSize rather than only what hypervisors use, and returns the
// previous setting. It is a process-wide setting, for a command-line flag
// (pagecast's --any-page-size) to set while a command runs.
func AllowAnyPageSize(allow bool) (previous bool) {
	return anyPageSize.Swap(allow)
}

// CheckPageSize checks a page size, read from a file or from the user: a
// power of two from MinPageSize to MaxPageSize, what hypervisors use, or
// from MinAnyPageSize if AllowAnyPageSize says so.
func CheckPageSize(size uint64) error {
	lo := uint64(MinPageSize)
	if anyPageSize.Load() {
		lo = MinAnyPageSize
	}
	switch {
	case size == 0 || size&(size-1) != 0:
		return fmt.Errorf("page size %d is not a power of two", size)
	case size < lo || size > MaxPageSize:
		if lo == MinPageSize {
			return fmt.Errorf("page size %d is outside the %d B to 1 GiB hypervisors use (pagecast trace info, export, import and predict eval take down to 512 B with --any-page-size)", size, lo)
		}
		return fmt.Errorf("page size %d is outside %d B to 1 GiB", size, lo)
	}
	return nil
}

// validate checks what every trace's metadata must satisfy.
func (m Meta) validate() error {
	if err := CheckPageSize(uint64(m.PageSize)); err != nil {
		return err
	}
	switch {
	case m.MemoryBytes == 0:
		return errors.New("memory size is zero")
	case m.MemoryBytes > MaxMemoryBytes:
		return fmt.Errorf("memory size %d is over the 4 PiB a 52-bit physical address reaches", m.MemoryBytes)
	case m.MemoryBytes%uint64(m.PageSize) != 0:
		return fmt.Errorf("memory size %d is not a whole number of %d-byte pages", m.MemoryBytes, m.PageSize)
	case m.Epoch <= 0:
		return fmt.Errorf("epoch length %v is not positive", m.Epoch)
	case m.Epoch > MaxEpoch:
		return fmt.Errorf("epoch length %v is over the %v a trace's epoch may last", m.Epoch, MaxEpoch)
	}
	for k := range m.Extra {
		if k == "" {
			return errors.New("extra metadata key is empty")
		}
	}
	return nil
}

// Epoch is one epoch's dirty set.
type Epoch struct {
	// Index numbers the epoch from the trace's start; indices increase
	// through a trace (and may skip, e.g. where damage was).
	Index uint64
	// Offset is when the epoch began, from Meta.Start.
	Offset time.Duration
	// Pages are the page numbers dirtied in the epoch, ascending and
	// distinct.
	Pages []uint64
}

// Damage is a stretch of a trace file the reader had to skip.
type Damage struct {
	// Offset is the byte offset in the file where the damage begins.
	Offset int64
	// Length is how many bytes were skipped.
	Length int64
	// Reason says what was wrong with the first record there.
	Reason string
	// Prev is the index of the last intact epoch before the stretch and
	// Next that of the first after it; HasPrev and HasNext say whether
	// there is one (a stretch may come before every intact record, or
	// end the file). Epochs lost before the first intact one or after
	// the last cannot be counted.
	Prev, Next       uint64
	HasPrev, HasNext bool
	// Disordered is how many intact records in the stretch were passed
	// over for their order (written again, or out of order).
	Disordered int
}

func (d Damage) String() string {
	return fmt.Sprintf("bytes %d-%d (%d bytes, %s): %s", d.Offset, d.Offset+d.Length, d.Length, d.Where(), d.Reason)
}

// Where says which intact epochs the stretch lies between.
func (d Damage) Where() string {
	switch {
	case d.HasPrev && d.HasNext:
		return fmt.Sprintf("between epochs %d and %d", d.Prev, d.Next)
	case d.HasNext:
		return fmt.Sprintf("before epoch %d, the first intact one", d.Next)
	case d.HasPrev:
		return fmt.Sprintf("after epoch %d, the last intact one", d.Prev)
	}
	return "no intact epoch either side"
}

// encodeHeader returns the whole header for m, CRC included.
func encodeHeader(m Meta) ([]byte, error) {
	var meta []byte
	field := func(tag uint64, v []byte) {
		meta = binary.AppendUvarint(meta, tag)
		meta = binary.AppendUvarint(meta, uint64(len(v)))
		meta = append(meta, v...)
	}
	field(tagMemory, binary.AppendUvarint(nil, m.MemoryBytes))
	field(tagPageSize, binary.AppendUvarint(nil, uint64(m.PageSize)))
	field(tagEpoch, binary.AppendUvarint(nil, uint64(m.Epoch)))
	if m.Hook != "" {
		field(tagHook, []byte(m.Hook))
	}
	if m.Source != "" {
		field(tagSource, []byte(m.Source))
	}
	if !m.Start.IsZero() {
		field(tagStart, binary.AppendVarint(nil, m.Start.UnixNano()))
	}
	for _, k := range slices.Sorted(maps.Keys(m.Extra)) {
		v := binary.AppendUvarint(nil, uint64(len(k)))
		v = append(append(v, k...), m.Extra[k]...)
		field(tagExtra, v)
	}
	if len(meta) > maxMetaBytes {
		return nil, fmt.Errorf("metadata is %d bytes, more than the %d a header holds", len(meta), maxMetaBytes)
	}
	h := make([]byte, 0, headerFixed+len(meta)+4)
	h = append(h, Magic...)
	h = binary.LittleEndian.AppendUint16(h, MajorVersion)
	h = binary.LittleEndian.AppendUint16(h, MinorVersion)
	h = binary.LittleEndian.AppendUint32(h, uint32(len(meta)))
	h = append(h, meta...)
	return binary.LittleEndian.AppendUint32(h, crc32.Checksum(h, castagnoli)), nil
}

// decodeMeta parses the metadata fields of a header.
func decodeMeta(b []byte) (Meta, error) {
	var m Meta
	seen := map[uint64]bool{}
	for len(b) > 0 {
		tag, n := uvarint(b)
		if n <= 0 {
			return m, errors.New("bad field tag")
		}
		b = b[n:]
		size, n := uvarint(b)
		if n <= 0 || size > uint64(len(b)-n) {
			return m, fmt.Errorf("field %d: bad length", tag)
		}
		v := b[n : n+int(size)]
		b = b[n+int(size):]
		if tag != tagExtra && seen[tag] {
			return m, fmt.Errorf("field %d appears twice", tag)
		}
		seen[tag] = true
		number := func() (uint64, error) {
			x, n := uvarint(v)
			if n <= 0 || n != len(v) {
				return 0, fmt.Errorf("field %d: bad number", tag)
			}
			return x, nil
		}
		switch tag {
		case tagMemory:
			x, err := number()
			if err != nil {
				return m, err
			}
			m.MemoryBytes = x
		case tagPageSize:
			x, err := number()
			if err != nil {
				return m, err
			}
			if x > math.MaxUint32 {
				return m, fmt.Errorf("page size %d is too large", x)
			}
			m.PageSize = uint32(x)
		case tagEpoch:
			x, err := number()
			if err != nil {
				return m, err
			}
			if x > math.MaxInt64 {
				return m, fmt.Errorf("epoch length %d ns is too large", x)
			}
			m.Epoch = time.Duration(x)
		case tagHook:
			m.Hook = string(v)
		case tagSource:
			m.Source = string(v)
		case tagStart:
			x, n := binary.Varint(v)
			if n <= 0 || n != len(v) || n > 1 && v[n-1] == 0 {
				return m, fmt.Errorf("field %d: bad number", tag)
			}
			m.Start = time.Unix(0, x)
		case tagExtra:
			klen, n := uvarint(v)
			if n <= 0 || klen > uint64(len(v)-n) {
				return m, errors.New("extra field: bad key length")
			}
			if m.Extra == nil {
				m.Extra = map[string]string{}
			}
			k := string(v[n : n+int(klen)])
			if _, dup := m.Extra[k]; dup {
				// As any other field twice: which one stands would be
				// a guess (walk 122: guest=linux, then guest=pagecast,
				// was read as pagecast's).
				return m, fmt.Errorf("extra field %q appears twice", k)
			}
			m.Extra[k] = string(v[n+int(klen):])
		default:
			// A field from a newer minor version: skip it.
		}
	}
	for _, f := range []struct {
		tag  uint64
		name string
	}{{tagMemory, "memory size"}, {tagPageSize, "page size"}, {tagEpoch, "epoch length"}} {
		if !seen[f.tag] {
			return m, fmt.Errorf("no %s", f.name)
		}
	}
	return m, m.validate()
}

// maxBody is the largest record body a trace of m's memory can need: three
// uvarints, then one delta per page. A delta d takes at most d bytes (at
// least 1 for the first, which may be 0), and the deltas add up to less
// than the page count, so the deltas take at most pages+1 bytes. At most
// 2 GiB.
func maxBody(m Meta) int {
	pages := m.Pages()
	if pages > math.MaxInt32-3*binary.MaxVarintLen64-1 {
		return math.MaxInt32
	}
	return int(3*binary.MaxVarintLen64 + 1 + pages)
}

// MaxEpoch is the longest epoch a trace may have. Dirty pages are
// harvested every 10 ms to a second; an epoch of years, a header that
// lies, was taken as such (walk 129).
const MaxEpoch = time.Hour

// MaxEpochIndex is the largest epoch index a trace of epoch length epoch
// can hold: epoch i begins i epochs after the start, and that must be
// within the 292 years a time.Duration spans.
func MaxEpochIndex(epoch time.Duration) uint64 {
	if epoch <= 0 {
		return 0
	}
	return uint64(math.MaxInt64 / epoch)
}

// uvarint decodes a canonical uvarint from b, as binary.Uvarint does, but
// refuses an overlong encoding (a last byte of 0 after others), so every
// value, and every record, has exactly one encoding. n <= 0 means there is
// no good uvarint.
func uvarint(b []byte) (x uint64, n int) {
	x, n = binary.Uvarint(b)
	if n > 1 && b[n-1] == 0 {
		return 0, -n
	}
	return x, n
}
