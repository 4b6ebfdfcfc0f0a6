package trace

import (
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"
)

// pageShapes are page sequences to count: name to n pages.
var pageShapes = map[string]func(n int) []uint64{
	// The hostile trace's: pages 4096 apart, each in its own block, in order.
	"sparse ascending": func(n int) []uint64 {
		ps := make([]uint64, n)
		for i := range ps {
			ps[i] = uint64(i) << blockShift
		}
		return ps
	},
	// Distinct pages anywhere in a 4 PiB guest, in no order.
	"sparse random": func(n int) []uint64 {
		rng := rand.New(rand.NewPCG(1, 2))
		ps := make([]uint64, n)
		for i := range ps {
			ps[i] = rng.Uint64N(MaxMemoryBytes / MinPageSize)
		}
		return ps
	},
	// A working set of n/4 pages, each dirtied four times, in no order:
	// some blocks dense, some sparse, duplicates in and across batches.
	"mixed repeats": func(n int) []uint64 {
		rng := rand.New(rand.NewPCG(3, 4))
		set := make([]uint64, n/4)
		for i := range set {
			if i%2 == 0 {
				set[i] = uint64(i) // dense: the low blocks
			} else {
				set[i] = 1<<30 + rng.Uint64N(1<<30)
			}
		}
		ps := make([]uint64, 0, n)
		for range 4 {
			rng.Shuffle(len(set), func(i, j int) { set[i], set[j] = set[j], set[i] })
			ps = append(ps, set...)
		}
		return ps
	},
	// Pages on both sides of block edges, so that blocks go dense in a
	// later merge than their first pages came.
	"block edges": func(n int) []uint64 {
		ps := make([]uint64, n)
		for i := range ps {
			blk, k := uint64(i%997), uint64(i/997)
			ps[i] = blk<<blockShift + (k*61)%(1<<blockShift)
			if k%2 == 1 {
				ps[i] = (blk+1)<<blockShift - 1 - (k*61)%(1<<blockShift)
			}
		}
		return ps
	},
}

// checkPageSet checks s's invariants: the list sorted and distinct, every
// segment full but the last, no page in both the list and a bitmap.
func checkPageSet(t *testing.T, s *pageSet) {
	t.Helper()
	var prev uint64
	n := 0
	for i, seg := range s.segs {
		if len(seg) != segLen && i != len(s.segs)-1 {
			t.Fatalf("segment %d of %d holds %d pages", i, len(s.segs), len(seg))
		}
		for _, p := range seg {
			if n > 0 && p <= prev {
				t.Fatalf("list page %d follows %d", p, prev)
			}
			if s.blocks[p>>blockShift] != nil {
				t.Fatalf("page %d is in the list and its block's bitmap", p)
			}
			prev = p
			n++
		}
	}
	if n != s.sparse {
		t.Fatalf("list holds %d pages, counts %d", n, s.sparse)
	}
}

func TestPageSet(t *testing.T) {
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for k := range pageShapes {
			if !yield(k) {
				return
			}
		}
	}) {
		t.Run(name, func(t *testing.T) {
			ps := pageShapes[name](200000)
			want := map[uint64]bool{}
			var s pageSet
			for i, p := range ps {
				s.add(p)
				want[p] = true
				if i%50000 == 49999 {
					if got := s.len(); got != int64(len(want)) {
						t.Fatalf("after %d pages: %d distinct, want %d", i+1, got, len(want))
					}
					checkPageSet(t, &s)
				}
			}
			if got := s.len(); got != int64(len(want)) {
				t.Fatalf("%d distinct, want %d", got, len(want))
			}
			checkPageSet(t, &s)
			t.Logf("%d distinct: %d in the list, %d in %d bitmaps", len(want), s.sparse, s.dense, len(s.blocks))
		})
	}
}

// TestPageSetMemory: a sparse working set costs 8 bytes a page and the
// batch at most 4 more over the count's whole life: every byte the set
// allocates, not only what it holds at the end.
func TestPageSetMemory(t *testing.T) {
	const n = 1 << 20
	for _, name := range []string{"sparse ascending", "sparse random"} {
		t.Run(name, func(t *testing.T) {
			ps := pageShapes[name](n)
			runtime.GC()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			var s pageSet
			for _, p := range ps {
				s.add(p)
			}
			distinct := s.len()
			runtime.ReadMemStats(&after)
			alloc := after.TotalAlloc - before.TotalAlloc
			if distinct < n-100 || alloc > 12*uint64(distinct)+64<<10 {
				t.Fatalf("%d distinct pages: allocated %d bytes, %.1f a page", distinct, alloc, float64(alloc)/float64(distinct))
			}
			t.Logf("%d distinct pages: %.1f bytes a page", distinct, float64(alloc)/float64(distinct))
		})
	}
}

// BenchmarkPageSet counts a million pages of each shape and reports the
// time and the bytes allocated per page added.
func BenchmarkPageSet(b *testing.B) {
	const n = 1 << 20
	for _, name := range []string{"sparse ascending", "sparse random", "mixed repeats", "block edges"} {
		b.Run(name, func(b *testing.B) {
			ps := pageShapes[name](n)
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			for b.Loop() {
				var s pageSet
				for _, p := range ps {
					s.add(p)
				}
				s.len()
			}
			runtime.ReadMemStats(&after)
			pages := float64(b.N) * n
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/pages, "ns/page")
			b.ReportMetric(float64(after.TotalAlloc-before.TotalAlloc)/pages, "B/page")
		})
	}
}
