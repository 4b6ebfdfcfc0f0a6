package predictor

import "github.com/pagecast/pagecast/trace"

// PartsObserver is a Predictor that can also be shown an epoch as its
// parts in time order (see Model.ObserveParts): a trace recorded in epochs
// a fraction of the predictor's says when, within each, a page was
// written.
type PartsObserver interface {
	Predictor
	ObserveParts(parts [][]uint64)
}

var _ PartsObserver = (*Model)(nil)

// GroupEpochs joins every k consecutive epochs of a trace, counted from
// its first (epoch i goes to joined epoch first/k + (i-first)/k, as its
// part (i-first)%k: a profile's epochs start at 1), into one, the union of
// their pages, and returns the parts of each joined epoch besides (nil for
// k <= 1, when the epochs are returned as they are). A part the trace
// lacks (lost to damage) is empty; a last joined epoch that the trace ends
// in the middle of is left out, as it does not cover a whole epoch.
func GroupEpochs(epochs []trace.Epoch, k int) ([]trace.Epoch, [][][]uint64) {
	if k <= 1 || len(epochs) == 0 {
		return epochs, nil
	}
	first, n := epochs[0].Index, uint64(k)
	var out []trace.Epoch
	var parts [][][]uint64
	for i := 0; i < len(epochs); {
		g := (epochs[i].Index - first) / n
		ps := make([][]uint64, k)
		e := trace.Epoch{Index: first/n + g, Offset: epochs[i].Offset}
		last := epochs[i].Index
		for ; i < len(epochs) && (epochs[i].Index-first)/n == g; i++ {
			ps[(epochs[i].Index-first)%n] = epochs[i].Pages
			last = epochs[i].Index
		}
		if i == len(epochs) && (last-first)%n != n-1 {
			break // the trace ends within this one
		}
		e.Pages = Union(ps)
		out = append(out, e)
		parts = append(parts, ps)
	}
	return out, parts
}

// Union returns the pages of an epoch's parts, each ascending: ascending,
// each once (the one part itself, if there is one).
func Union(parts [][]uint64) []uint64 {
	if len(parts) == 1 {
		return parts[0]
	}
	dirty, _ := mergeParts(parts, nil, nil)
	return dirty
}
