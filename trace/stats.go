package trace

import "io"

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
	seen := pageSet{}
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
			if seen.add(p) {
				s.Distinct++
			}
		}
	}
	if s.Epochs > 0 {
		s.Missing = s.Last - s.First + 1 - uint64(s.Epochs)
	}
	return s, nil
}

// pageSet is a sparse bitmap of page numbers, 4096 pages to a block, so
// its size follows the pages seen rather than the memory size.
type pageSet map[uint64]*[64]uint64

// add adds p and reports whether it was new.
func (s pageSet) add(p uint64) bool {
	blk := s[p>>12]
	if blk == nil {
		blk = new([64]uint64)
		s[p>>12] = blk
	}
	w, bit := &blk[(p>>6)&63], uint64(1)<<(p&63)
	if *w&bit != 0 {
		return false
	}
	*w |= bit
	return true
}
