package trace

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// testMeta is a 256 MiB guest with 4 KiB pages: 65536 pages.
func testMeta() Meta {
	return Meta{
		MemoryBytes: 256 << 20,
		PageSize:    4096,
		Epoch:       time.Second,
		Hook:        "tp_btf/kvm_dirty_ring_push",
		Source:      "pagecast vm pid 1234",
		Start:       time.Unix(1700000000, 123456789),
		Extra:       map[string]string{"workload": "hotset:hot=1024", "vcpus": "1"},
	}
}

// encode writes a trace of epochs and returns its bytes and the offsets of
// record boundaries: ends[0] is the header's end, ends[i] record i-1's.
func encode(t testing.TB, m Meta, epochs []Epoch) ([]byte, []int64) {
	t.Helper()
	var buf bytes.Buffer
	w, err := NewWriter(&buf, m)
	if err != nil {
		t.Fatal(err)
	}
	ends := []int64{w.Size()}
	for _, e := range epochs {
		if err := w.Append(e); err != nil {
			t.Fatal(err)
		}
		ends = append(ends, w.Size())
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if int64(buf.Len()) != w.Size() {
		t.Fatalf("Size %d, wrote %d bytes", w.Size(), buf.Len())
	}
	return buf.Bytes(), ends
}

// readAll reads every epoch of a trace held in memory.
func readAll(data []byte) (Meta, []Epoch, []Damage, error) {
	r, err := NewReader(bytes.NewReader(data))
	if err != nil {
		return Meta{}, nil, nil, err
	}
	epochs, err := r.ReadAll()
	return r.Meta(), epochs, r.Damage(), err
}

// sameEpochs compares epochs, taking nil and empty page lists as equal.
func sameEpochs(a, b []Epoch) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Index != b[i].Index || a[i].Offset != b[i].Offset || len(a[i].Pages) != len(b[i].Pages) {
			return false
		}
		for j := range a[i].Pages {
			if a[i].Pages[j] != b[i].Pages[j] {
				return false
			}
		}
	}
	return true
}

func seq(from, n uint64) []uint64 {
	p := make([]uint64, n)
	for i := range p {
		p[i] = from + uint64(i)
	}
	return p
}

// randomPages returns n distinct pages below limit, ascending.
func randomPages(rng *rand.Rand, n int, limit uint64) []uint64 {
	set := map[uint64]bool{}
	for len(set) < n {
		set[rng.Uint64N(limit)] = true
	}
	p := make([]uint64, 0, n)
	for x := range set {
		p = append(p, x)
	}
	slices.Sort(p)
	return p
}

// sampleEpochs is a mixed trace: empty, sparse, dense, random epochs.
func sampleEpochs(n int) []Epoch {
	rng := rand.New(rand.NewPCG(1, 2))
	limit := testMeta().Pages()
	var epochs []Epoch
	for i := range n {
		e := Epoch{Index: uint64(i), Offset: time.Duration(i) * time.Second}
		switch i % 4 {
		case 1:
			e.Pages = seq(uint64(100*i), 20)
		case 2:
			e.Pages = randomPages(rng, 1+rng.IntN(15), limit)
		case 3:
			e.Pages = []uint64{limit - 1}
		}
		epochs = append(epochs, e)
	}
	return epochs
}

