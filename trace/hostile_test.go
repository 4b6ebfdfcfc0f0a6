package trace

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"flag"
	"fmt"
	"hash/crc32"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// Hostile inputs (issue 16): small files that claim huge things. The small
// ones are committed in ../testdata/hostile; the large ones (megabytes) are
// built by the tests, and written by
//
//	go test ./trace -run TestHostileFiles -hostile.write DIR
//
// for scripts/hostile.sh.
var hostileWrite = flag.String("hostile.write", "", "write the hostile inputs, small and large, to this directory and stop")

const hostileDir = "../testdata/hostile"

// rawTrace builds a trace file without the writer's checks: a header for m
// (which need not be valid) and records for epochs.
func rawTrace(m Meta, epochs []Epoch) []byte {
	h, err := encodeHeader(m)
	if err != nil {
		panic(err)
	}
	for _, e := range epochs {
		h = appendRecord(h, e)
	}
	return h
}

// fewEpochs are n epochs of a handful of pages spread over a huge memory.
func fewEpochs(n int, stride uint64) []Epoch {
	var es []Epoch
	for i := range n {
		pages := []uint64{1, 2, stride, stride + 1}
		if i%3 == 0 {
			pages = append(pages, 7*stride)
		}
		es = append(es, Epoch{Index: uint64(i), Offset: time.Duration(i) * time.Second, Pages: pages})
	}
	return es
}

// gapEpochs are 40 epochs, the 20th after an index gap of gap.
func gapEpochs(gap uint64) []Epoch {
	var es []Epoch
	idx := uint64(0)
	for i := range 40 {
		if i == 20 {
			idx += gap
		}
		es = append(es, Epoch{Index: idx, Pages: []uint64{uint64(i % 5), 10 + uint64(i%3)}})
		idx++
	}
	return es
}

// smallHostile are the committed inputs: name to content.
func smallHostile() map[string][]byte {
	sec := time.Second
	page1 := func(mem uint64) []byte {
		return rawTrace(Meta{MemoryBytes: mem, PageSize: 1, Epoch: sec}, fewEpochs(40, 1<<20))
	}
	beyond := rawTrace(Meta{MemoryBytes: 1 << 30, PageSize: 4096, Epoch: sec}, []Epoch{
		{Index: 0, Pages: []uint64{1}}, {Index: 1, Pages: []uint64{5, 300000}}, {Index: 2, Pages: []uint64{2}}})
	var csvGaps strings.Builder
	csvGaps.WriteString("epoch,page\n")
	for i := range 22 {
		fmt.Fprintf(&csvGaps, "%d,%d\n", uint64(i)<<20, i)
	}
	return map[string][]byte{
		"header-2p50-page1.pct":  page1(1 << 50),
		"header-64mib-page1.pct": page1(64 << 20),
		"header-16eib.pct":       rawTrace(Meta{MemoryBytes: math.MaxUint64 &^ 4095, PageSize: 4096, Epoch: sec}, fewEpochs(40, 1<<20)),
		"header-1tib.pct":        rawTrace(Meta{MemoryBytes: 1 << 40, PageSize: 4096, Epoch: sec}, fewEpochs(40, 1<<24)),
		"index-gap-2p63.pct":     rawTrace(Meta{MemoryBytes: 1 << 30, PageSize: 4096, Epoch: sec}, gapEpochs(1<<63)),
		"index-gap-2p32.pct":     rawTrace(Meta{MemoryBytes: 1 << 30, PageSize: 4096, Epoch: sec}, gapEpochs(1<<32)),
		"index-gap-1e8.pct":      rawTrace(Meta{MemoryBytes: 1 << 30, PageSize: 4096, Epoch: sec}, gapEpochs(1e8)),
		"page-beyond.pct":        beyond,
		"csv-gaps.csv":           []byte(csvGaps.String()),
		"csv-bom.csv":            []byte("\ufeffepoch,page\n0,1\n1,2\n2,1\n"),
	}
}

// falseMarkers is a trace of a 1 TiB guest whose records are followed by
// size bytes of junk with a false record marker every 16 bytes, each
// claiming a body that runs to the end of the junk: each false claim is
// checked, and without care each check costs the rest of the file.
func falseMarkers(size int) []byte {
	m := Meta{MemoryBytes: 1 << 40, PageSize: 4096, Epoch: time.Second}
	file := rawTrace(m, []Epoch{{Index: 0, Pages: []uint64{1}}})
	start := len(file)
	for len(file)-start+16 <= size {
		body := size - (len(file) - start) - 12
		file = append(file, recordMarker[:]...)
		file = binary.LittleEndian.AppendUint32(file, uint32(body))
		file = append(file, 1, 2, 3, 4, 5, 6, 7, 8)
	}
	return appendRecord(file, Epoch{Index: 1, Pages: []uint64{2}})
}

