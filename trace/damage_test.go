package trace

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestTruncation cuts a trace at every byte after the header: the reader
// must return exactly the epochs whose records are whole, report damage
// when the cut is inside a record, and never fail.
func TestTruncation(t *testing.T) {
	epochs := sampleEpochs(24)
	data, ends := encode(t, testMeta(), epochs)
	for cut := ends[0]; cut <= int64(len(data)); cut++ {
		_, got, damage, err := readAll(data[:cut])
		if err != nil {
			t.Fatalf("cut at %d: %v", cut, err)
		}
		whole := 0 // records wholly before the cut
		for whole+1 < len(ends) && ends[whole+1] <= cut {
			whole++
		}
		if !sameEpochs(got, epochs[:whole]) {
			t.Fatalf("cut at %d: read %d epochs, want the %d whole ones", cut, len(got), whole)
		}
		if cut == ends[whole] {
			if len(damage) != 0 {
				t.Fatalf("cut at record boundary %d: damage %v", cut, damage)
			}
			continue
		}
		want := Damage{Offset: ends[whole], Length: cut - ends[whole]}
		if len(damage) != 1 || damage[0].Offset != want.Offset || damage[0].Length != want.Length {
			t.Fatalf("cut at %d: damage %v, want one at %d, %d bytes", cut, damage, want.Offset, want.Length)
		}
		d := damage[0]
		if d.HasNext || d.HasPrev != (whole > 0) || whole > 0 && d.Prev != epochs[whole-1].Index {
			t.Fatalf("cut at %d: damage between %d (%v) and %d (%v), want after the last whole epoch and before none", cut, d.Prev, d.HasPrev, d.Next, d.HasNext)
		}
	}
}

// TestCorruption flips each byte of a record in the middle of a trace: the
// other epochs must all be read and the damaged record reported where it is.
func TestCorruption(t *testing.T) {
	epochs := sampleEpochs(12)
	data, ends := encode(t, testMeta(), epochs)
	for _, k := range []int{5, 6, 7} { // a sweep, a random set, the last page
		start, end := ends[k], ends[k+1]
		want := append(append([]Epoch{}, epochs[:k]...), epochs[k+1:]...)
		for at := start; at < end; at++ {
			for _, flip := range []byte{0x01, 0x80, 0xff} {
				bad := bytes.Clone(data)
				bad[at] ^= flip
				_, got, damage, err := readAll(bad)
				if err != nil {
					t.Fatalf("record %d, byte %d ^ %#x: %v", k, at-start, flip, err)
				}
				if !sameEpochs(got, want) {
					t.Fatalf("record %d, byte %d ^ %#x: read%s, want%s", k, at-start, flip, abbrev(got), abbrev(want))
				}
				if len(damage) != 1 || damage[0].Offset != start || damage[0].Length != end-start {
					t.Fatalf("record %d, byte %d ^ %#x: damage %v, want one at %d, %d bytes", k, at-start, flip, damage, start, end-start)
				}
				if d := damage[0]; !d.HasPrev || !d.HasNext || d.Prev != epochs[k-1].Index || d.Next != epochs[k+1].Index {
					t.Fatalf("record %d, byte %d ^ %#x: damage between epochs %d (%v) and %d (%v), want %d and %d",
						k, at-start, flip, d.Prev, d.HasPrev, d.Next, d.HasNext, epochs[k-1].Index, epochs[k+1].Index)
				}
			}
		}
	}
}

// TestDamageFirstRecord: a stretch before every intact record has no
// epoch before it, and names the first intact one after it (walk 157:
// simulate said "no whole epoch" was lost where the first was).
func TestDamageFirstRecord(t *testing.T) {
	epochs := sampleEpochs(6)
	data, ends := encode(t, testMeta(), epochs)
	data[ends[0]+10] ^= 0xff
	_, got, damage, err := readAll(data)
	if err != nil {
		t.Fatal(err)
	}
	if !sameEpochs(got, epochs[1:]) {
		t.Fatalf("read%s, want%s", abbrev(got), abbrev(epochs[1:]))
	}
	if len(damage) != 1 || damage[0].HasPrev || !damage[0].HasNext || damage[0].Next != epochs[1].Index {
		t.Fatalf("damage %+v, want one before epoch %d and after none", damage, epochs[1].Index)
	}
}