func TestRoundTrip(t *testing.T) {
	m := testMeta()
	last := m.Pages() - 1
	rng := rand.New(rand.NewPCG(3, 4))
	for _, tc := range []struct {
		name   string
		epochs []Epoch
	}{
		{"no epochs", nil},
		{"empty epochs", []Epoch{{Index: 0}, {Index: 1, Offset: time.Second}, {Index: 2, Offset: 2 * time.Second}}},
		{"one page", []Epoch{{Index: 0, Pages: []uint64{42}}}},
		{"page zero", []Epoch{{Index: 0, Pages: []uint64{0}}}},
		{"sparse", []Epoch{{Index: 7, Offset: 7 * time.Second, Pages: []uint64{0, 1000, 30000, last}}}},
		{"dense", []Epoch{{Index: 0, Pages: seq(0, m.Pages())}}},
		{"max page", []Epoch{{Index: 0, Pages: []uint64{last}}, {Index: 1, Pages: []uint64{last - 1, last}}}},
		{"random", []Epoch{{Index: 0, Pages: randomPages(rng, 5000, m.Pages())}, {Index: 1, Pages: randomPages(rng, 3, m.Pages())}}},
		{"index gaps", []Epoch{{Index: 3, Offset: 3 * time.Second}, {Index: 1 << 30, Offset: 1 << 62, Pages: []uint64{5}}}},
		{"mixed", sampleEpochs(40)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data, _ := encode(t, m, tc.epochs)
			gotMeta, got, damage, err := readAll(data)
			if err != nil {
				t.Fatal(err)
			}
			if len(damage) != 0 {
				t.Fatalf("damage in a good file: %v", damage)
			}
			if !sameMeta(gotMeta, m) {
				t.Fatalf("meta %+v, want %+v", gotMeta, m)
			}
			if !sameEpochs(got, tc.epochs) {
				t.Fatalf("read %d epochs %v, want %d %v", len(got), abbrev(got), len(tc.epochs), abbrev(tc.epochs))
			}
		})
	}
}

// abbrev shows epochs as index:pages.
func abbrev(es []Epoch) string {
	var b strings.Builder
	for _, e := range es {
		fmt.Fprintf(&b, " %d:%d", e.Index, len(e.Pages))
	}
	return b.String()
}

func sameMeta(a, b Meta) bool {
	return a.MemoryBytes == b.MemoryBytes && a.PageSize == b.PageSize && a.Epoch == b.Epoch &&
		a.Hook == b.Hook && a.Source == b.Source && a.Start.Equal(b.Start) &&
		(len(a.Extra) == 0 && len(b.Extra) == 0 || reflect.DeepEqual(a.Extra, b.Extra))
}

func TestMetaRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name string
		meta Meta
	}{
		{"full", testMeta()},
		{"minimal", Meta{MemoryBytes: 4096, PageSize: 4096, Epoch: 1}},
		{"huge pages", Meta{MemoryBytes: 1 << 40, PageSize: 2 << 20, Epoch: 100 * time.Millisecond, Hook: "qemu"}},
		{"before 1970", Meta{MemoryBytes: 8192, PageSize: 4096, Epoch: time.Second, Start: time.Unix(-5, 7)}},
		{"odd extras", Meta{MemoryBytes: 8192, PageSize: 4096, Epoch: time.Second, Extra: map[string]string{"k": "", "ünï": "a=b,c\x00d"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data, _ := encode(t, tc.meta, nil)
			got, _, _, err := readAll(data)
			if err != nil {
				t.Fatal(err)
			}
			if !sameMeta(got, tc.meta) {
				t.Fatalf("meta %+v, want %+v", got, tc.meta)
			}
			if got.Pages() != tc.meta.MemoryBytes/uint64(tc.meta.PageSize) {
				t.Fatalf("Pages() = %d", got.Pages())
			}
		})
	}
}

func TestWriterRejects(t *testing.T) {
	m := testMeta()
	for _, tc := range []struct {
		name   string
		epochs []Epoch
		want   string
	}{
		{"index repeats", []Epoch{{Index: 1}, {Index: 1}}, "does not follow"},
		{"index goes back", []Epoch{{Index: 5}, {Index: 4}}, "does not follow"},
		{"unsorted", []Epoch{{Pages: []uint64{3, 2}}}, "must ascend"},
		{"duplicate", []Epoch{{Pages: []uint64{2, 2}}}, "must ascend"},
		{"beyond memory", []Epoch{{Pages: []uint64{m.Pages()}}}, "beyond"},
		{"negative offset", []Epoch{{Offset: -1}}, "negative offset"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, err := NewWriter(io.Discard, m)
			if err != nil {
				t.Fatal(err)
			}
			var last error
			for _, e := range tc.epochs {
				last = w.Append(e)
			}
			if last == nil || !strings.Contains(last.Error(), tc.want) {
				t.Fatalf("Append error %v, want %q", last, tc.want)
			}
		})
	}
	for _, tc := range []struct {
		name string
		meta Meta
		want string
	}{
		{"page size zero", Meta{MemoryBytes: 4096, Epoch: 1}, "power of two"},
		{"page size not a power of two", Meta{MemoryBytes: 3000, PageSize: 3000, Epoch: 1}, "power of two"},
		{"no memory", Meta{PageSize: 4096, Epoch: 1}, "memory size is zero"},
		{"partial page", Meta{MemoryBytes: 5000, PageSize: 4096, Epoch: 1}, "whole number"},
		{"no epoch", Meta{MemoryBytes: 4096, PageSize: 4096}, "epoch length"},
		{"epoch of a year", Meta{MemoryBytes: 4096, PageSize: 4096, Epoch: 8760 * time.Hour}, "epoch length 8760h0m0s is over the 1h0m0s"},
		{"empty extra key", Meta{MemoryBytes: 4096, PageSize: 4096, Epoch: 1, Extra: map[string]string{"": "x"}}, "key is empty"},
		{"huge metadata", Meta{MemoryBytes: 4096, PageSize: 4096, Epoch: 1, Source: strings.Repeat("x", 2<<20)}, "metadata is"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewWriter(io.Discard, tc.meta)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("NewWriter error %v, want %q", err, tc.want)
			}
		})
	}
}

