package trace

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/pagecast/pagecast/internal/units"
)

// CSVHeader is the header line of pagecast's CSV traces, the convention of
// ../shared/traces: one row per page dirtied in an epoch.
const CSVHeader = "epoch,page"

// MaxImportGap and ImportBytesPerGap bound the empty epochs ImportCSV
// writes for epochs that have no rows: over the whole import, at most
// MaxImportGap plus one for every ImportBytesPerGap bytes of rows read so
// far, counted as they came in (compressed, for gzip; blank lines not at
// all). A larger jump is taken for a mistake, or an attack: a few bytes
// must not turn into gigabytes of empty epochs, nor into minutes of
// predict eval's (a 20 KB gzip stream of blank lines made 21 million, a
// 516 MB trace, and put predict eval and simulate out of memory; 12
// bytes, "0,1" and "65535,2", took predict eval five minutes on a 1 GiB
// guest).
const (
	MaxImportGap      = 1 << 12
	ImportBytesPerGap = 16
)

// maxCSVLine is the longest line ImportCSV reads: a row's two numbers
// take at most 41 bytes.
const maxCSVLine = 4096

// ExportCSV writes the rest of r's epochs to w as CSV: the header
// "epoch,page", then one row per page, epochs and pages ascending, and a
// row with no page ("336,") for each empty epoch, which ImportCSV takes
// for an epoch that is there, empty. An empty epoch once had a row only
// before the first page and after the last, and those between were left
// to ImportCSV's gaps: a trace of an idle guest, 6 000 empty epochs
// between two pages, exported and would not import back (over its bound
// on gaps; found by a review). Epoch indices the trace lacks have no row:
// ImportCSV takes them for empty epochs within its bound. It returns the
// number of rows written.
func ExportCSV(w io.Writer, r *Reader) (int64, error) {
	bw := bufio.NewWriterSize(w, 64<<10)
	bw.WriteString(CSVHeader + "\n")
	var rows int64
	var line []byte
	write := func(epoch uint64, page uint64, empty bool) error {
		line = strconv.AppendUint(line[:0], epoch, 10)
		line = append(line, ',')
		if !empty {
			line = strconv.AppendUint(line, page, 10)
		}
		line = append(line, '\n')
		if _, err := bw.Write(line); err != nil {
			return fmt.Errorf("write csv: %w", err)
		}
		rows++
		return nil
	}
	for {
		e, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return rows, err
		}
		if len(e.Pages) == 0 {
			if err := write(e.Index, 0, true); err != nil {
				return rows, err
			}
			continue
		}
		for _, p := range e.Pages {
			if err := write(e.Index, p, false); err != nil {
				return rows, err
			}
		}
	}
	if err := bw.Flush(); err != nil {
		return rows, fmt.Errorf("write csv: %w", err)
	}
	return rows, nil
}

// ImportStats counts what ImportCSV read and wrote.
type ImportStats struct {
	// Rows is the number of data rows read.
	Rows int64
	// Epochs is the number of epochs written, the empty ones in gaps
	// included.
	Epochs int64
	// Pages is the number of pages written: Rows less duplicates.
	Pages int64
}

// ImportCSV reads a CSV trace, rows "epoch,page" (gzip-compressed input is
// recognised by its magic bytes; the header line is optional), and appends
// its epochs to w, which must not have had any appended yet. Epochs must
// ascend; rows within an epoch may come in any order and duplicates are
// dropped; a row without a page ("336,", as ExportCSV writes for each empty
// epoch) says its epoch is there, empty. Every epoch from
// the first row's to the last is written, those without pages as empty
// records, so epoch indices are kept; epoch i starts
// at offset i × w.Meta().Epoch. None is made up before the first row's: a
// trace exported from epoch 1 (pagecast's recordings start there) imports
// as it was, not with an empty epoch 0 that a simulation would replay.
// Errors name the line; a damaged gzip stream is reported as such rather
// than as the bad CSV line its damage makes.
func ImportCSV(in io.Reader, w *Writer) (ImportStats, error) {
	br := bufio.NewReaderSize(in, 64<<10)
	if magic, _ := br.Peek(2); !bytes.Equal(magic, []byte{0x1f, 0x8b}) {
		return importPlainCSV(br, w, nil)
	}
	raw := &countReader{r: br}
	zr, err := gzip.NewReader(raw)
	if err != nil {
		return ImportStats{}, fmt.Errorf("csv: gzip stream truncated or corrupt: %w", err)
	}
	defer zr.Close()
	zr.Multistream(false)
	gr := &gzipStream{r: &gzipMembers{zr: zr, raw: raw}}
	st, err := importPlainCSV(bufio.NewReaderSize(gr, 64<<10), w, &raw.n)
	if err != nil && gr.err == nil {
		// A flipped byte can decompress into bad rows and show only in
		// the checksum at the end: read on to learn whether the stream
		// is whole. No more is read than a successful import reads.
		io.Copy(io.Discard, gr)
	}
	var trailing trailingGzip
	if err != nil && errors.As(gr.err, &trailing) {
		return st, fmt.Errorf("csv: %w", gr.err)
	}
	if err != nil && gr.err != nil {
		return st, fmt.Errorf("csv: gzip stream truncated or corrupt: %w", gr.err)
	}
	return st, err
}

