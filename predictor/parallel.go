package predictor

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// parallelPages is the fewest pages a run of Observe's passes takes on
// a core of its own: a VM of fewer than twice as many is passed over in
// one goroutine.
const parallelPages = 1 << 17 // 512 MiB of guest

// spans splits the pages into runs of whole calm blocks (which are
// also whole regions), one a worker, at most workers and each at least
// parallelPages: Observe's passes share nothing across blocks, so each
// run goes to a goroutine of its own and the results are those of one
// pass over them all.
func spans(pages, workers int) [][2]int {
	n := max(min(workers, pages/parallelPages), 1)
	blocks := (pages + calmBlock - 1) / calmBlock
	out := make([][2]int, 0, n)
	for i := range n {
		lo, hi := blocks*i/n*calmBlock, min(blocks*(i+1)/n*calmBlock, pages)
		if lo < hi {
			out = append(out, [2]int{lo, hi})
		}
	}
	return out
}

// eachSpan runs fn on each of the model's spans, at once, and returns
// when all are done. The span's index says where fn keeps what it
// gathers.
func (m *Model) eachSpan(fn func(i, lo, hi int)) {
	if len(m.spans) == 1 {
		fn(0, m.spans[0][0], m.spans[0][1])
		return
	}
	var wg sync.WaitGroup
	for i, s := range m.spans[1:] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(i+1, s[0], s[1])
		}()
	}
	fn(0, m.spans[0][0], m.spans[0][1])
	wg.Wait()
}

// eachRun calls fn(i) for every i in [0, n), up to workers calls at once
// (the caller's goroutine one of them), each taking the next i left, and
// returns when all are done. Where fn puts its result by i, the results
// do not depend on which goroutine took which.
func eachRun(n, workers int, fn func(i int)) {
	var next atomic.Int64
	work := func() {
		for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
			fn(i)
		}
	}
	var wg sync.WaitGroup
	for range min(workers, n) - 1 {
		wg.Go(work)
	}
	work()
	wg.Wait()
}

// setWorkers makes Observe's passes and the forecast take n runs of
// pages at once (see Options.Workers).
func (m *Model) setWorkers(n int) {
	m.o.Workers = max(n, 1)
	m.spans = spans(int(m.pages), m.o.Workers)
	m.spanLists = make([]strataLists, len(m.spans))
}

// defaultWorkers is Options.Workers' default: a core each.
func defaultWorkers() int { return runtime.GOMAXPROCS(0) }