// countingWriter counts Write calls.
type countingWriter struct {
	bytes.Buffer
	writes int
}

func (c *countingWriter) Write(p []byte) (int, error) {
	c.writes++
	return c.Buffer.Write(p)
}

func TestOneWritePerRecord(t *testing.T) {
	var cw countingWriter
	w, err := NewWriter(&cw, testMeta())
	if err != nil {
		t.Fatal(err)
	}
	if cw.writes != 1 {
		t.Fatalf("header took %d writes", cw.writes)
	}
	for i, e := range sampleEpochs(10) {
		if err := w.Append(e); err != nil {
			t.Fatal(err)
		}
		if cw.writes != i+2 {
			t.Fatalf("after %d epochs, %d writes", i+1, cw.writes)
		}
	}
}

// failingWriter fails after n bytes, writing a part of the record.
type failingWriter struct{ n int }

func (f *failingWriter) Write(p []byte) (int, error) {
	if len(p) <= f.n {
		f.n -= len(p)
		return len(p), nil
	}
	k := f.n
	f.n = 0
	return k, errors.New("disk full")
}

func TestWriteErrorIsSticky(t *testing.T) {
	w, err := NewWriter(&failingWriter{n: 200}, testMeta())
	if err != nil {
		t.Fatal(err)
	}
	var first error
	for _, e := range sampleEpochs(20) {
		if err := w.Append(e); err != nil {
			first = err
			break
		}
	}
	if first == nil || !strings.Contains(first.Error(), "disk full") {
		t.Fatalf("no write error: %v", first)
	}
	if err := w.Append(Epoch{Index: 1000}); err != first {
		t.Fatalf("Append after a write error: %v", err)
	}
	if err := w.Close(); err != first {
		t.Fatalf("Close after a write error: %v", err)
	}
}

func TestCreateReadFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "t.pct")
	m := testMeta()
	w, err := Create(path, m)
	if err != nil {
		t.Fatal(err)
	}
	epochs := sampleEpochs(25)
	for _, e := range epochs {
		if err := w.Append(e); err != nil {
			t.Fatal(err)
		}
		if err := w.Sync(); err != nil {
			t.Fatal(err)
		}
	}
	// A reader sees every epoch flushed so far, before Close.
	_, got, damage, err := ReadFile(path)
	if err != nil || len(damage) != 0 || !sameEpochs(got, epochs) {
		t.Fatalf("reading an open trace: %d epochs, damage %v, err %v", len(got), damage, err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Append(Epoch{Index: 99}); err == nil {
		t.Fatal("Append after Close succeeded")
	}
	gotMeta, got, damage, err := ReadFile(path)
	if err != nil || len(damage) != 0 || !sameEpochs(got, epochs) || !sameMeta(gotMeta, m) {
		t.Fatalf("ReadFile: %d epochs, damage %v, err %v", len(got), damage, err)
	}
	if _, err := Create(filepath.Join(t.TempDir(), "x.pct"), Meta{}); err == nil {
		t.Fatal("Create accepted empty metadata")
	}
	if _, _, _, err := ReadFile(filepath.Join(t.TempDir(), "absent.pct")); err == nil {
		t.Fatal("ReadFile of a missing file succeeded")
	}
}

// TestCreateThroughLink: Create writes the file a symbolic link points to
// and leaves the link a link (profile -o LINK relies on it).
func TestCreateThroughLink(t *testing.T) {
	dir := t.TempDir()
	target, link := filepath.Join(dir, "t.pct"), filepath.Join(dir, "link")
	if err := os.WriteFile(target, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("t.pct", link); err != nil {
		t.Fatal(err)
	}
	w, err := Create(link, testMeta())
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("%s is no longer a symbolic link: %v %v", link, fi.Mode(), err)
	}
	if _, _, _, err := ReadFile(target); err != nil {
		t.Fatalf("the link's target: %v", err)
	}
}

// header builds a header with the given version and raw metadata.
func header(major, minor uint16, meta []byte) []byte {
	h := []byte(Magic)
	h = binary.LittleEndian.AppendUint16(h, major)
	h = binary.LittleEndian.AppendUint16(h, minor)
	h = binary.LittleEndian.AppendUint32(h, uint32(len(meta)))
	h = append(h, meta...)
	return binary.LittleEndian.AppendUint32(h, crc32.Checksum(h, castagnoli))
}

// fields encodes metadata fields given as tag, value pairs.
func fields(kv ...any) []byte {
	var b []byte
	for i := 0; i < len(kv); i += 2 {
		var v []byte
		switch x := kv[i+1].(type) {
		case uint64:
			v = binary.AppendUvarint(nil, x)
		case string:
			v = []byte(x)
		case []byte:
			v = x
		}
		b = binary.AppendUvarint(b, uint64(kv[i].(int)))
		b = binary.AppendUvarint(b, uint64(len(v)))
		b = append(b, v...)
	}
	return b
}

func TestHeaderErrors(t *testing.T) {
	good := fields(tagMemory, uint64(1<<20), tagPageSize, uint64(4096), tagEpoch, uint64(1e9))
	valid, _ := encode(t, testMeta(), nil)
	badCRC := bytes.Clone(valid)
	badCRC[20] ^= 1
	for _, tc := range []struct {
		name    string
		data    []byte
		want    string
		notThis bool
	}{
		{"empty", nil, "not a pagecast trace", true},
		{"csv", []byte("epoch,page\n0,1\n"), "not a pagecast trace", true},
		{"other magic", []byte("PCTRACX\x00\x01\x00\x00\x00\x00\x00\x00\x00"), "not a pagecast trace", true},
		{"magic prefix", []byte("PCTR"), "truncated", false},
		{"magic only", []byte(Magic), "truncated", false},
		{"newer major", header(2, 0, good), "unsupported trace format version 2.0", false},
		{"major zero", header(0, 9, good), "unsupported", false},
		{"metadata too long", append([]byte(Magic), 1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff), "over the", false},
		{"short metadata", header(1, 0, good)[:30], "truncated", false},
		{"bad crc", badCRC, "trace header (bytes 0-", false},
		{"no memory", header(1, 0, fields(tagPageSize, uint64(4096), tagEpoch, uint64(1))), "no memory size", false},
		{"no page size", header(1, 0, fields(tagMemory, uint64(4096), tagEpoch, uint64(1))), "no page size", false},
		{"no epoch", header(1, 0, fields(tagMemory, uint64(4096), tagPageSize, uint64(4096))), "no epoch length", false},
		{"epoch of centuries", header(1, 0, fields(tagMemory, uint64(4096), tagPageSize, uint64(4096), tagEpoch, uint64(math.MaxInt64))), "is over the 1h0m0s a trace's epoch may last", false},
		{"bad page size", header(1, 0, fields(tagMemory, uint64(4096), tagPageSize, uint64(3), tagEpoch, uint64(1))), "power of two", false},
		{"twice", header(1, 0, append(good, fields(tagMemory, uint64(8192))...)), "twice", false},
		{"bad number", header(1, 0, fields(tagMemory, []byte{0x80}, tagPageSize, uint64(4096), tagEpoch, uint64(1))), "bad number", false},
		{"trailing bytes in number", header(1, 0, fields(tagMemory, []byte{1, 1}, tagPageSize, uint64(4096), tagEpoch, uint64(1))), "bad number", false},
		{"field past end", header(1, 0, append(good, 9, 50, 1)), "bad length", false},
		{"bad extra", header(1, 0, append(good, fields(tagExtra, []byte{9, 'a'})...)), "bad key length", false},
		{"extra twice", header(1, 0, append(good, fields(tagExtra, []byte("\x05guestlinux"), tagExtra, []byte("\x05guestpagecast"))...)), `extra field "guest" appears twice`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewReader(bytes.NewReader(tc.data))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("NewReader error %v, want %q", err, tc.want)
			}
			if errors.Is(err, ErrNotTrace) != tc.notThis {
				t.Fatalf("errors.Is(%v, ErrNotTrace) = %v", err, !tc.notThis)
			}
		})
	}
	_, err := NewReader(bytes.NewReader(header(3, 1, good)))
	if !errors.Is(err, ErrVersion) {
		t.Fatalf("newer major: %v, want ErrVersion", err)
	}
}

