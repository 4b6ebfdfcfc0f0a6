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

// GroupEpochs joins every k consecutive epochs of a trace (by index: epoch
// i goes to epoch i/k, as its part i%k) into one, the union of their
// pages, and returns the parts of each joined epoch besides (nil for k <=
// 1, when the epochs are returned as they are). A part the trace lacks
// (lost to damage) is empty.
func GroupEpochs(epochs []trace.Epoch, k int) ([]trace.Epoch, [][][]uint64) {
	if k <= 1 {
		return epochs, nil
	}
	var out []trace.Epoch
	var parts [][][]uint64
	for i := 0; i < len(epochs); {
		idx := epochs[i].Index / uint64(k)
		ps := make([][]uint64, k)
		e := trace.Epoch{Index: idx, Offset: epochs[i].Offset}
		for ; i < len(epochs) && epochs[i].Index/uint64(k) == idx; i++ {
			ps[epochs[i].Index%uint64(k)] = epochs[i].Pages
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
