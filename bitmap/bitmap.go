package bitmap

import "math/bits"

// Bitmap is a set of guest page frame numbers, one bit per page.
type Bitmap struct {
	words []uint64
	pages uint64
}

// New returns an empty set able to hold pages [0, pages).
func New(pages uint64) *Bitmap {
	return &Bitmap{words: make([]uint64, (pages+63)/64), pages: pages}
}

// Pages is the number of pages the set can hold.
func (b *Bitmap) Pages() uint64 { return b.pages }

// Set adds page gfn; pages beyond the end are ignored.
func (b *Bitmap) Set(gfn uint64) {
	if gfn < b.pages {
		b.words[gfn/64] |= 1 << (gfn % 64)
	}
}

// Unset removes page gfn; pages beyond the end are ignored.
func (b *Bitmap) Unset(gfn uint64) {
	if gfn < b.pages {
		b.words[gfn/64] &^= 1 << (gfn % 64)
	}
}

// Has reports whether page gfn is in the set.
func (b *Bitmap) Has(gfn uint64) bool {
	return gfn < b.pages && b.words[gfn/64]&(1<<(gfn%64)) != 0
}

// Any reports whether any page of [lo, hi) is in the set.
func (b *Bitmap) Any(lo, hi uint64) bool {
	hi = min(hi, b.pages)
	for lo < hi {
		w := b.words[lo/64] >> (lo % 64)
		if n := hi - lo; n < 64-lo%64 {
			w &= 1<<n - 1
		}
		if w != 0 {
			return true
		}
		lo += 64 - lo%64
	}
	return false
}

// Or adds every page of o to b.
func (b *Bitmap) Or(o *Bitmap) {
	for i, w := range o.words {
		if i < len(b.words) {
			b.words[i] |= w
		}
	}
}

// AndNot removes every page of o from b.
func (b *Bitmap) AndNot(o *Bitmap) {
	for i, w := range o.words {
		if i < len(b.words) {
			b.words[i] &^= w
		}
	}
}

// Clear empties the set.
func (b *Bitmap) Clear() { clear(b.words) }

// Count is the number of pages in the set.
func (b *Bitmap) Count() uint64 {
	var n int
	for _, w := range b.words {
		n += bits.OnesCount64(w)
	}
	return uint64(n)
}

// ForEach calls fn for every page in the set, in ascending order.
func (b *Bitmap) ForEach(fn func(gfn uint64)) {
	for i, w := range b.words {
		for w != 0 {
			t := bits.TrailingZeros64(w)
			fn(uint64(i)*64 + uint64(t))
			w &= w - 1
		}
	}
}

// List returns the pages in the set in ascending order.
func (b *Bitmap) List() []uint64 {
	out := make([]uint64, 0, b.Count())
	b.ForEach(func(gfn uint64) { out = append(out, gfn) })
	return out
}

// Words exposes the backing words (64 pages each, page 0 in bit 0 of word 0),
// the layout KVM's dirty bitmap uses.
func (b *Bitmap) Words() []uint64 { return b.words }

// Runs returns the set as runs of consecutive pages, each [first, count],
// in ascending order.
func (b *Bitmap) Runs() [][2]uint64 {
	var runs [][2]uint64
	b.ForEach(func(gfn uint64) {
		if n := len(runs); n > 0 && runs[n-1][0]+runs[n-1][1] == gfn {
			runs[n-1][1]++
			return
		}
		runs = append(runs, [2]uint64{gfn, 1})
	})
	return runs
}