// TestNewerMinor checks that a newer minor version with fields this reader
// does not know is read, the fields skipped.
func TestNewerMinor(t *testing.T) {
	meta := fields(99, "future", tagMemory, uint64(1<<20), tagPageSize, uint64(4096), tagEpoch, uint64(1e9), 12345, []byte{})
	data := header(1, 7, meta)
	rec, _ := encode(t, Meta{MemoryBytes: 1 << 20, PageSize: 4096, Epoch: time.Second}, []Epoch{{Pages: []uint64{1, 2}}})
	data = append(data, rec[len(header(1, 0, fields(tagMemory, uint64(1<<20), tagPageSize, uint64(4096), tagEpoch, uint64(1e9)))):]...)
	m, epochs, damage, err := readAll(data)
	if err != nil || len(damage) != 0 || len(epochs) != 1 || m.MemoryBytes != 1<<20 {
		t.Fatalf("newer minor: meta %+v, %d epochs, damage %v, err %v", m, len(epochs), damage, err)
	}
}

func TestOpenNotTrace(t *testing.T) {
	r, err := Open("doc.go")
	if err == nil {
		r.Close()
		t.Fatal("Open of a Go file succeeded")
	}
	if !errors.Is(err, ErrNotTrace) || !strings.Contains(err.Error(), "doc.go") {
		t.Fatalf("Open error %v: want ErrNotTrace naming the file", err)
	}
}

func TestSummarize(t *testing.T) {
	epochs := []Epoch{
		{Index: 2, Pages: []uint64{1, 2, 3}},
		{Index: 3},
		{Index: 5, Pages: []uint64{3, 4}},
		{Index: 6, Pages: seq(0, 10)},
	}
	data, _ := encode(t, testMeta(), epochs)
	r, err := NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	s, err := Summarize(r)
	if err != nil {
		t.Fatal(err)
	}
	want := Stats{Epochs: 4, Empty: 1, First: 2, Last: 6, Missing: 1, Pages: 15, Distinct: 10, MinPages: 0, MaxPages: 10, LowPage: 0, HighPage: 9}
	if s != want {
		t.Fatalf("Summarize = %+v, want %+v", s, want)
	}
	if s.MeanPages() != 3.75 {
		t.Fatalf("MeanPages = %v", s.MeanPages())
	}
}

func TestCheckPageSize(t *testing.T) {
	defer AllowAnyPageSize(AllowAnyPageSize(false))
	for _, tc := range []struct {
		size uint64
		any  bool
		want string // in the error; "" for none
	}{
		{4096, false, ""},
		{1 << 21, false, ""},
		{1 << 30, false, ""},
		{0, false, "not a power of two"},
		{3000, true, "not a power of two"},
		{1, false, "page size 1 is outside the 4096 B to 1 GiB hypervisors use"},
		{2048, false, "outside the 4096 B"},
		{1 << 31, false, "outside the 4096 B"},
		{512, true, ""},
		{2048, true, ""},
		{256, true, "page size 256 is outside 512 B to 1 GiB"},
		{1 << 31, true, "outside 512 B"},
	} {
		t.Run(fmt.Sprintf("%d any=%v", tc.size, tc.any), func(t *testing.T) {
			AllowAnyPageSize(tc.any)
			err := CheckPageSize(tc.size)
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("%v, want %q", err, tc.want)
			}
			// A header is held to the same limit.
			_, werr := NewWriter(io.Discard, Meta{MemoryBytes: 1 << 40, PageSize: uint32(tc.size), Epoch: time.Second})
			if (werr == nil) != (err == nil) {
				t.Fatalf("writer: %v; CheckPageSize: %v", werr, err)
			}
		})
	}
}