// gzipStream keeps the first error other than EOF that reading r gave.
type gzipStream struct {
	r   io.Reader
	err error
}

func (g *gzipStream) Read(p []byte) (int, error) {
	n, err := g.r.Read(p)
	if err != nil && err != io.EOF && g.err == nil {
		g.err = err
	}
	return n, err
}

// gzipMembers reads the gzip members one after another, as gzip -d does,
// and says so where something other than a member follows one (walk 134:
// a whole stream with bytes after it was said to be "truncated or
// corrupt: unexpected EOF").
type gzipMembers struct {
	zr  *gzip.Reader
	raw *countReader // zr's input, read by zr a byte at a time where it must (an io.ByteReader), so none past a member's end
}

func (g *gzipMembers) Read(p []byte) (int, error) {
	for {
		n, err := g.zr.Read(p)
		if err != io.EOF {
			return n, err
		}
		next, _ := g.raw.r.Peek(2)
		switch {
		case len(next) == 0:
			return n, io.EOF
		case bytes.Equal(next, []byte{0x1f, 0x8b}):
			if err := g.zr.Reset(g.raw); err != nil {
				return n, err
			}
			g.zr.Multistream(false)
			if n == 0 {
				// An empty member: on to the next, not a read of
				// nothing (walk 136: 101 of them in a row were "multiple
				// Read calls return no data or error").
				continue
			}
			return n, nil
		}
		end := g.raw.n
		for {
			// Zeros after the last member are padding, as gzip -d takes
			// them (walk 136).
			b, err := g.raw.ReadByte()
			if err == io.EOF {
				return n, io.EOF
			}
			if err != nil || b != 0 {
				return n, trailingGzip{end}
			}
		}
	}
}

// trailingGzip is bytes other than gzip after a whole gzip stream.
type trailingGzip struct{ end uint64 }

func (t trailingGzip) Error() string {
	return fmt.Sprintf("the gzip stream is whole, and ends at byte %d, but something that is not gzip follows it", t.end)
}

// countReader counts the bytes read through it.
type countReader struct {
	r *bufio.Reader
	n uint64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += uint64(n)
	return n, err
}

// ReadByte makes a countReader a flate.Reader, which gzip reads from as
// it is, reading no further than a member's end.
func (c *countReader) ReadByte() (byte, error) {
	b, err := c.r.ReadByte()
	if err == nil {
		c.n++
	}
	return b, err
}

