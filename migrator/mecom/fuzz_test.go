package mecom

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzDecode feeds Decode arbitrary blobs: it must never panic, hand over
// only whole pages, and fail only with ErrCorrupt. The seeds are valid
// batches — one page of each codec, and a mixed batch — so mutations start
// from every codec's format.
func FuzzDecode(f *testing.F) {
	w := newWorker()
	var mixed [][]byte
	for _, k := range kindClass {
		p := kindPages(k.mix, 1)[0]
		mixed = append(mixed, p)
		for _, c := range []Codec{Raw, Words, S2, Zstd} {
			if blob, sent := w.appendCoded(nil, p, c); sent == c {
				f.Add(blob, uint16(1))
			}
		}
	}
	f.Add(appendHeader(nil, ZeroMarker, 0), uint16(1))
	mem := bytes.Join(mixed, nil)
	e := NewEncoder(1)
	e.SetBandwidth(1e6)
	blob, err := e.Encode(nil, []uint64{0, 1, 2, 3, 2, 1, 0}, mem)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(blob, uint16(7))

	f.Fuzz(func(t *testing.T, blob []byte, n uint16) {
		next := 0
		err := Decode(blob, int(n), func(i int, data []byte) {
			if i != next || len(data) != PageSize {
				t.Fatalf("page %d (want %d) of %d bytes", i, next, len(data))
			}
			next++
		})
		if err != nil && !errors.Is(err, ErrCorrupt) {
			t.Fatalf("error %v does not wrap ErrCorrupt", err)
		}
		if err == nil && next != int(n) {
			t.Fatalf("decoded %d of %d pages without error", next, n)
		}
	})
}

// FuzzRoundTrip codes pages built from arbitrary bytes with every codec
// and checks that each decodes to the page.
func FuzzRoundTrip(f *testing.F) {
	for _, k := range kindClass {
		f.Add(kindPages(k.mix, 1)[0][:64], uint8(0))
	}
	f.Add([]byte{1, 0, 0, 0}, uint8(1))
	f.Add([]byte("the quick brown fox"), uint8(2))
	w := newWorker()
	e := NewEncoder(1)
	f.Fuzz(func(t *testing.T, seed []byte, how uint8) {
		// A page from the seed: repeated over the page, or once, then
		// zero, so both runs and tails get tried.
		page := make([]byte, PageSize)
		if len(seed) > 0 {
			if how&1 == 0 {
				for i := 0; i < PageSize; i += len(seed) {
					copy(page[i:], seed)
				}
			} else {
				copy(page, seed)
			}
		}
		for c := range Codec(numCodecs) {
			if c == ZeroMarker {
				continue
			}
			blob, _ := w.appendCoded(nil, page, c)
			err := Decode(blob, 1, func(_ int, data []byte) {
				if !bytes.Equal(data, page) {
					t.Fatalf("%v: page differs after decoding", c)
				}
			})
			if err != nil {
				t.Fatalf("%v: %v", c, err)
			}
		}
		// And through an encoder, which classifies first.
		blob, err := e.Encode(nil, []uint64{0}, page)
		if err != nil {
			t.Fatal(err)
		}
		if err := Decode(blob, 1, func(_ int, data []byte) {
			if !bytes.Equal(data, page) {
				t.Fatalf("encoder (%v): page differs after decoding", Classify(page))
			}
		}); err != nil {
			t.Fatalf("encoder (%v): %v", Classify(page), err)
		}
	})
}
