package trace

import (
	"io"
	"math"
	"slices"
)

// Stats summarises a trace's epochs.
type Stats struct {
	// Epochs is how many epoch records were read; Empty how many of them
	// had no pages.
	Epochs, Empty int64
	// First and Last are the lowest and highest epoch index read.
	First, Last uint64
	// Missing counts the indices between First and Last that have no
	// record: lost to damage, or never written.
	Missing uint64
	// Pages counts page entries over all epochs.
	Pages int64
	// Distinct counts the pages dirtied at least once: the trace's
	// working set.
	Distinct int64
	// MinPages and MaxPages are the sizes of the smallest and largest
	// epoch.
	MinPages, MaxPages int
	// LowPage and HighPage are the lowest and highest page dirtied (both
	// 0 where none was).
	LowPage, HighPage uint64
}

// MeanPages is the mean number of pages per epoch.
func (s Stats) MeanPages() float64 {
	if s.Epochs == 0 {
		return 0
	}
	return float64(s.Pages) / float64(s.Epochs)
}

// Summarize reads the rest of r's epochs and summarises them. r.Damage
// then holds all the damage.
func Summarize(r *Reader) (Stats, error) {
	var s Stats
	var seen pageSet
	dirtied := false // a page has been seen: LowPage holds one
	for {
		e, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return s, err
		}
		n := len(e.Pages)
		if s.Epochs == 0 {
			s.First, s.MinPages, s.MaxPages = e.Index, n, n
		}
		s.Last = e.Index
		s.Epochs++
		s.Pages += int64(n)
		s.MinPages, s.MaxPages = min(s.MinPages, n), max(s.MaxPages, n)
		if n == 0 {
			s.Empty++
		}
		for _, p := range e.Pages {
			if !dirtied || p < s.LowPage {
				s.LowPage, dirtied = p, true
			}
			s.HighPage = max(s.HighPage, p)
			seen.add(p)
		}
	}
	s.Distinct = seen.len()
	if s.Epochs > 0 {
		// Last-First+1 overflows when the trace spans every index.
		s.Missing = s.Last - s.First - uint64(s.Epochs-1)
	}
	return s, nil
}

// pageSet counts distinct page numbers in memory that follows the pages
// seen, whatever the memory size and the order they come in.
//
// Pages are appended to a batch. When the batch fills, it alone is sorted
// and deduplicated, then merged with the pages already held, which are kept
// sorted and distinct in fixed-size segments: the list grows a segment at a
// time, never copied into a larger one, and a merge writes into the
// segments it has just read. The batch is sized to an eighth of the list
// and grows by doubling, so a sparse page costs 8 bytes in the list and at
// most 2 in the batch (under 12 allocated over the set's life), and each
// page added costs its share of the batch's sort and about nine copies.
//
// A block of 4096 pages with 64 or more in the list moves to a bitmap (512
// bytes, no more than its list entries took), so a dense working set costs
// a bit a page.
type pageSet struct {
	segs   [][]uint64 // sorted, distinct pages; each full but the last
	sparse int        // pages in segs
	free   [][]uint64 // emptied segments, for the next merge to fill
	batch  []uint64   // pages added since the last merge
	blocks map[uint64]*[64]uint64
	dense  int64 // pages set in blocks
}

const (
	blockShift = 12
	// denseAt is how many pages of a block in the list move it to a bitmap.
	denseAt = 64
	// segLen is the pages in a segment of the list: 32 KiB.
	segLen = 4096
	// batchMin and batchShift size the batch: the larger of batchMin and
	// the list's length >> batchShift.
	batchMin   = 4096
	batchShift = 3
)

// add adds p.
func (s *pageSet) add(p uint64) {
	if len(s.batch) == cap(s.batch) {
		s.merge()
	}
	if blk := s.blocks[p>>blockShift]; blk != nil {
		s.set(blk, p)
		return
	}
	s.batch = append(s.batch, p)
}

func (s *pageSet) set(blk *[64]uint64, p uint64) {
	w, bit := &blk[(p>>6)&63], uint64(1)<<(p&63)
	if *w&bit == 0 {
		*w |= bit
		s.dense++
	}
}