// importPlainCSV is ImportCSV on uncompressed input; raw, if not nil,
// counts the bytes of the compressed stream it comes from, which bound
// its gaps instead where they are fewer.
func importPlainCSV(br *bufio.Reader, w *Writer, raw *uint64) (ImportStats, error) {
	var st ImportStats
	m := w.Meta()
	limit := m.Pages()
	var (
		cur   uint64 // epoch being gathered
		pages []uint64
		next  uint64 // next epoch index to write
	)
	compactAt := 1 << 16
	flush := func() error {
		// Write the empty epochs before cur, then cur with its rows.
		for ; next <= cur; next++ {
			e := Epoch{Index: next, Offset: time.Duration(next) * m.Epoch}
			if next == cur {
				slices.Sort(pages)
				e.Pages = slices.Compact(pages)
			}
			if err := w.Append(e); err != nil {
				return err
			}
			st.Epochs++
			st.Pages += int64(len(e.Pages))
		}
		pages = pages[:0]
		return nil
	}
	sc := bufio.NewScanner(br)
	sc.Buffer(make([]byte, 0, maxCSVLine), maxCSVLine)
	line := 0
	first := true         // no line but blank ones yet
	var read, gaps uint64 // bytes of rows read, empty epochs to write
	for sc.Scan() {
		line++
		text := sc.Text()
		if line == 1 {
			text = strings.TrimPrefix(text, "\ufeff") // a byte-order mark
		}
		text = strings.TrimSpace(text)
		if text == "" {
			continue
		}
		read += uint64(len(text)) + 1
		es, ps, ok := strings.Cut(text, ",")
		es, ps = strings.TrimSpace(es), strings.TrimSpace(ps)
		if first && !numberLike(es) {
			first = false
			if !ok || !strings.EqualFold(strings.Trim(es, `"`), "epoch") || !strings.EqualFold(strings.Trim(ps, `"`), "page") {
				switch {
				case strings.HasPrefix(text, Magic[:7]):
					return st, errors.New("a pagecast trace, not CSV: use it as it is (pagecast trace info), or export it as CSV (pagecast trace export)")
				case strings.HasPrefix(text, "PAR1"):
					return st, errors.New("a Parquet file, not CSV: want epoch,page rows")
				case binaryText(text):
					return st, fmt.Errorf("csv line %d: binary data, not text: want %s rows", line, CSVHeader)
				}
				return st, fmt.Errorf("csv line %d: header %s: want %s", line, clip(text), CSVHeader)
			}
			continue
		}
		first = false
		if !ok || strings.Contains(ps, ",") {
			return st, fmt.Errorf("csv line %d: %s: want two columns, epoch,page", line, clip(text))
		}
		epoch, err := strconv.ParseUint(es, 10, 64)
		if err != nil {
			return st, fmt.Errorf("csv line %d: epoch %q %s", line, es, notWhole(err))
		}
		empty := ps == "" // the epoch is there, with no page
		var page uint64
		if !empty {
			if page, err = strconv.ParseUint(ps, 10, 64); errors.Is(err, strconv.ErrRange) {
				// Beyond any guest's, as a page past the memory is
				// said (walk 107: "at most 18446744073709551615").
				return st, fmt.Errorf("csv line %d: page %q is beyond the %d pages of %s memory",
					line, ps, limit, units.FormatBytes(float64(m.MemoryBytes)))
			} else if err != nil {
				return st, fmt.Errorf("csv line %d: page %q %s", line, ps, notWhole(err))
			}
		}
		if page >= limit {
			return st, fmt.Errorf("csv line %d: page %d is beyond the %d pages of %s memory",
				line, page, limit, units.FormatBytes(float64(m.MemoryBytes)))
		}
		switch {
		case st.Rows > 0 && epoch < cur:
			return st, fmt.Errorf("csv line %d: epoch %d after epoch %d: epochs must ascend", line, epoch, cur)
		case st.Rows == 0 || epoch > cur:
			if epoch > uint64(math.MaxInt64/m.Epoch) {
				return st, fmt.Errorf("csv line %d: epoch %d (of %v) starts beyond the 292 years a trace can span", line, epoch, m.Epoch)
			}
			gapFrom := epoch // the first row's: no empty epoch goes before it
			if st.Rows > 0 {
				gapFrom = cur + 1
			}
			in := read
			if raw != nil {
				in = min(in, *raw)
			}
			if gap, budget := epoch-gapFrom, MaxImportGap+in/ImportBytesPerGap; gap > budget-gaps {
				return st, fmt.Errorf("csv line %d: epoch %d leaves a gap of %d empty epochs: %d bytes of rows so far may leave at most %d in all (%d, and one for every %d bytes); "+
					"give each empty epoch a row with no page (\"%d,\"), as trace export writes them", line, epoch, gap, in, budget, MaxImportGap, ImportBytesPerGap, gapFrom)
			}
			gaps += epoch - gapFrom
			if st.Rows > 0 {
				if err := flush(); err != nil {
					return st, fmt.Errorf("csv line %d: %w", line, err)
				}
			} else {
				next = epoch // the first row's epoch is the trace's first
			}
			cur = epoch
		}
		if !empty {
			pages = append(pages, page)
		}
		st.Rows++
		if len(pages) >= compactAt {
			// Many duplicates: keep memory to the distinct pages.
			slices.Sort(pages)
			pages = slices.Compact(pages)
			compactAt = max(1<<16, 2*len(pages))
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return st, fmt.Errorf("csv line %d: line too long (over %d bytes; a row is epoch,page)", line+1, maxCSVLine)
		}
		return st, fmt.Errorf("csv: %w", err)
	}
	if st.Rows > 0 {
		if err := flush(); err != nil {
			return st, fmt.Errorf("csv line %d: %w", line, err)
		}
	}
	return st, nil
}

func startsWithDigit(s string) bool { return s != "" && s[0] >= '0' && s[0] <= '9' }

// numberLike is whether a first line's first column is a row's epoch,
// good or bad, rather than a header's name: a digit, a sign or a point
// first, or nothing (walk 134: "-1,5" was called a header, "want
// epoch,page", where line 2 said "epoch "-1" is not a whole number").
func numberLike(s string) bool {
	return s == "" || startsWithDigit(s) || strings.ContainsRune("+-.", rune(s[0]))
}

// clip quotes a line of input for an error, cut at 60 bytes.
func clip(text string) string {
	if len(text) > 60 {
		return fmt.Sprintf("%q…", text[:60])
	}
	return fmt.Sprintf("%q", text)
}

// binaryText says whether text holds bytes no CSV has: invalid UTF-8 or
// control characters other than tab.
func binaryText(text string) bool {
	if !utf8.ValidString(text) {
		return true
	}
	for _, r := range text {
		if r < 0x20 && r != '\t' {
			return true
		}
	}
	return false
}

// notWhole says why strconv.ParseUint refused a number: too large (walk
// 53: "99999999999999999999 is not a whole number"), or not one.
func notWhole(err error) string {
	if errors.Is(err, strconv.ErrRange) {
		return "is too large (at most 18446744073709551615)"
	}
	return "is not a whole number"
}
