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

// FreeMemory is the memory a process here may take: MemAvailable, or what
// it has left of its address-space limit where lower; ok is false where
// neither is known. predict eval and serve check what their predictors
// need by it. Where is what bounds it, for an error to name: "this
// machine has free" or the limit's.
func FreeMemory() (free uint64, where string, ok bool) {
	free, byLimit, ok := memLimit()
	if byLimit {
		return free, "this process has left of its address-space limit (ulimit -v)", ok
	}
	return free, "this machine has free", ok
}

// memLimit is the memory a simulation may take: MemAvailable, or what
// the process has left of its address-space limit where that is lower
// (byLimit); ok is false where neither is known.
func memLimit() (limit uint64, byLimit, ok bool) {
	avail, ok := memAvailable()
	rlim := ^uint64(0)
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_AS, &rl); err == nil {
		rlim = rl.Cur
	}
	return limitOf(avail, ok, rlim, vmSize())
}

// limitOf is memLimit's rule, given the address space the process holds
// now (used; 0 where not known, then half the limit is taken): under an
// address-space limit, only what is left of it. The runtime holds some
// 1.7 GB of address space from its start (its reservations, 34 MB of it
// resident): under ulimit -v 1950000 and 2200000, half the limit was
// taken, a check of 944 MiB passed and the runtime ran out at 180 and 348
// MB of heap (walk 134); under ulimit -v 4000000 the whole limit was
// taken, a check of 3.81 GiB passed and the runtime ran out at 2.4 GB
// (found by a hostile-input walk). The estimates checked against it
// (RunBytes, predict eval's bytes a page) are of the peak, the garbage
// collector's lag included.
func limitOf(avail uint64, availOK bool, rlimitAS, used uint64) (limit uint64, byLimit, ok bool) {
	if rlimitAS != ^uint64(0) {
		left := rlimitAS / 2
		if used > 0 {
			left = 0
			if used < rlimitAS {
				left = rlimitAS - used
			}
		}
		if !availOK || left < avail {
			return left, true, true
		}
	}
	return avail, false, availOK
}

// vmSize is the address space the process holds (/proc/self/status
// VmSize); 0 where it cannot be read.
func vmSize() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmSize:"); ok {
			kib, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				return 0
			}
			return kib << 10
		}
	}
	return 0
}

// CheckMemory says, for a simulation of a guest of pages pages in mode,
// whether this machine has the memory it takes (RunBytes): an error
// naming both if not, so that it is refused rather than killed by the
// runtime midway.
func CheckMemory(pages uint64, mode string) error {
	need := RunBytes(pages, mode)
	limit, byLimit, ok := memLimit()
	if !ok || need <= limit {
		return nil
	}
	where := "this machine has free"
	if byLimit {
		where = "this process has left of its address-space limit (ulimit -v)"
	}
	hint := "simulate a smaller guest"
	if strings.Contains(mode, migrator.ModePredictive) {
		hint = fmt.Sprintf("simulate a mode without predictive (%.1f bytes a page), or a smaller guest", float64(RunBytes(1<<20, migrator.ModePrecopy))/(1<<20))
	}
	return fmt.Errorf("%s on a guest of %s needs about %s of memory to simulate (%.1f bytes a page), more than the %s %s: %s",
		mode, units.FormatBytes(float64(pages*migrator.PageSize)), units.FormatBytes(float64(need)),
		float64(RunBytes(1<<20, mode))/(1<<20), units.FormatBytes(float64(limit)), where, hint)
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
