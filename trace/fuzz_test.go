package trace

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"io"
	"slices"
	"strings"
	"testing"
	"time"
)

// FuzzReader reads arbitrary bytes as a trace. Besides not panicking or
// hanging, the reader must account for every byte after the header:
// walking the file, each stretch is either a reported Damage or exactly
// the encoding of the next epoch returned. Reading one byte at a time must
// give the same result.
func FuzzReader(f *testing.F) {
	small := Meta{MemoryBytes: 1 << 20, PageSize: 4096, Epoch: time.Second, Hook: "h", Source: "s"}
	for _, seed := range []struct {
		meta   Meta
		epochs []Epoch
	}{
		{small, nil},
		{small, []Epoch{{Index: 0}, {Index: 1, Pages: []uint64{0, 1, 2, 255}}, {Index: 3, Offset: 3e9, Pages: []uint64{7}}}},
		{testMeta(), sampleEpochs(6)},
	} {
		data, ends := encode(f, seed.meta, seed.epochs)
		f.Add(data)
		if len(ends) > 2 {
			f.Add(data[:ends[2]-3])                                       // torn record
			f.Add(append(bytes.Clone(data[:ends[1]]), data[ends[2]:]...)) // record missing
			bad := bytes.Clone(data)
			bad[ends[1]+9] ^= 0x20
			f.Add(bad)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := fuzzRead(t, bytes.NewReader(data))
		if err != nil {
			return
		}
		slow, err := fuzzRead(t, oneByteReader{bytes.NewReader(data)})
		if err != nil {
			t.Fatalf("one byte at a time: %v", err)
		}
		if !sameEpochs(got.epochs, slow.epochs) || !slices.Equal(got.damage, slow.damage) {
			t.Fatalf("one byte at a time: %d epochs, damage %v; at once %d, %v", len(slow.epochs), slow.damage, len(got.epochs), got.damage)
		}

		// Every byte after the header is a good record or damage.
		off := got.header
		di, ei := 0, 0
		for off < int64(len(data)) {
			if di < len(got.damage) && got.damage[di].Offset == off {
				d := got.damage[di]
				if d.Length <= 0 || d.Reason == "" {
					t.Fatalf("damage %v", d)
				}
				off += d.Length
				di++
				continue
			}
			if ei == len(got.epochs) {
				t.Fatalf("bytes from %d not accounted for (damage %v)", off, got.damage)
			}
			rec := appendRecord(nil, got.epochs[ei])
			if !bytes.HasPrefix(data[off:], rec) {
				t.Fatalf("epoch %d is not the record at %d", got.epochs[ei].Index, off)
			}
			off += int64(len(rec))
			ei++
		}
		if off != int64(len(data)) || di != len(got.damage) || ei != len(got.epochs) {
			t.Fatalf("walked to %d of %d bytes, %d of %d damages, %d of %d epochs",
				off, len(data), di, len(got.damage), ei, len(got.epochs))
		}
	})
}

