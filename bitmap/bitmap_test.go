package bitmap

import (
	"reflect"
	"testing"
)

func TestBitmap(t *testing.T) {
	b := New(200)
	for _, p := range []uint64{0, 1, 2, 63, 64, 65, 130, 199, 200, 5000} {
		b.Set(p)
	}
	if got := b.Count(); got != 8 {
		t.Fatalf("Count = %d, want 8 (pages past the end are ignored)", got)
	}
	if !b.Has(64) || b.Has(3) || b.Has(200) {
		t.Fatal("Has disagrees with Set")
	}
	want := [][2]uint64{{0, 3}, {63, 3}, {130, 1}, {199, 1}}
	if got := b.Runs(); !reflect.DeepEqual(got, want) {
		t.Fatalf("Runs = %v, want %v", got, want)
	}
	o := New(200)
	o.Set(3)
	b.Or(o)
	if got := b.List(); !reflect.DeepEqual(got, []uint64{0, 1, 2, 3, 63, 64, 65, 130, 199}) {
		t.Fatalf("List after Or = %v", got)
	}
	b.Unset(64)
	b.Unset(5000) // past the end: ignored
	if b.Has(64) || !b.Has(63) || !b.Has(65) || b.Count() != 8 {
		t.Fatalf("Unset(64) left %v", b.List())
	}
	b.Clear()
	if b.Count() != 0 {
		t.Fatal("Clear left pages")
	}
}

// TestAny: Any agrees with Has over every range of a sparse set, word
// boundaries and the end included.
func TestAny(t *testing.T) {
	const pages = 200
	b := New(pages)
	for _, g := range []uint64{0, 63, 64, 130, 199} {
		b.Set(g)
	}
	for lo := uint64(0); lo <= pages; lo++ {
		for hi := lo; hi <= pages+3; hi++ {
			want := false
			for g := lo; g < min(hi, pages); g++ {
				want = want || b.Has(g)
			}
			if got := b.Any(lo, hi); got != want {
				t.Fatalf("Any(%d, %d) = %v, want %v", lo, hi, got, want)
			}
		}
	}
}