// merge sorts the batch, merges it into the list and empties it; a batch
// that is too small for the list grows. Only blocks with pages in the
// batch can become dense, so the list's pages between them are copied in
// bulk, and full segments before the batch's first block are kept as they
// are.
func (s *pageSet) merge() {
	batch := s.batch
	slices.Sort(batch)
	batch = slices.Compact(batch)
	old := s.segs
	s.segs, s.sparse = make([][]uint64, 0, len(old)+len(batch)/segLen+2), 0
	for len(batch) > 0 && len(old) > 0 && len(old[0]) == segLen && old[0][segLen-1]>>blockShift < batch[0]>>blockShift {
		s.segs, s.sparse, old = append(s.segs, old[0]), s.sparse+segLen, old[1:]
	}
	m := merger{s: s, segs: old}
	for len(batch) > 0 {
		b, n := batch[0]>>blockShift, 1
		for n < len(batch) && batch[n]>>blockShift == b {
			n++
		}
		m.block(b, batch[:n])
		batch = batch[n:]
	}
	m.old(0, true, s.put)
	want := max(batchMin, s.sparse>>batchShift)
	if cap(s.batch) < want {
		s.batch = make([]uint64, 0, max(want, 2*cap(s.batch)))
	} else {
		s.batch = s.batch[:0]
	}
}

// merger reads the list's old segments during a merge.
type merger struct {
	s       *pageSet
	segs    [][]uint64 // segments not yet read; segs[0][at:] is next
	at      int
	inBlock []uint64 // the list's pages of the block being merged
	merged  []uint64 // those and the batch's, merged
}

// old passes the unread old pages below limit, or all of them, to f, a run
// at a time, and frees each segment once read.
func (m *merger) old(limit uint64, all bool, f func([]uint64)) {
	for len(m.segs) > 0 {
		seg := m.segs[0][m.at:]
		n := len(seg)
		if !all {
			n = below(seg, limit)
		}
		f(seg[:n])
		m.at += n
		if n < len(seg) {
			return
		}
		m.s.free = append(m.s.free, m.segs[0][:0])
		m.segs[0] = nil
		m.segs, m.at = m.segs[1:], 0
	}
}

// below returns how many of the sorted ps are below limit. The answer is
// usually small (the list holds eight times the batch), so it looks at
// the first few before it searches.
func below(ps []uint64, limit uint64) int {
	for i := range min(len(ps), 16) {
		if ps[i] >= limit {
			return i
		}
	}
	n, _ := slices.BinarySearch(ps, limit)
	return n
}

// block merges ps, the batch's pages of block b, into the list, or into
// the block's bitmap if together they make it dense.
func (m *merger) block(b uint64, ps []uint64) {
	s := m.s
	m.old(b<<blockShift, false, s.put)
	if len(ps) < denseAt && (len(m.segs) == 0 || m.segs[0][m.at]>>blockShift != b) {
		s.put(ps) // the list has none of the block's pages: the sparse case
		return
	}
	m.inBlock = m.inBlock[:0]
	// The last block's end is 2^64, which is 0.
	m.old((b+1)<<blockShift, b == math.MaxUint64>>blockShift, m.holdBlock)
	merged := m.merged[:0]
	old := m.inBlock
	for len(old) > 0 || len(ps) > 0 {
		switch {
		case len(ps) == 0 || len(old) > 0 && old[0] < ps[0]:
			merged, old = append(merged, old[0]), old[1:]
		case len(old) > 0 && old[0] == ps[0]:
			merged, old, ps = append(merged, ps[0]), old[1:], ps[1:]
		default:
			merged, ps = append(merged, ps[0]), ps[1:]
		}
	}
	m.merged = merged
	if len(merged) < denseAt {
		s.put(merged)
		return
	}
	// The block has no bitmap yet: add sets its pages in the bitmap once
	// there is one, and the batch is merged before any page is added.
	if s.blocks == nil {
		s.blocks = map[uint64]*[64]uint64{}
	}
	blk := new([64]uint64)
	s.blocks[b] = blk
	for _, p := range merged {
		s.set(blk, p)
	}
}

// holdBlock holds run, pages of the block being merged.
func (m *merger) holdBlock(run []uint64) { m.inBlock = append(m.inBlock, run...) }

// put appends ps, which follow the list's pages, to the list.
func (s *pageSet) put(ps []uint64) {
	s.sparse += len(ps)
	for len(ps) > 0 {
		n := len(s.segs)
		if n == 0 || len(s.segs[n-1]) == segLen {
			var seg []uint64
			if k := len(s.free); k > 0 {
				seg, s.free = s.free[k-1], s.free[:k-1]
			} else {
				seg = make([]uint64, 0, segLen)
			}
			s.segs = append(s.segs, seg)
			n++
		}
		k := min(len(ps), segLen-len(s.segs[n-1]))
		s.segs[n-1] = append(s.segs[n-1], ps[:k]...)
		ps = ps[k:]
	}
}

// len returns the number of distinct pages added.
func (s *pageSet) len() int64 {
	if len(s.batch) > 0 {
		s.merge()
	}
	return int64(s.sparse) + s.dense
}