// FuzzRecord wraps arbitrary bytes as the body of a record with a good
// checksum, between two good records, so the fuzzer reaches the body
// decoder: the body is either an epoch that encodes back to the same bytes
// or one stretch of damage, and the records around it are read either way.
func FuzzRecord(f *testing.F) {
	m := Meta{MemoryBytes: 1 << 20, PageSize: 4096, Epoch: time.Second}
	before, after := Epoch{Index: 1, Pages: []uint64{3}}, Epoch{Index: 1 << 30, Pages: []uint64{4, 5}}
	for _, e := range []Epoch{{Index: 2}, {Index: 5, Offset: 77, Pages: []uint64{0, 1, 255}}, {Index: 999, Pages: seq(10, 100)}} {
		rec := appendRecord(nil, e)
		f.Add(rec[8 : len(rec)-4])
	}
	head, _ := encode(f, m, []Epoch{before})
	tail := appendRecord(nil, after)
	f.Fuzz(func(t *testing.T, body []byte) {
		if len(body) > maxBody(m) {
			return
		}
		rec := append(recordMarker[:], 0, 0, 0, 0)
		binary.LittleEndian.PutUint32(rec[4:], uint32(len(body)))
		rec = append(rec, body...)
		rec = binary.LittleEndian.AppendUint32(rec, crc32.Checksum(rec, castagnoli))
		data := append(append(bytes.Clone(head), rec...), tail...)
		_, epochs, damage, err := readAll(data)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case len(epochs) == 3 && len(damage) == 0:
			if !bytes.Equal(appendRecord(nil, epochs[1]), rec) || epochs[0].Index != 1 || epochs[2].Index != after.Index {
				t.Fatalf("read %v from body %x", epochs, body)
			}
		case len(epochs) == 2 && len(damage) == 1 && damage[0].Offset != int64(len(head)):
			// A good body whose index is not below the next record's:
			// that one is out of order.
			if !bytes.Equal(appendRecord(nil, epochs[1]), rec) || damage[0].Offset != int64(len(head)+len(rec)) ||
				!strings.Contains(damage[0].Reason, "does not follow") {
				t.Fatalf("epochs %v, damage %v for body %x", epochs, damage, body)
			}
		case len(epochs) == 2 && len(damage) == 1:
			if !sameEpochs(epochs, []Epoch{before, after}) || damage[0].Offset != int64(len(head)) || damage[0].Length != int64(len(rec)) {
				t.Fatalf("epochs %v, damage %v for body %x", epochs, damage, body)
			}
		default:
			t.Fatalf("epochs %v, damage %v for body %x", epochs, damage, body)
		}
	})
}

type fuzzResult struct {
	header int64
	epochs []Epoch
	damage []Damage
}

// fuzzRead reads a trace, checking each epoch as it comes.
func fuzzRead(t *testing.T, src io.Reader) (fuzzResult, error) {
	r, err := NewReader(src)
	if err != nil {
		return fuzzResult{}, err
	}
	res := fuzzResult{header: r.offset()}
	limit := r.Meta().Pages()
	for {
		e, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		if n := len(res.epochs); n > 0 && e.Index <= res.epochs[n-1].Index {
			t.Fatalf("epoch %d after %d", e.Index, res.epochs[n-1].Index)
		}
		for i, p := range e.Pages {
			if p >= limit || i > 0 && p <= e.Pages[i-1] {
				t.Fatalf("epoch %d: bad page %d at %d", e.Index, p, i)
			}
		}
		if e.Offset < 0 {
			t.Fatalf("epoch %d: offset %v", e.Index, e.Offset)
		}
		res.epochs = append(res.epochs, e)
	}
	res.damage = r.Damage()
	return res, nil
}

// FuzzImportCSV imports arbitrary text as CSV. What it accepts must read
// back as a clean trace of consecutive epochs from the first row's, and exporting and
// importing that again must give the same file.
func FuzzImportCSV(f *testing.F) {
	for _, s := range []string{
		"epoch,page\n0,1\n0,2\n3,255\n",
		"0,5\n0,5\n0,4\n1,0\n",
		"\"epoch\",\"page\"\r\n2, 7\r\n",
		"epoch,page\n",
		"epoch,page\n5,1\n4,1\n",
	} {
		f.Add([]byte(s))
		f.Add(gz([]byte(s)))
	}
	m := Meta{MemoryBytes: 1 << 20, PageSize: 4096, Epoch: time.Second}
	f.Fuzz(func(t *testing.T, csv []byte) {
		st, epochs, data, err := importCSV(t, m, csv)
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error on several lines: %q", err)
			}
			return
		}
		var pages int64
		for i, e := range epochs {
			if want := epochs[0].Index + uint64(i); e.Index != want || e.Offset != time.Duration(want)*time.Second {
				t.Fatalf("epoch %d has index %d, offset %v; want index %d", i, e.Index, e.Offset, want)
			}
			pages += int64(len(e.Pages))
		}
		if int64(len(epochs)) != st.Epochs || pages != st.Pages || st.Pages > st.Rows {
			t.Fatalf("stats %+v for %d epochs, %d pages", st, len(epochs), pages)
		}
		_, _, again, err := importCSV(t, m, []byte(exportCSV(t, data)))
		if err != nil {
			t.Fatalf("re-import of the export: %v", err)
		}
		if !bytes.Equal(data, again) {
			t.Fatalf("re-import differs")
		}
	})
}
