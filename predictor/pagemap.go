package predictor

import (
	"slices"
	"sort"

	"github.com/pagecast/pagecast/trace"
)

// The predictors keep state for every page, so a trace of a huge guest
// (a header may claim 1 TiB, or 4 PiB) would cost memory and time in
// proportion to the memory size, not to the pages the trace holds. A
// PageMap puts the pages a trace dirties, with their neighbours, on a
// dense range instead; one more page, Far, stands for all the others.

const (
	// DensePages is the page count up to which a trace is predicted
	// over all its pages (a 1 GiB guest of 4 KiB pages: 4 MiB of model
	// state). Beyond, a PageMap, which costs accuracy (see PageMap).
	DensePages = 1 << 18
	// mapPad is how many pages on each side of a dirtied page a PageMap
	// keeps: twice the model's neighbourhood, so every page whose
	// neighbours were ever dirtied sees all of its neighbours.
	mapPad = 2 * DefaultWindow
)

// PageMap maps a guest's pages onto a dense range: runs of the guest's
// pages, each dirtied page with mapPad pages either side, one after
// another, then, from the next multiple of 512 pages, a block of
// 2·mapPad+1 pages whose middle one, Far, stands for every page outside
// the runs (never dirtied, nor any neighbour of it, so all such pages get
// the same forecast). The model's 2 MiB regions are of this dense range:
// with a map they group runs, not guest memory. A map is planned from the
// whole trace, so the never-written pages the model keeps are mostly ones
// that are written later, or near such: it learns their rate and gives it
// to Far, whose pages are never written (on the node trace, a 512 MiB
// guest, Far got 0.14 within 8 epochs and raised the model's Brier score
// by a third, which is why guests up to DensePages are not mapped).
type PageMap struct {
	// Total is the guest's page count.
	Total uint64
	// Far is the dense index of the page that stands for the pages
	// outside the runs.
	Far     uint64
	starts  []uint64 // guest page of each run's first page
	at      []uint64 // dense index of each run's first page
	mapped  uint64   // guest pages in runs; dense indices below it are theirs
	dirtied uint64   // guest pages the trace dirtied, all in runs
}

// Len returns the number of dense pages, Far's block included.
func (m *PageMap) Len() uint64 { return m.farBlock() + 2*mapPad + 1 }

// farBlock is the dense index of Far's block: the first 2 MiB region
// boundary (of the model's regions) past the frontier's reach beyond the
// runs, so that the model sees Far in a region of its own, never dirtied,
// and far from any fresh write, as most pages outside the runs are.
// (Right after the runs, Far took the frontier's rate of the pages just
// past a program's newest memory, 73-95% on real programs, for every
// page it stands for.)
func (m *PageMap) farBlock() uint64 {
	const region = 1 << regionShift
	return (m.mapped + frontReach + region - 1) / region * region
}

// Mapped returns how many guest pages the runs hold: the Dirtied ones and
// their neighbours. The other Total-Mapped are all represented by Far; the
// dense pages from Mapped to Len, Far's among them, are no guest page's.
func (m *PageMap) Mapped() uint64 { return m.mapped }

// Dirtied returns how many guest pages the trace the map was planned from
// dirtied: Mapped less their neighbours.
func (m *PageMap) Dirtied() uint64 { return m.dirtied }

// Outside returns how many guest pages the dense range does not hold:
// those Far stands for, less Far's block.
func (m *PageMap) Outside() uint64 { return m.Total - min(m.Total, m.Len()) }

// IsOutside reports whether dense index i is in Far's block rather than a
// guest page's.
func (m *PageMap) IsOutside(i uint64) bool { return i >= m.mapped }

// Dense returns the dense index of guest page p: its own, or Far.
func (m *PageMap) Dense(p uint64) uint64 {
	r := sort.Search(len(m.starts), func(i int) bool { return m.starts[i] > p }) - 1
	if r >= 0 {
		end := m.mapped
		if r+1 < len(m.at) {
			end = m.at[r+1]
		}
		if off := p - m.starts[r]; off < end-m.at[r] {
			return m.at[r] + off
		}
	}
	return m.Far
}

// Runs calls f for each run in guest order: guest pages [start, start+n)
// are dense pages [at, at+n).
func (m *PageMap) Runs(f func(start, at, n uint64) bool) {
	for r := range m.starts {
		end := m.mapped
		if r+1 < len(m.at) {
			end = m.at[r+1]
		}
		if !f(m.starts[r], m.at[r], end-m.at[r]) {
			return
		}
	}
}

// PlanPages returns a PageMap for a trace of pages guest pages, or nil if
// the predictors should keep every page: a small guest, or one whose
// pages the trace mostly reaches anyway. Its memory follows the pages the
// epochs hold.
func PlanPages(epochs []trace.Epoch, pages uint64) *PageMap {
	if pages <= DensePages {
		return nil
	}
	var dirty []uint64
	compactAt := 1 << 16
	for _, e := range epochs {
		dirty = append(dirty, e.Pages...)
		if len(dirty) >= compactAt {
			slices.Sort(dirty)
			dirty = slices.Compact(dirty)
			compactAt = max(compactAt, 2*len(dirty))
		}
	}
	slices.Sort(dirty)
	dirty = slices.Compact(dirty)
	m := &PageMap{Total: pages, dirtied: uint64(len(dirty))}
	var end uint64 // end of the last run, in guest pages
	for _, p := range dirty {
		lo, hi := p-min(p, mapPad), min(p+mapPad+1, pages)
		if len(m.starts) > 0 && lo <= end {
			m.mapped += hi - end
			end = hi
			continue
		}
		m.starts = append(m.starts, lo)
		m.at = append(m.at, m.mapped)
		m.mapped += hi - lo
		end = hi
	}
	if m.Len() >= pages/2 {
		return nil
	}
	m.Far = m.farBlock() + mapPad
	return m
}

// Remap rewrites epochs' pages, in place, as m's dense indices (every
// page of epochs PlanPages planned m for has its own).
func (m *PageMap) Remap(epochs []trace.Epoch) {
	for _, e := range epochs {
		for k, p := range e.Pages {
			e.Pages[k] = m.Dense(p)
		}
	}
}

// MapPages plans a PageMap for epochs of a guest of pages pages and, if
// one is worth it, remaps epochs with it in place. It returns the page
// count the predictors are to keep (pm.Len(), or pages) and the map (nil:
// none).
func MapPages(epochs []trace.Epoch, pages uint64) (uint64, *PageMap) {
	pm := PlanPages(epochs, pages)
	if pm == nil {
		return pages, nil
	}
	pm.Remap(epochs)
	return pm.Len(), pm
}
