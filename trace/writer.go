package trace

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
)

// Writer appends epochs to a trace. Each epoch is encoded whole and handed
// to the underlying writer in one Write call, so a file killed at any
// moment ends in at most one partial record, which readers report as
// damage. A Writer is not safe for concurrent use.
type Writer struct {
	w     io.Writer
	file  *os.File // set by Create: Sync and Close act on it
	meta  Meta
	pages uint64
	limit int // largest body, from maxBody
	size  int64
	buf   []byte
	last  uint64
	any   bool
	kept  int   // epochs written whole
	err   error // sticky: the first write error
}

// Create creates (or truncates) the trace file at path and writes its
// header. Close the writer to close the file. The file is opened where it
// is, not replaced: through a symbolic link it is the link's target that
// is written, and a FIFO or device is written into.
func Create(path string, m Meta) (*Writer, error) {
	if err := m.validate(); err != nil {
		return nil, fmt.Errorf("create trace %s: %w", path, err)
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("create trace: %w", err)
	}
	w, err := NewWriter(f, m)
	if err != nil {
		f.Close()
		// A regular file goes: it holds no trace. Not a device or a
		// FIFO, nor the link that led here (as root, -o /dev/full
		// would otherwise delete /dev/full).
		if fi, serr := os.Lstat(path); serr == nil && fi.Mode().IsRegular() {
			os.Remove(path)
		}
		return nil, err
	}
	w.file = f
	return w, nil
}

// NewWriter writes a trace header for m to w and returns a Writer that
// appends epochs to it. Closing the Writer does not close w.
func NewWriter(w io.Writer, m Meta) (*Writer, error) {
	if err := m.validate(); err != nil {
		return nil, fmt.Errorf("trace metadata: %w", err)
	}
	h, err := encodeHeader(m)
	if err != nil {
		return nil, fmt.Errorf("trace metadata: %w", err)
	}
	if _, err := w.Write(h); err != nil {
		return nil, fmt.Errorf("write trace header: %w", err)
	}
	return &Writer{w: w, meta: m, pages: m.Pages(), limit: maxBody(m), size: int64(len(h))}, nil
}

// Meta returns the metadata the trace was created with.
func (w *Writer) Meta() Meta { return w.meta }

// Size returns how many bytes have been written, header included.
func (w *Writer) Size() int64 { return w.size }

// Append writes one epoch. Its index must be above the previous epoch's,
// its offset not negative, and its pages ascending, distinct and below
// Meta().Pages(). After a write error every later Append fails too.
func (w *Writer) Append(e Epoch) error {
	if w.err != nil {
		return w.err
	}
	if err := w.check(e); err != nil {
		return fmt.Errorf("append epoch %d: %w", e.Index, err)
	}
	b := appendRecord(w.buf[:0], e)
	w.buf = b
	if body := len(b) - recordFixed; body > w.limit {
		return fmt.Errorf("append epoch %d: record body of %d bytes is too large", e.Index, body)
	}
	n, err := w.w.Write(b)
	w.size += int64(n)
	if err != nil {
		// The part of the record written is cut off the file, so that
		// it ends whole (a disk that filled left a torn record, read as
		// damage: walk 72).
		whole := n == 0
		if t, ok := w.w.(interface{ Truncate(int64) error }); ok && n > 0 && t.Truncate(w.size-int64(n)) == nil {
			w.size -= int64(n)
			whole = true
		}
		if !whole {
			w.err = fmt.Errorf("write epoch %d: %w (the trace ends in a part of it, after %d epochs)", e.Index, err, w.kept)
			return w.err
		}
		w.err = fmt.Errorf("write epoch %d: %w (the trace keeps the %d epochs before it)", e.Index, err, w.kept)
		return w.err
	}
	w.last, w.any = e.Index, true
	w.kept++
	return nil
}

func (w *Writer) check(e Epoch) error {
	if w.any && e.Index <= w.last {
		return fmt.Errorf("index does not follow the previous epoch's %d", w.last)
	}
	if e.Index > MaxEpochIndex(w.meta.Epoch) {
		return fmt.Errorf("index is beyond the 292 years a trace of %v epochs spans", w.meta.Epoch)
	}
	if e.Offset < 0 {
		return fmt.Errorf("negative offset %v", e.Offset)
	}
	for i, p := range e.Pages {
		if p >= w.pages {
			return fmt.Errorf("page %d is beyond the trace's %d pages", p, w.pages)
		}
		if i > 0 && p <= e.Pages[i-1] {
			return fmt.Errorf("page %d follows page %d: pages must ascend and be distinct", p, e.Pages[i-1])
		}
	}
	return nil
}

// Sync commits the file to stable storage, where the underlying writer
// has a Sync method (an *os.File does); otherwise it does nothing.
func (w *Writer) Sync() error {
	if w.err != nil {
		return w.err
	}
	s, ok := w.w.(interface{ Sync() error })
	if !ok {
		return nil
	}
	if err := s.Sync(); err != nil {
		return fmt.Errorf("sync trace: %w", err)
	}
	return nil
}

// Close syncs and closes the file of a Writer made by Create; for one made
// by NewWriter it only returns any earlier write error.
func (w *Writer) Close() error {
	if w.file == nil {
		return w.err
	}
	f := w.file
	w.file = nil
	err := w.err
	if err == nil {
		err = w.Sync()
	}
	if cerr := f.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("close trace: %w", cerr)
	}
	if err == nil {
		w.err = errors.New("trace writer is closed")
	}
	return err
}

// appendRecord appends e's record to b. e must be valid.
func appendRecord(b []byte, e Epoch) []byte {
	start := len(b)
	b = append(b, recordMarker[:]...)
	b = append(b, 0, 0, 0, 0) // body length, set below
	b = binary.AppendUvarint(b, e.Index)
	b = binary.AppendUvarint(b, uint64(e.Offset))
	b = binary.AppendUvarint(b, uint64(len(e.Pages)))
	prev := uint64(0)
	for _, p := range e.Pages {
		b = binary.AppendUvarint(b, p-prev)
		prev = p
	}
	binary.LittleEndian.PutUint32(b[start+4:], uint32(len(b)-start-8))
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b[start:], castagnoli))
}