// TestCorruptionReasons checks that each kind of bad record is recognised
// and named.
func TestCorruptionReasons(t *testing.T) {
	m := testMeta()
	good := []Epoch{{Index: 0, Pages: []uint64{1}}, {Index: 1, Pages: []uint64{2, 3}}, {Index: 9, Pages: []uint64{4}}}
	data, ends := encode(t, m, good)
	// record builds a record with a good CRC around body.
	record := func(body []byte) []byte {
		b := append(recordMarker[:], 0, 0, 0, 0)
		binary.LittleEndian.PutUint32(b[4:], uint32(len(body)))
		b = append(b, body...)
		return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
	}
	body := func(vs ...uint64) []byte {
		var b []byte
		for _, v := range vs {
			b = binary.AppendUvarint(b, v)
		}
		return b
	}
	for _, tc := range []struct {
		name string
		bad  []byte
		want string
	}{
		{"junk", []byte("hello, world"), "no record marker"},
		{"pages not increasing", record(body(2, 0, 2, 5, 0)), "not increasing"},
		{"page beyond memory", record(body(2, 0, 1, m.Pages())), "beyond"},
		{"delta beyond memory", record(body(2, 0, 2, 5, m.Pages()-5)), "beyond"},
		{"huge delta", record(body(2, 0, 2, 5, 1<<63)), "beyond"},
		{"count too large", record(body(2, 0, 5, 1, 1)), "page count"},
		{"count beyond memory", record(append(body(2, 0, m.Pages()+1), make([]byte, m.Pages()+1)...)), "page count"},
		{"stray bytes", record(body(2, 0, 1, 5, 6)), "stray"},
		{"stray bytes in empty", record(body(2, 0, 0, 5)), "stray"},
		{"index goes back", record(body(1, 0, 0)), "does not follow"},
		{"offset too large", record(body(2, 1<<63, 0)), "offset"},
		{"bad varint", record([]byte{0x80, 0x80, 0x80}), "bad record header"},
		{"bad page varint", record(append(body(2, 0, 1), 0x80)), "bad page number"},
		{"overlong index", record([]byte{0x82, 0x00, 0, 0}), "bad record header"},
		{"overlong page", record(append(body(2, 0, 1), 0x85, 0x00)), "bad page number"},
		{"length too small", append(recordMarker[:], 2, 0, 0, 0, 0, 0, 0, 0, 0, 0), "impossible"},
		{"length too large", append(recordMarker[:], 0xff, 0xff, 0xff, 0x7f), "impossible"},
		{"bad crc", func() []byte { b := record(body(2, 0, 0)); b[len(b)-1] ^= 1; return b }(), "checksum"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := append(bytes.Clone(data[:ends[2]]), tc.bad...)
			file = append(file, data[ends[2]:]...)
			_, got, damage, err := readAll(file)
			if err != nil {
				t.Fatal(err)
			}
			if !sameEpochs(got, good) {
				t.Fatalf("read%s, want%s", abbrev(got), abbrev(good))
			}
			if len(damage) != 1 || damage[0].Offset != ends[2] || damage[0].Length != int64(len(tc.bad)) ||
				!strings.Contains(damage[0].Reason, tc.want) {
				t.Fatalf("damage %v, want one at %d, %d bytes, reason %q", damage, ends[2], len(tc.bad), tc.want)
			}
		})
	}
}

// TestHostileLengths checks that length fields claiming far more than the
// file holds cost neither memory nor the records after them.
func TestHostileLengths(t *testing.T) {
	for _, tc := range []struct {
		name string
		meta Meta
	}{
		{"256 MiB guest", testMeta()},
		// 2^40 pages: the body bound is 2 GiB.
		{"4 PiB guest", Meta{MemoryBytes: MaxMemoryBytes, PageSize: 4096, Epoch: time.Second}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			good := []Epoch{{Index: 0, Pages: []uint64{1}}, {Index: 1, Pages: []uint64{2}}}
			data, ends := encode(t, tc.meta, good)
			var file []byte
			file = append(file, data[:ends[1]]...)
			for _, n := range []uint32{0xffffffff, 0x7fffffff, 1 << 30, 1 << 24, 100000} {
				file = append(file, recordMarker[:]...)
				file = binary.LittleEndian.AppendUint32(file, n)
				file = append(file, 1, 2, 3)
			}
			file = append(file, data[ends[1]:]...)
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			_, got, damage, err := readAll(file)
			runtime.ReadMemStats(&after)
			if err != nil {
				t.Fatal(err)
			}
			if !sameEpochs(got, good) {
				t.Fatalf("read%s, want%s", abbrev(got), abbrev(good))
			}
			if len(damage) != 1 || damage[0].Offset != ends[1] {
				t.Fatalf("damage %v, want one at %d", damage, ends[1])
			}
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 4<<20 {
				t.Fatalf("reading a %d-byte file allocated %d bytes", len(file), alloc)
			}
		})
	}
}