// sparsePages is a trace of n pages 4096 apart, 1000 to an epoch, in a
// 4 PiB guest.
func sparsePages(n int) []byte {
	m := Meta{MemoryBytes: MaxMemoryBytes, PageSize: 4096, Epoch: time.Second}
	var es []Epoch
	for i := 0; i < n; i += 1000 {
		e := Epoch{Index: uint64(len(es))}
		for p := i; p < min(n, i+1000); p++ {
			e.Pages = append(e.Pages, uint64(p)*4096)
		}
		es = append(es, e)
	}
	return rawTrace(m, es)
}

func TestHostileFiles(t *testing.T) {
	small := smallHostile()
	if dir := *hostileWrite; dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		small["damage-false-markers-16mib.pct"] = falseMarkers(16 << 20)
		small["sparse-5m-pages.pct"] = sparsePages(5e6)
		for name, b := range small {
			if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return
	}
	for name, want := range small {
		got, err := os.ReadFile(filepath.Join(hostileDir, name))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s differs from what the test builds (err %v): go test ./trace -run TestHostileFiles -hostile.write %s", name, err, hostileDir)
		}
	}
}

// TestHostileHeaders: headers claiming impossible geometry are one-line
// errors; a real 1 TiB guest's header is read.
func TestHostileHeaders(t *testing.T) {
	for _, tc := range []struct{ name, want string }{
		{"header-2p50-page1.pct", "page size 1 is outside"},
		{"header-64mib-page1.pct", "page size 1 is outside"},
		{"header-16eib.pct", "over the 4 PiB"},
		{"header-1tib.pct", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, epochs, damage, err := ReadFile(filepath.Join(hostileDir, tc.name))
			if tc.want == "" {
				if err != nil || len(epochs) != 40 || len(damage) != 0 {
					t.Fatalf("%d epochs, damage %v, err %v", len(epochs), damage, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("err %v, want one line with %q", err, tc.want)
			}
		})
	}
}

// TestHostileIndices: an epoch index beyond what a time.Duration spans is
// damage; the others are read, and Summarize does not overflow.
func TestHostileIndices(t *testing.T) {
	for _, tc := range []struct {
		name    string
		epochs  int
		missing uint64
	}{
		{"index-gap-2p63.pct", 20, 0},
		{"index-gap-2p32.pct", 40, 1 << 32},
		{"index-gap-1e8.pct", 40, 1e8},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := Open(filepath.Join(hostileDir, tc.name))
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			s, err := Summarize(r)
			if err != nil || s.Epochs != int64(tc.epochs) || s.Missing != tc.missing {
				t.Fatalf("%+v, err %v; want %d epochs, %d missing", s, err, tc.epochs, tc.missing)
			}
			if tc.epochs == 20 && (len(r.Damage()) != 1 || !strings.Contains(r.Damage()[0].Reason, "292 years")) {
				t.Fatalf("damage %v", r.Damage())
			}
		})
	}
	// Every index from 0 to the largest: Missing must not wrap.
	m := Meta{MemoryBytes: 1 << 20, PageSize: 4096, Epoch: 1}
	r, err := NewReader(bytes.NewReader(rawTrace(m, []Epoch{{Index: 0}, {Index: math.MaxInt64}})))
	if err != nil {
		t.Fatal(err)
	}
	if s, err := Summarize(r); err != nil || s.Missing != math.MaxInt64-1 {
		t.Fatalf("%+v, %v", s, err)
	}
}

// TestDamageRecoveryLinear: junk full of false record markers costs
// checksum work in proportion to its size, not its square.
func TestDamageRecoveryLinear(t *testing.T) {
	for _, size := range []int{64 << 10, 1 << 20, 4 << 20} {
		file := falseMarkers(size)
		r, err := NewReader(bytes.NewReader(file))
		if err != nil {
			t.Fatal(err)
		}
		epochs, err := r.ReadAll()
		if err != nil || len(epochs) != 2 || epochs[1].Index != 1 || len(r.Damage()) != 1 {
			t.Fatalf("%d bytes: %d epochs, damage %v, err %v", size, len(epochs), r.Damage(), err)
		}
		if r.summed > 64*int64(len(file)) {
			t.Fatalf("%d bytes of junk: checksummed %d bytes, %d times the file", size, r.summed, r.summed/int64(len(file)))
		}
		t.Logf("%d bytes: checksummed %.1f× the file", len(file), float64(r.summed)/float64(len(file)))
	}
}

