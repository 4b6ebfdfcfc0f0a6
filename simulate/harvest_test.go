package simulate

import (
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pagecast/pagecast/migrator"
	"github.com/pagecast/pagecast/trace"
)

// mergeRuns sorts what is made of ascending runs, as a sort would, whatever
// the number of runs and their lengths (empty ones too).
func TestMergeRuns(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for n := range 2000 {
		k := 1 + rng.IntN(6)
		var pages []uint64
		var runs []int
		for range k {
			runs = append(runs, len(pages))
			m := rng.IntN(n%50 + 1)
			var r []uint64
			for range m {
				r = append(r, rng.Uint64N(1000))
			}
			slices.Sort(r)
			pages = append(pages, r...)
		}
		want := slices.Clone(pages)
		slices.Sort(want)
		mergeRuns(pages, runs, nil)
		if !slices.Equal(pages, want) {
			t.Fatalf("k %d: %v want %v", k, pages, want)
		}
	}
}

// Harvests that span two epochs or many give each page written in them
// once, ascending: the union of the epochs' stretches they cover. And a
// trace given pages out of order, or twice, is put in order; one beyond
// the guest is refused.
func TestHarvestAcrossEpochs(t *testing.T) {
	const guestPages = 1 << 12
	rng := rand.New(rand.NewPCG(3, 4))
	var epochs []trace.Epoch
	for i := range 40 {
		var ps []uint64
		for range 300 {
			ps = append(ps, rng.Uint64N(guestPages))
		}
		epochs = append(epochs, trace.Epoch{Index: uint64(i), Pages: ps}) // unsorted, with repeats
	}
	meta := trace.Meta{MemoryBytes: guestPages * 4096, PageSize: 4096, Epoch: time.Second}
	w, err := NewTrace("t", meta, epochs)
	if err != nil {
		t.Fatal(err)
	}
	for i := range uint64(40) {
		ps := w.Dirty(nil, i)
		if !slices.IsSorted(ps) || len(slices.Compact(slices.Clone(ps))) != len(ps) {
			t.Fatalf("epoch %d not ascending, each page once", i)
		}
	}
	clock := migrator.NewVirtualClock(time.Unix(0, 0))
	lister := pageLister(t, w, clock)
	at := 0.0 // epochs harvested up to
	for _, step := range []float64{0.4, 1.3, 0.9, 2.5, 7.25, 1.05, 0.6} {
		clock.Advance(time.Duration(step * float64(time.Second)))
		got, err := lister.HarvestPages()
		if err != nil {
			t.Fatal(err)
		}
		// What was written from at to at+step: each epoch's pages whose
		// instant in it falls within.
		seen := map[uint64]bool{}
		for i := uint64(at); float64(i) < at+step; i++ {
			lo, hi := max(0, at-float64(i)), min(1, at+step-float64(i))
			for _, p := range w.Dirty(nil, i) {
				if f := instant(p, i); lo <= f && f < hi {
					seen[p] = true
				}
			}
		}
		want := slices.Sorted(maps.Keys(seen))
		if !slices.Equal(got, want) {
			t.Fatalf("harvest of epochs %.2f to %.2f: %d pages, want %d (ascending, each once)", at, at+step, len(got), len(want))
		}
		at += step
	}
	epochs[3].Pages = append(epochs[3].Pages, guestPages)
	if _, err := NewTrace("t", meta, epochs); err == nil || !strings.Contains(err.Error(), "epoch 3 writes page 4096 of a 4096-page guest") {
		t.Errorf("a page beyond the guest: %v", err)
	}
}

// pageLister starts the dirty log of a guest running w on clock.
func pageLister(t *testing.T, w Workload, clock *migrator.VirtualClock) migrator.PageLister {
	t.Helper()
	g, err := NewGuest(w, clock, GuestOptions{})
	if err != nil {
		t.Fatal(err)
	}
	log, err := g.StartDirtyLog()
	if err != nil {
		t.Fatal(err)
	}
	return log.(migrator.PageLister)
}
