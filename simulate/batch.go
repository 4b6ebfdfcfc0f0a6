package simulate

import (
	"bufio"
	"cmp"
	"context"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/pagecast/pagecast/internal/units"
	"github.com/pagecast/pagecast/migrator"
)

// RunAll simulates o in each of modes, Parallel(o, modes) at a time, and
// returns the results in modes' order. The predictive modes, the slowest
// by far (the predictor learns every epoch of the guest), start first.
// o.Progress and o.Done are called one at a time, from the simulations'
// goroutines.
//
// A simulation's figures do not depend on what runs beside it, but for
// the MECOM modes': they charge the CPU time coding really takes, as a
// live migration does, and a busy machine takes longer.
func RunAll(ctx context.Context, o Options, modes []string) []Result {
	return runAll(ctx, o, modes, Parallel(o, modes), nil)
}

// runAll is RunAll with workers at a time; each mode's simulation runs
// under modeCtx(ctx, mode) where that is given, and then the quick modes
// start first (for runCutting: they set the bound the slow ones are cut
// at).
func runAll(ctx context.Context, o Options, modes []string, workers int, modeCtx func(context.Context, string) context.Context) []Result {
	results := make([]Result, len(modes))
	if len(modes) == 0 {
		return results
	}
	var mu sync.Mutex // one callback at a time
	if progress := o.Progress; progress != nil {
		o.Progress = func(mode string, p Point) {
			mu.Lock()
			defer mu.Unlock()
			progress(mode, p)
		}
	}
	if done := o.Done; done != nil {
		o.Done = func(r Result) {
			mu.Lock()
			defer mu.Unlock()
			done(r)
		}
	}
	order := make([]int, len(modes))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return costRank(modes[a]) - costRank(modes[b]) })
	if modeCtx != nil {
		slices.Reverse(order)
	}
	next := make(chan int)
	var wg sync.WaitGroup
	for range max(1, min(workers, len(modes))) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				ctx := ctx
				if modeCtx != nil {
					ctx = modeCtx(ctx, modes[i])
				}
				results[i] = Run(ctx, o, modes[i])
			}
		}()
	}
	for _, i := range order {
		next <- i
	}
	close(next)
	wg.Wait()
	return results
}

// costRank orders modes by how long they take to simulate: the predictive
// ones first.
func costRank(mode string) int {
	if strings.Contains(mode, migrator.ModePredictive) {
		return 0
	}
	return 1
}

// Parallel is how many of modes RunAll simulates at once on o: one a
// core, and no more than half the memory available holds, each taking
// what RunBytes estimates: the n that take the most together fit. (Until
// 2026-12-05 n times the most any took: a 1 TiB guest's precopy, 2.5
// bytes a page, waited behind its predictive, 32.5, where both fit;
// walk 104.)
func Parallel(o Options, modes []string) int {
	n := min(runtime.GOMAXPROCS(0), len(modes))
	if o.Workload == nil || n <= 1 {
		return max(n, 1)
	}
	avail, ok := memAvailable()
	if !ok {
		return n
	}
	return parallelIn(avail/2, o.Workload.Pages(), modes, n)
}

// parallelIn is how many of modes, at most n, fit in budget bytes at
// once on a guest of pages pages, whichever run together: the most the
// largest of them together fit, at least 1.
func parallelIn(budget, pages uint64, modes []string, n int) int {
	need := make([]uint64, len(modes))
	for i, m := range modes {
		need[i] = RunBytes(pages, m)
	}
	slices.SortFunc(need, func(a, b uint64) int { return cmp.Compare(b, a) })
	var sum uint64
	for k := range min(n, len(need)) {
		sum += need[k]
		if sum > budget {
			return max(k, 1)
		}
	}
	return max(min(n, len(need)), 1)
}

// RunBytes estimates the memory a simulation of a guest of pages pages
// in mode takes at its peak: the predictor's state and a forecast for
// every page in the predictive modes (24 bytes a page, measured 17 on a
// 64 GiB guest), the guest's and the engine's bitmaps in all (2 bytes a
// page), and room for the garbage collector's lag, a quarter more.
func RunBytes(pages uint64, mode string) uint64 {
	perPage := uint64(2)
	if strings.Contains(mode, migrator.ModePredictive) {
		perPage += 24
	}
	return pages * perPage * 5 / 4
}

// FreeMemory is the memory a process here may take: MemAvailable, or
// half its address-space limit where lower; ok is false where neither is
// known. predict eval and serve check what their predictors need by it.
func FreeMemory() (uint64, bool) { return memLimit() }

// memLimit is the memory a simulation may take: MemAvailable, or half the
// process's address-space limit where that is lower; ok is false where
// neither is known.
func memLimit() (uint64, bool) {
	avail, ok := memAvailable()
	rlim := ^uint64(0)
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_AS, &rl); err == nil {
		rlim = rl.Cur
	}
	return limitOf(avail, ok, rlim)
}

// limitOf is memLimit's rule: a Go process's address space runs to about
// twice its heap (the runtime's reservations, and the heap growing to
// twice what it holds before a collection), so only half an address-space
// limit is memory to use. Under ulimit -v 4000000 predict eval passed its
// check at 3.81 GiB and the runtime ran out of address space at 2.4 GB of
// heap (found by a hostile-input walk).
func limitOf(avail uint64, availOK bool, rlimitAS uint64) (uint64, bool) {
	if rlimitAS != ^uint64(0) {
		if half := rlimitAS / 2; !availOK || half < avail {
			return half, true
		}
	}
	return avail, availOK
}

// CheckMemory says, for a simulation of a guest of pages pages in mode,
// whether this machine has the memory it takes (RunBytes): an error
// naming both if not, so that it is refused rather than killed by the
// runtime midway.
func CheckMemory(pages uint64, mode string) error {
	need := RunBytes(pages, mode)
	limit, ok := memLimit()
	if !ok || need <= limit {
		return nil
	}
	hint := "simulate a smaller guest"
	if strings.Contains(mode, migrator.ModePredictive) {
		hint = fmt.Sprintf("simulate a mode without predictive (%.1f bytes a page), or a smaller guest", float64(RunBytes(1<<20, migrator.ModePrecopy))/(1<<20))
	}
	return fmt.Errorf("%s on a guest of %s needs about %s of memory to simulate (%.1f bytes a page), more than the %s this machine has free: %s",
		mode, units.FormatBytes(float64(pages*migrator.PageSize)), units.FormatBytes(float64(need)),
		float64(RunBytes(1<<20, mode))/(1<<20), units.FormatBytes(float64(limit)), hint)
}

// memAvailable reads MemAvailable from /proc/meminfo, in bytes.
func memAvailable() (uint64, bool) {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "MemAvailable:")
		if !ok {
			continue
		}
		kib, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		return kib << 10, err == nil
	}
	return 0, false
}
