package predictor

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/pagecast/pagecast/trace"
)

func TestGroupEpochs(t *testing.T) {
	fine := []trace.Epoch{
		{Index: 0, Pages: []uint64{5, 9}},
		{Index: 1, Pages: []uint64{1, 5}},
		{Index: 3, Pages: []uint64{7}},
		// 4 and 5 lost to damage: epoch 2 is 6 and 7
		{Index: 7, Pages: []uint64{2}},
	}
	coarse, parts := GroupEpochs(fine, 3)
	want := []trace.Epoch{
		{Index: 0, Pages: []uint64{1, 5, 9}},
		{Index: 1, Pages: []uint64{7}},
		{Index: 2, Pages: []uint64{2}},
	}
	if len(coarse) != len(want) || len(parts) != len(want) {
		t.Fatalf("%d epochs, %d parts; want %d", len(coarse), len(parts), len(want))
	}
	for i := range want {
		if coarse[i].Index != want[i].Index || !slices.Equal(coarse[i].Pages, want[i].Pages) {
			t.Errorf("epoch %d: %+v, want %+v", i, coarse[i], want[i])
		}
	}
	if !slices.Equal(parts[0][1], []uint64{1, 5}) || parts[0][2] != nil || !slices.Equal(parts[1][0], []uint64{7}) || !slices.Equal(parts[2][1], []uint64{2}) {
		t.Errorf("parts %v", parts)
	}
	if same, p := GroupEpochs(fine, 1); len(same) != len(fine) || p != nil {
		t.Errorf("k=1 changed the epochs: %v %v", same, p)
	}
}

// partsWorkload is a VM whose pages' next write depends on when in the
// epoch they were written: each epoch, in 4 parts, it writes pages of a
// hot set; a page written in the last part is rewritten in the next epoch
// 85% of the time, one written only earlier 15%. The epochs alone (which
// pages, not when) cannot tell the two apart.
func partsWorkload(epochs int, seed uint64) [][][]uint64 {
	rng := rand.New(rand.NewPCG(seed, 11))
	const pages, hot = 2048, 1024
	late := make([]bool, pages)
	var out [][][]uint64
	for range epochs {
		parts := make([][]uint64, 4)
		next := make([]bool, pages)
		for p := range hot {
			var write bool
			switch dirty := late[p]; {
			case dirty:
				write = rng.Float64() < 0.85
			default:
				write = rng.Float64() < 0.3
			}
			if !write {
				continue
			}
			part := rng.IntN(4)
			parts[part] = append(parts[part], uint64(p))
			next[p] = part == 3
		}
		for j := range parts {
			slices.Sort(parts[j])
		}
		late = next
		out = append(out, parts)
	}
	return out
}

// TestPartsTellWhen: told in which part of each epoch a page was written,
// the model forecasts partsWorkload better than the same model shown the
// epochs whole; shown one part an epoch, it is the model shown the epochs.
func TestPartsTellWhen(t *testing.T) {
	t.Parallel()
	const pages, n = 2048, 120
	work := partsWorkload(n, 1)
	var coarse []trace.Epoch
	for i, ps := range work {
		var u []uint64
		for _, p := range ps {
			u = append(u, p...)
		}
		slices.Sort(u)
		coarse = append(coarse, trace.Epoch{Index: uint64(i), Pages: u})
	}
	// Without the move across the threshold (see Options.Threshold), which on
	// a workload this dense moves most pages, Brier compares the probabilities.
	o := Options{Threshold: -1}
	told, whole, one := NewModel(pages, o), NewModel(pages, o), NewModel(pages, o)
	var brierTold, brierWhole, brierRule float64
	pt, pw, po := make([]float32, pages), make([]float32, pages), make([]float32, pages)
	for i := range work {
		if i >= 40 {
			told.Predict(pt)
			whole.Predict(pw)
			one.Predict(po)
			if !slices.Equal(pw, po) {
				t.Fatalf("epoch %d: a model shown each epoch as one part forecasts apart from one shown it whole", i)
			}
			next := coarse[i].Pages
			for p := range pages {
				_, y := slices.BinarySearch(next, uint64(p))
				o := 0.0
				if y {
					o = 1
				}
				rule := 0.0 // the workload's own rule
				if p < 1024 {
					rule = 0.3
					if _, late := slices.BinarySearch(work[i-1][3], uint64(p)); late {
						rule = 0.85
					}
				}
				brierRule += (rule - o) * (rule - o)
				brierTold += (float64(pt[p]) - o) * (float64(pt[p]) - o)
				brierWhole += (float64(pw[p]) - o) * (float64(pw[p]) - o)
			}
		}
		told.ObserveParts(work[i])
		whole.Observe(coarse[i].Pages)
		one.ObserveParts([][]uint64{coarse[i].Pages})
	}
	// What telling the parts can gain at most is what the rule gains.
	gained := (brierWhole - brierTold) / (brierWhole - brierRule)
	t.Logf("squared error told the parts %.1f, shown the epochs whole %.1f (%.3f of it), the workload's rule %.1f: %.0f%% of what can be gained",
		brierTold, brierWhole, brierTold/brierWhole, brierRule, 100*gained)
	if gained < 0.6 {
		t.Errorf("told the parts, the model gained %.0f%% of what the workload's rule gains over it shown the epochs whole; want 60%% or more", 100*gained)
	}
	if s, w := told.StateBytes(), whole.StateBytes(); s != w+pages/2 {
		t.Errorf("state %d bytes told the parts, %d not: want half a byte a page more", s, w)
	}
}