// TestCRCGrid checks the grid's CRCs against direct ones.
func TestCRCGrid(t *testing.T) {
	data := make([]byte, 5000)
	for i := range data {
		data[i] = byte(i * 7 % 251)
	}
	r := &Reader{buf: data, base: 100}
	for _, span := range [][2]int{{0, 5000}, {1, 4999}, {3, 600}, {255, 257 + 512}, {256, 768}, {10, 522}, {4000, 4600}, {0, 513}} {
		want := crc32.Checksum(data[span[0]:span[1]], castagnoli)
		if got := r.grid.checksum(r, span[0], span[1]); got != want {
			t.Fatalf("bytes %d-%d: %08x, want %08x", span[0], span[1], got, want)
		}
	}
}

// TestSparseSummary: Summarize's memory follows the distinct pages, not
// the blocks of memory they fall in.
func TestSparseSummary(t *testing.T) {
	const n = 500000
	file := sparsePages(n)
	r, err := NewReader(bytes.NewReader(file))
	if err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	s, err := Summarize(r)
	runtime.ReadMemStats(&after)
	if err != nil || s.Distinct != n {
		t.Fatalf("%+v, %v", s, err)
	}
	// Pages are read 1000 to an epoch (8 KB each); the set is 8 bytes a
	// page and its batch at most 4 (TestPageSetMemory).
	alloc := after.TotalAlloc - before.TotalAlloc
	if alloc > 22*n {
		t.Fatalf("summarising %d sparse pages (%d-byte file) allocated %d bytes, %d a page", n, len(file), alloc, alloc/n)
	}
	t.Logf("summarising %d sparse pages allocated %.1f bytes a page", n, float64(alloc)/n)
	// A dense working set costs a bit a page.
	var set pageSet
	for range 3 {
		for p := range uint64(1 << 20) {
			set.add(p)
		}
	}
	if set.len() != 1<<20 || set.sparse != 0 || len(set.blocks) != 256 {
		t.Fatalf("dense set: %d pages, %d in the list, %d blocks", set.len(), set.sparse, len(set.blocks))
	}
}

// TestDamageNamesPage: a page beyond memory is named by its number.
func TestDamageNamesPage(t *testing.T) {
	_, epochs, damage, err := ReadFile(filepath.Join(hostileDir, "page-beyond.pct"))
	if err != nil || len(epochs) != 2 || len(damage) != 1 ||
		!strings.Contains(damage[0].Reason, "page 300000 (entry 1) is beyond the trace's 262144 pages") {
		t.Fatalf("%d epochs, damage %v, err %v", len(epochs), damage, err)
	}
}

// TestHostileCSV: a byte-order mark is read past; gaps are bounded by the
// input's size.
func TestHostileCSV(t *testing.T) {
	csv, err := os.ReadFile(filepath.Join(hostileDir, "csv-bom.csv"))
	if err != nil {
		t.Fatal(err)
	}
	if st, _, _, err := importCSV(t, importMeta(), csv); err != nil || st.Rows != 3 {
		t.Fatalf("with a byte-order mark: %+v, %v", st, err)
	}
	csv, err = os.ReadFile(filepath.Join(hostileDir, "csv-gaps.csv"))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	w, err := NewWriter(&out, importMeta())
	if err != nil {
		t.Fatal(err)
	}
	_, err = ImportCSV(bytes.NewReader(csv), w)
	if err == nil || !strings.Contains(err.Error(), "csv line 3: epoch 1048576 leaves a gap of 1048575 empty epochs") {
		t.Fatalf("err %v", err)
	}
	if out.Len() > 1<<20 {
		t.Fatalf("wrote %d bytes for a %d-byte CSV", out.Len(), len(csv))
	}

	// Blank lines earn no gap, nor does what a gzip stream inflates to:
	// 20 KB of gzip, 20 MiB of newlines and then a jump past them, made
	// 21 million empty epochs, a 516 MB trace.
	var bomb bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&bomb, gzip.BestCompression)
	zw.Write([]byte("epoch,page\n0,1\n"))
	zw.Write(bytes.Repeat([]byte("\n"), 20<<20))
	fmt.Fprintf(zw, "%d,2\n", 20<<20)
	zw.Close()
	for name, data := range map[string][]byte{"gzip": bomb.Bytes(), "blank lines": []byte("0,1\n" + strings.Repeat("\n", 1<<20) + "1048576,2\n")} {
		out.Reset()
		w, err := NewWriter(&out, importMeta())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ImportCSV(bytes.NewReader(data), w); err == nil || !strings.Contains(err.Error(), "leaves a gap of") {
			t.Errorf("%s (%d bytes): %v, want the gap refused", name, len(data), err)
		}
		if out.Len() > 1<<20 {
			t.Errorf("%s: wrote %d bytes for a %d-byte CSV", name, out.Len(), len(data))
		}
	}
}