// TestCreateFailsKeepsPath: a trace that cannot be written (its header
// refused: no space) leaves what was at the path. Through a link to
// /dev/full the link stays (the old code removed the path, which as root
// given /dev/full itself deleted the device).
func TestCreateFailsKeepsPath(t *testing.T) {
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skip("no /dev/full: ", err)
	}
	link := filepath.Join(t.TempDir(), "full.pct")
	if err := os.Symlink("/dev/full", link); err != nil {
		t.Fatal(err)
	}
	if w, err := Create(link, Meta{PageSize: 4096, MemoryBytes: 64 << 20, Epoch: 100 * time.Millisecond}); err == nil {
		w.Close()
		t.Fatal("a trace written to /dev/full: no error")
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("the link to /dev/full: %v, %v; want it kept", fi, err)
	}
	if fi, err := os.Stat("/dev/full"); err != nil || fi.Mode()&os.ModeDevice == 0 {
		t.Errorf("/dev/full: %v, %v", fi, err)
	}
}

// fullFile is a trace file that fills after n more bytes: the write that
// crosses goes in part, as a full disk's does.
type fullFile struct {
	*os.File
	n int
}

func (f *fullFile) Write(p []byte) (int, error) {
	if len(p) <= f.n {
		f.n -= len(p)
		return f.File.Write(p)
	}
	k, _ := f.File.Write(p[:f.n])
	f.n = 0
	return k, errors.New("no space left on device")
}

// TestWriteErrorCutsTornRecord: a file that fills mid-record is cut back
// to the last whole epoch, so that it reads undamaged, and the error says
// how many it keeps (walk 72: a profile's disk filled, and the trace read
// as DAMAGED with a torn record).
func TestWriteErrorCutsTornRecord(t *testing.T) {
	path := filepath.Join(t.TempDir(), "t.pct")
	w, err := Create(path, testMeta())
	if err != nil {
		t.Fatal(err)
	}
	epochs := sampleEpochs(20)
	for _, e := range epochs[:4] {
		if err := w.Append(e); err != nil {
			t.Fatal(err)
		}
	}
	w.w = &fullFile{File: w.file, n: 10}
	err = w.Append(epochs[4])
	if err == nil || !strings.Contains(err.Error(), "no space left on device (the trace keeps the 4 epochs before it)") {
		t.Fatalf("Append on a full disk: %v", err)
	}
	w.Close()
	_, got, damage, err := ReadFile(path)
	if err != nil || len(damage) > 0 || !sameEpochs(got, epochs[:4]) {
		t.Fatalf("read back: %d epochs, damage %v, %v; want the 4 whole", len(got), damage, err)
	}
}

func TestMetaGuest(t *testing.T) {
	for _, tc := range []struct {
		m    Meta
		want string
	}{
		{Meta{Source: "qemu pid 7", Extra: map[string]string{ExtraGuest: GuestPagecast}}, GuestPagecast},
		{Meta{Source: "qemu pid 7"}, ""},
		{Meta{Source: "process pid 7"}, ""},
		{Meta{Source: "pagecast pid 20030"}, GuestPagecast}, // pagecast's monitor, before the key
		{Meta{Source: "pagecast demo"}, GuestPagecast},
		{Meta{Source: "pagecast pid 7 (my own tracer)"}, ""},
		{Meta{Source: "pagecast pid 20030", Extra: map[string]string{ExtraGuest: "linux"}}, "linux"},
	} {
		if got := tc.m.Guest(); got != tc.want {
			t.Errorf("%+v: Guest() = %q, want %q", tc.m, got, tc.want)
		}
	}
}