// TestJunk puts random bytes after the header, and between records.
func TestJunk(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	epochs := sampleEpochs(8)
	data, ends := encode(t, testMeta(), epochs)
	for _, size := range []int{1, 3, 4, 7, 8, 100, 5000, 200000} {
		junk := make([]byte, size)
		for i := range junk {
			junk[i] = byte(rng.Uint32())
		}
		// Junk alone after the header.
		_, got, damage, err := readAll(append(bytes.Clone(data[:ends[0]]), junk...))
		if err != nil || len(got) != 0 || len(damage) != 1 || damage[0].Offset != ends[0] || damage[0].Length != int64(size) {
			t.Fatalf("%d junk bytes: %d epochs, damage %v, err %v", size, len(got), damage, err)
		}
		// Junk, with a false marker in it, between records 3 and 4.
		copy(junk[size/2:], recordMarker[:])
		file := append(bytes.Clone(data[:ends[4]]), junk...)
		file = append(file, data[ends[4]:]...)
		_, got, damage, err = readAll(file)
		if err != nil || !sameEpochs(got, epochs) || len(damage) != 1 || damage[0].Offset != ends[4] || damage[0].Length != int64(size) {
			t.Fatalf("%d junk bytes between records: %d epochs, damage %v, err %v", size, len(got), damage, err)
		}
	}
	// Zeros, as a crash can leave at the end of a file.
	_, got, damage, err := readAll(append(bytes.Clone(data), make([]byte, 9000)...))
	if err != nil || !sameEpochs(got, epochs) || len(damage) != 1 || damage[0].Length != 9000 {
		t.Fatalf("zero tail: %d epochs, damage %v, err %v", len(got), damage, err)
	}
}

// TestTwoDamages checks that separate damaged stretches are reported
// separately, in order.
func TestTwoDamages(t *testing.T) {
	epochs := sampleEpochs(10)
	data, ends := encode(t, testMeta(), epochs)
	bad := bytes.Clone(data)
	bad[ends[2]+9] ^= 0x40
	bad[ends[7]+10] ^= 0x40
	_, got, damage, err := readAll(bad)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 8 || len(damage) != 2 || damage[0].Offset != ends[2] || damage[1].Offset != ends[7] {
		t.Fatalf("%d epochs, damage %v", len(got), damage)
	}
}

// TestCopiedAgain: a trace followed by a copy of itself reads as the trace,
// and the damage says that intact records followed whose epochs do not,
// not only the first bytes' "no record marker" (walk 107).
func TestCopiedAgain(t *testing.T) {
	epochs := sampleEpochs(10)
	data, _ := encode(t, testMeta(), epochs)
	_, got, damage, err := readAll(append(bytes.Clone(data), data...))
	if err != nil {
		t.Fatal(err)
	}
	if !sameEpochs(got, epochs) || len(damage) != 1 || !strings.HasPrefix(damage[0].Reason, "no record marker; then 10 intact records whose epochs do not follow those before") {
		t.Fatalf("%d epochs, damage %v", len(got), damage)
	}
}

// oneByteReader hands out one byte per Read, to exercise refilling.
type oneByteReader struct{ r io.Reader }

func (o oneByteReader) Read(p []byte) (int, error) { return o.r.Read(p[:min(len(p), 1)]) }

func TestSlowSource(t *testing.T) {
	epochs := sampleEpochs(30)
	data, ends := encode(t, testMeta(), epochs)
	bad := bytes.Clone(data)
	bad[ends[10]+12] ^= 0xff
	r, err := NewReader(oneByteReader{bytes.NewReader(bad)})
	if err != nil {
		t.Fatal(err)
	}
	got, err := r.ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	want := append(append([]Epoch{}, epochs[:10]...), epochs[11:]...)
	if !sameEpochs(got, want) || len(r.Damage()) != 1 || r.Damage()[0].Offset != ends[10] {
		t.Fatalf("%d epochs, damage %v", len(got), r.Damage())
	}
}

// errReader fails after its data.
type errReader struct{ data []byte }

func (e *errReader) Read(p []byte) (int, error) {
	if len(e.data) == 0 {
		return 0, io.ErrUnexpectedEOF
	}
	n := copy(p, e.data)
	e.data = e.data[n:]
	return n, nil
}

func TestReadError(t *testing.T) {
	data, _ := encode(t, testMeta(), sampleEpochs(3))
	r, err := NewReader(&errReader{data})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := r.Next(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.Next(); err == nil || err == io.EOF || !strings.Contains(err.Error(), "read trace") {
		t.Fatalf("Next after a read error: %v", err)
	}
}
