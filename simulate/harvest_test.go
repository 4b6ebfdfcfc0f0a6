package simulate

import (
	"math/rand/v2"
	"slices"
	"testing"
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
