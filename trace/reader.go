package trace

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"os"
	"strings"
	"time"
)

// readChunk is how much the reader asks the underlying reader for at once.
const readChunk = 64 << 10

// Reader reads a trace's epochs in order. A damaged stretch of the file
// (a bad checksum, an impossible field, a truncated tail, junk) is skipped:
// the reader scans forward to the next record that checks out, and reports
// what it skipped in Damage. A Reader is not safe for concurrent use.
type Reader struct {
	src    io.Reader
	closer io.Closer
	meta   Meta
	major  int
	minor  int
	pages  uint64
	limit  int // largest body, from maxBody
	// maxIndex is the largest epoch index, from MaxEpochIndex.
	maxIndex uint64

	// buf[pos:] are bytes read but not yet consumed; buf[0] is at file
	// offset base.
	buf  []byte
	pos  int
	base int64
	eof  bool  // src has no more bytes
	err  error // sticky read error

	last       uint64
	any        bool
	skipped    uint64 // epoch indices between those read that the trace lacks
	disordered int    // intact records passed over in the open damage for their order
	damage     []Damage
	open       *Damage // damage being extended until a good record is found
	grid       crcGrid // checks records in damage in constant time
	summed     int64   // bytes checksummed, for tests of the work done
}

// Open opens the trace file at path and reads its header. The caller must
// Close the Reader.
func Open(path string) (*Reader, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err // names the path already
	}
	r, err := NewReader(f)
	if err != nil {
		f.Close()
		if errors.Is(err, ErrNotTrace) && (strings.HasSuffix(path, ".csv") || strings.HasSuffix(path, ".csv.gz")) {
			return nil, fmt.Errorf("%s: %w: an epoch,page CSV becomes one with pagecast trace import --memory SIZE (predict eval and simulate read it as it is, given --memory)", path, err)
		}
		if errors.Is(err, ErrNotTrace) {
			if what := notTraceKind(path); what != "" {
				return nil, fmt.Errorf("%s: %w: %s", path, err, what)
			}
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	r.closer = f
	return r, nil
}

// notTraceKind says what a file that is not a trace looks like, where its
// first bytes tell: Parquet (as trace export writes), or CSV under a name
// that does not say so (CSV is known by its name, .csv or .csv.gz).
func notTraceKind(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	head := make([]byte, 64)
	n, _ := io.ReadFull(f, head)
	head = bytes.TrimPrefix(head[:n], []byte("\ufeff"))
	switch {
	case bytes.HasPrefix(head, []byte("PAR1")):
		return "a Parquet file (trace export writes them for other tools; pagecast reads back its .pct traces and epoch,page CSV)"
	case bytes.HasPrefix(head, []byte{0x1f, 0x8b}), bytes.HasPrefix(bytes.ToLower(head), []byte("epoch")),
		n > 0 && head[0] >= '0' && head[0] <= '9':
		return "it looks like an epoch,page CSV: name it .csv or .csv.gz (CSV is known by its name) and give --memory"
	}
	return ""
}

// NewReader reads a trace header from src. A header that is missing, has
// a bad checksum or impossible metadata is an error: nothing after it can
// be trusted. A source that does not start with the trace magic gives an
// error wrapping ErrNotTrace.
func NewReader(src io.Reader) (*Reader, error) {
	r := &Reader{src: src}
	if err := r.fill(headerFixed); err != nil {
		return nil, err
	}
	b := r.buf[r.pos:]
	if len(b) == 0 {
		return nil, fmt.Errorf("empty file: %w", ErrNotTrace)
	}
	if !bytes.HasPrefix(b, []byte(Magic)[:min(len(b), len(Magic))]) {
		return nil, ErrNotTrace
	}
	if len(b) < headerFixed {
		return nil, errors.New("trace header: truncated")
	}
	if major, minor := binary.LittleEndian.Uint16(b[8:]), binary.LittleEndian.Uint16(b[10:]); major != MajorVersion {
		return nil, fmt.Errorf("trace header: %w %d.%d (this pagecast reads %d.x)", ErrVersion, major, minor, MajorVersion)
	}
	metaLen := binary.LittleEndian.Uint32(b[12:])
	if metaLen > maxMetaBytes {
		return nil, fmt.Errorf("trace header: metadata length %d is over the %d limit", metaLen, maxMetaBytes)
	}
	total := headerFixed + int(metaLen) + 4
	if err := r.fill(total); err != nil {
		return nil, err
	}
	b = r.buf[r.pos:]
	if len(b) < total {
		return nil, errors.New("trace header: truncated")
	}
	if crc32.Checksum(b[:total-4], castagnoli) != binary.LittleEndian.Uint32(b[total-4:]) {
		// Where, as a record's damage is said, its end excluded (walk
		// 107): the header and the metadata it carries, all of it
		// untrusted now.
		return nil, fmt.Errorf("trace header (bytes 0-%d): checksum mismatch: the file's metadata cannot be trusted, and nothing after it read", total)
	}
	m, err := decodeMeta(b[headerFixed : total-4])
	if err != nil {
		return nil, fmt.Errorf("trace header: %w", err)
	}
	r.meta, r.pages, r.limit, r.maxIndex = m, m.Pages(), maxBody(m), MaxEpochIndex(m.Epoch)
	r.major, r.minor = int(binary.LittleEndian.Uint16(b[8:])), int(binary.LittleEndian.Uint16(b[10:]))
	r.pos += total
	return r, nil
}

// Meta returns the trace's metadata.
func (r *Reader) Meta() Meta { return r.meta }

// Version returns the format version the trace was written in.
func (r *Reader) Version() (major, minor int) { return r.major, r.minor }

// Damage returns the stretches skipped so far, in file order; after Next
// has returned io.EOF, all of them.
func (r *Reader) Damage() []Damage { return r.damage }

// Skipped returns how many epoch indices between the first epoch read so
// far and the last the trace lacks: epochs lost to damage, or a recording
// that left them out.
func (r *Reader) Skipped() uint64 { return r.skipped }

// Close closes the file of a Reader made by Open; it does nothing for one
// made by NewReader.
func (r *Reader) Close() error {
	if r.closer == nil {
		return nil
	}
	c := r.closer
	r.closer = nil
	return c.Close()
}

// Next returns the next good epoch, or io.EOF after the last. Damage does
// not stop it; only an error reading the underlying source does.
func (r *Reader) Next() (Epoch, error) {
	for {
		if r.err != nil {
			return Epoch{}, r.err
		}
		e, size, reason := r.record()
		if r.err != nil {
			return Epoch{}, r.err
		}
		if reason == "" {
			if r.open != nil && size > 0 {
				r.open.Next, r.open.HasNext = e.Index, true
			}
			r.closeDamage()
			if size == 0 {
				return Epoch{}, io.EOF
			}
			r.pos += size
			if r.any {
				r.skipped += e.Index - r.last - 1 // indices ascend
			}
			r.last, r.any = e.Index, true
			return e, nil
		}
		if r.open == nil {
			r.open = &Damage{Offset: r.offset(), Reason: reason, Prev: r.last, HasPrev: r.any}
			r.disordered = 0
		} else if strings.Contains(reason, notFollowing) {
			r.disordered++
		}
		if !r.resync() {
			if r.err != nil {
				return Epoch{}, r.err
			}
			r.closeDamage()
			return Epoch{}, io.EOF
		}
	}
}

func (r *Reader) offset() int64 { return r.base + int64(r.pos) }

// notFollowing is the reason of an intact record whose epoch comes at or
// before the last one read.
const notFollowing = "does not follow"

func (r *Reader) closeDamage() {
	if r.open != nil {
		if r.disordered > 0 {
			// Intact records passed over for their order say more than
			// the first bytes' reason (walk 107: a trace followed by a
			// copy of itself was said to have "no record marker").
			r.open.Reason += fmt.Sprintf("; then %d intact records whose epochs do not follow those before (records written again, or out of order)", r.disordered)
		}
		r.open.Length = r.offset() - r.open.Offset
		r.open.Disordered = r.disordered
		r.damage = append(r.damage, *r.open)
		r.open = nil
		r.grid.reset()
	}
}

// record decodes the record at r.pos. It returns the epoch and the
// record's size, or a reason it is not a good record (and size 0). At the
// end of the file it returns size 0 and no reason.
func (r *Reader) record() (e Epoch, size int, reason string) {
	if r.fill(8) != nil {
		return e, 0, "read error"
	}
	b := r.buf[r.pos:]
	if len(b) == 0 {
		return e, 0, ""
	}
	if !bytes.HasPrefix(b, recordMarker[:min(len(b), 4)]) {
		return e, 0, "no record marker"
	}
	if len(b) < 8 {
		return e, 0, fmt.Sprintf("partial record at end of file (%d bytes)", len(b))
	}
	body := binary.LittleEndian.Uint32(b[4:])
	if body < minBody || uint64(body) > uint64(r.limit) {
		return e, 0, fmt.Sprintf("record length %d is impossible (%d..%d)", body, minBody, r.limit)
	}
	need := 8 + int(body) + 4
	if r.fill(need) != nil {
		return e, 0, "read error"
	}
	b = r.buf[r.pos:]
	if len(b) < need {
		return e, 0, fmt.Sprintf("record of %d bytes runs past the end of the file (%d bytes left)", need, len(b))
	}
	var sum uint32
	if r.open != nil {
		// Scanning damage: false markers may each claim a long body.
		sum = r.grid.checksum(r, r.pos, r.pos+8+int(body))
	} else {
		sum = crc32.Checksum(b[:8+body], castagnoli)
		r.summed += int64(8 + body)
	}
	if sum != binary.LittleEndian.Uint32(b[8+body:]) {
		return e, 0, "checksum mismatch"
	}
	e, reason = r.decodeBody(b[8 : 8+body])
	if reason != "" {
		return Epoch{}, 0, reason
	}
	if r.any && e.Index <= r.last {
		return Epoch{}, 0, fmt.Sprintf("epoch index %d %s %d", e.Index, notFollowing, r.last)
	}
	return e, need, ""
}

// decodeBody parses a record body whose checksum is good.
func (r *Reader) decodeBody(b []byte) (e Epoch, reason string) {
	var hdr [3]uint64
	for i := range hdr {
		x, n := uvarint(b)
		if n <= 0 {
			return e, "bad record header"
		}
		hdr[i], b = x, b[n:]
	}
	if hdr[1] > math.MaxInt64 {
		return e, fmt.Sprintf("epoch offset %d ns is too large", hdr[1])
	}
	count := hdr[2]
	// Every page takes at least one byte: this bounds the allocation by
	// the bytes actually present.
	if count > uint64(len(b)) || count > r.pages {
		return e, fmt.Sprintf("page count %d does not fit the record", count)
	}
	if hdr[0] > r.maxIndex {
		return e, fmt.Sprintf("epoch index %d starts beyond the 292 years a trace of %v epochs spans", hdr[0], r.meta.Epoch)
	}
	e = Epoch{Index: hdr[0], Offset: time.Duration(hdr[1])}
	if count == 0 {
		if len(b) != 0 {
			return Epoch{}, fmt.Sprintf("%d stray payload bytes", len(b))
		}
		return e, ""
	}
	pages := make([]uint64, count)
	var p uint64
	for i := range pages {
		var d uint64
		if len(b) > 0 && b[0] < 0x80 {
			d, b = uint64(b[0]), b[1:]
		} else {
			x, n := uvarint(b)
			if n <= 0 {
				return Epoch{}, fmt.Sprintf("bad page number encoding at page %d", i)
			}
			d, b = x, b[n:]
		}
		if i > 0 && d == 0 {
			return Epoch{}, fmt.Sprintf("page numbers not increasing at page %d", i)
		}
		if d >= r.pages-p {
			if d > math.MaxUint64-p {
				return Epoch{}, fmt.Sprintf("page number overflows at entry %d", i)
			}
			return Epoch{}, fmt.Sprintf("page %d (entry %d) is beyond the trace's %d pages", p+d, i, r.pages)
		}
		p += d
		pages[i] = p
	}
	if len(b) != 0 {
		return Epoch{}, fmt.Sprintf("%d stray payload bytes", len(b))
	}
	e.Pages = pages
	return e, ""
}

// resync moves r.pos past the bad byte at r.pos to the next record
// marker. It returns false, with r.pos at end of file, if there is none.
func (r *Reader) resync() bool {
	r.pos++
	for {
		if r.pos > len(r.buf) {
			r.pos = len(r.buf)
		}
		if i := bytes.Index(r.buf[r.pos:], recordMarker[:]); i >= 0 {
			r.pos += i
			return true
		}
		// Keep a possible partial marker at the end, read more.
		keep := min(len(r.buf)-r.pos, len(recordMarker)-1)
		r.pos = len(r.buf) - keep
		if r.eof {
			r.pos = len(r.buf)
			return false
		}
		if r.fill(keep+readChunk) != nil {
			return false
		}
	}
}

// fill tries to have n unconsumed bytes in the buffer; it has fewer only
// at end of file. The buffer grows with what is actually read, never by a
// length a (possibly hostile) field claims.
func (r *Reader) fill(n int) error {
	for len(r.buf)-r.pos < n && !r.eof && r.err == nil {
		if r.pos > 0 && (r.pos >= len(r.buf)/2 || cap(r.buf)-len(r.buf) < readChunk/4) {
			// Drop consumed bytes.
			k := copy(r.buf, r.buf[r.pos:])
			r.buf = r.buf[:k]
			r.base += int64(r.pos)
			r.pos = 0
		}
		if cap(r.buf)-len(r.buf) < readChunk/4 {
			grown := make([]byte, len(r.buf), max(2*cap(r.buf), readChunk))
			copy(grown, r.buf)
			r.buf = grown
		}
		m, err := r.src.Read(r.buf[len(r.buf):cap(r.buf)])
		r.buf = r.buf[:len(r.buf)+m]
		if err == io.EOF {
			r.eof = true
		} else if err != nil {
			r.err = fmt.Errorf("read trace: %w", err)
		}
	}
	return r.err
}

// ReadFile reads a whole trace file: its metadata, every good epoch and
// the damage skipped.
func ReadFile(path string) (Meta, []Epoch, []Damage, error) {
	r, err := Open(path)
	if err != nil {
		return Meta{}, nil, nil, err
	}
	defer r.Close()
	epochs, err := r.ReadAll()
	if err != nil {
		err = fmt.Errorf("%s: %w", path, err)
	}
	return r.Meta(), epochs, r.Damage(), err
}

// ReadAll reads every epoch left, to the end of the trace, skipping damage
// as Next does. It returns the epochs read before any error other than
// the end.
func (r *Reader) ReadAll() ([]Epoch, error) {
	var epochs []Epoch
	for {
		e, err := r.Next()
		if err == io.EOF {
			return epochs, nil
		}
		if err != nil {
			return epochs, err
		}
		epochs = append(epochs, e)
	}
}
