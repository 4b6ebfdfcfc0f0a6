package trace

import (
	"io"
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
// seen, whatever the memory size: 8 bytes a page at most. Pages are
// appended to a list, which is sorted and deduplicated whenever it fills;
// a block of 4096 pages with 64 or more in the list moves to a bitmap
// (512 bytes, no more than its list entries took), so a dense working set
// costs a bit a page.
type pageSet struct {
	list   []uint64
	blocks map[uint64]*[64]uint64
	dense  int64 // pages set in blocks
}

const (
	blockShift = 12
	// denseAt is how many pages of a block in the list move it to a bitmap.
	denseAt = 64
)

// add adds p.
func (s *pageSet) add(p uint64) {
	if blk := s.blocks[p>>blockShift]; blk != nil {
		s.set(blk, p)
		return
	}
	switch {
	case s.list == nil:
		s.list = make([]uint64, 0, 4096)
	case len(s.list) == cap(s.list):
		s.compact()
		if len(s.list) > cap(s.list)/2 {
			s.list = slices.Grow(s.list, cap(s.list))
		}
	}
	s.list = append(s.list, p)
}

func (s *pageSet) set(blk *[64]uint64, p uint64) {
	w, bit := &blk[(p>>6)&63], uint64(1)<<(p&63)
	if *w&bit == 0 {
		*w |= bit
		s.dense++
	}
}

// compact sorts and deduplicates the list and moves dense blocks out of it.
func (s *pageSet) compact() {
	kept := s.list[:0]
	for _, p := range s.list {
		if blk := s.blocks[p>>blockShift]; blk != nil {
			s.set(blk, p)
		} else {
			kept = append(kept, p)
		}
	}
	slices.Sort(kept)
	kept = slices.Compact(kept)
	out := kept[:0]
	for i := 0; i < len(kept); {
		j := i
		for j < len(kept) && kept[j]>>blockShift == kept[i]>>blockShift {
			j++
		}
		if j-i >= denseAt {
			if s.blocks == nil {
				s.blocks = map[uint64]*[64]uint64{}
			}
			blk := new([64]uint64)
			s.blocks[kept[i]>>blockShift] = blk
			for _, p := range kept[i:j] {
				s.set(blk, p)
			}
		} else {
			out = append(out, kept[i:j]...)
		}
		i = j
	}
	s.list = out
}

// len returns the number of distinct pages added.
func (s *pageSet) len() int64 {
	s.compact()
	return int64(len(s.list)) + s.dense
}
