package simulate

import (
	"context"
	"reflect"
	"slices"
	"testing"
	"time"
)

// RunAll's results are Run's, mode by mode, in the order asked, however
// many run at once; Done hears of each once, and Progress of each mode's
// timeline but its end (under the race detector, the callbacks are one at
// a time).
func TestRunAll(t *testing.T) {
	w, err := ParseSynthetic("hotset:hot=1024,p=0.9,rate=5k", 1<<13, 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	modes := []string{"precopy", "throttle", "predictive", "tsmc", "predictive+tsmc", "precopy+postcopy"}
	o := Options{Workload: w, Bandwidth: 4 << 20}
	want := make([]Result, len(modes))
	for i, m := range modes {
		want[i] = Run(context.Background(), o, m)
		if want[i].Err != nil {
			t.Fatalf("%s: %v", m, want[i].Err)
		}
	}
	for _, workers := range []int{2, len(modes)} {
		done := map[string]int{}
		heard := map[string][]Point{}
		o := o
		o.Progress = func(mode string, p Point) { heard[mode] = append(heard[mode], p) }
		o.Done = func(r Result) { done[r.Mode]++ }
		got := runAll(context.Background(), o, modes, workers, nil)
		for i, r := range got {
			if r.Mode != modes[i] {
				t.Fatalf("%d at once: result %d is %s, want %s", workers, i, r.Mode, modes[i])
			}
			if !reflect.DeepEqual(r.Info, want[i].Info) || !slices.Equal(r.Timeline, want[i].Timeline) {
				t.Errorf("%d at once: %s differs from its run alone:\n%+v\n%+v", workers, r.Mode, r.Info, want[i].Info)
			}
			if done[r.Mode] != 1 {
				t.Errorf("%d at once: Done heard of %s %d times", workers, r.Mode, done[r.Mode])
			}
			if !slices.Equal(heard[r.Mode], r.Timeline[:len(r.Timeline)-1]) {
				t.Errorf("%d at once: Progress heard %d of %s's %d points", workers, len(heard[r.Mode]), r.Mode, len(r.Timeline))
			}
		}
	}
}

// Parallel runs one simulation a core, fewer where memory would not hold
// them.
func TestParallel(t *testing.T) {
	small, err := ParseSynthetic("uniform", 1<<16, 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	modes := []string{"precopy", "predictive", "tsmc", "mecom"}
	if n := Parallel(Options{Workload: small}, modes); n < 1 || n > len(modes) {
		t.Errorf("%d at once for %d modes", n, len(modes))
	}
	if n := Parallel(Options{Workload: small}, modes[:1]); n != 1 {
		t.Errorf("%d at once for one mode", n)
	}
	// 16 PiB: no machine holds two predictive simulations of it.
	huge, err := ParseSynthetic("uniform", 1<<42, 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if n := Parallel(Options{Workload: huge}, modes); n != 1 {
		t.Errorf("%d at once for a 16 PiB guest", n)
	}
	if RunBytes(1<<20, "predictive+mecom") <= RunBytes(1<<20, "mecom") {
		t.Error("a predictive simulation is estimated to take no more memory than one without the predictor")
	}
	// A 1 TiB guest (2^28 pages) in 11.4 GiB: predictive (32.5 bytes a
	// page, 8.1 GiB) and precopy (2.5, 0.6 GiB) fit together, where
	// n times the larger did not (walk 104); two predictive ones do not.
	pages, budget := uint64(1<<28), uint64(114<<30)/10
	if n := parallelIn(budget, pages, []string{"precopy", "predictive"}, 2); n != 2 {
		t.Errorf("precopy and predictive of 1 TiB in 11.4 GiB: %d at once, want 2", n)
	}
	if n := parallelIn(budget, pages, []string{"predictive", "predictive+mecom", "precopy"}, 2); n != 1 {
		t.Errorf("two predictive of 1 TiB in 11.4 GiB: %d at once, want 1", n)
	}
	if n := parallelIn(budget, pages, []string{"precopy", "tsmc", "mecom"}, 8); n != 3 {
		t.Errorf("three modes without the predictor of 1 TiB in 11.4 GiB, 8 cores: %d at once, want 3", n)
	}
	if n := parallelIn(1, pages, []string{"precopy", "tsmc"}, 2); n != 1 {
		t.Errorf("no room: %d at once, want 1", n)
	}
}

// TestLimitOf: an address-space limit counts for what the process has not
// yet taken of it, the runtime holding 1.7 GB of address space from its
// start (walk 134: half of a 1.95 GB limit was taken, and the check passed
// where the runtime then ran out), or for half of it where that is not
// known (predict eval passed its check under ulimit -v 4000000 and the
// runtime ran out at 2.4 GB of heap; found by a hostile-input walk);
// MemAvailable where lower, or where there is no limit.
func TestLimitOf(t *testing.T) {
	const gib = 1 << 30
	none := ^uint64(0)
	for _, tc := range []struct {
		avail   uint64
		availOK bool
		rlimit  uint64
		used    uint64
		want    uint64
		byLimit bool
		ok      bool
	}{
		{22 * gib, true, none, 0, 22 * gib, false, true},
		{22 * gib, true, none, 2 * gib, 22 * gib, false, true},
		{22 * gib, true, 4 * gib, 0, 2 * gib, true, true},
		{22 * gib, true, 4 * gib, 3 * gib / 2, 5 * gib / 2, true, true},
		{22 * gib, true, 4 * gib, 5 * gib, 0, true, true},
		{3 * gib, true, 8 * gib, 2 * gib, 3 * gib, false, true},
		{0, false, 4 * gib, 0, 2 * gib, true, true},
		{0, false, none, 0, 0, false, false},
	} {
		if got, byLimit, ok := limitOf(tc.avail, tc.availOK, tc.rlimit, tc.used); got != tc.want || byLimit != tc.byLimit || ok != tc.ok {
			t.Errorf("limitOf(%d, %v, %d, %d) = %d, %v, %v; want %d, %v, %v", tc.avail, tc.availOK, tc.rlimit, tc.used, got, byLimit, ok, tc.want, tc.byLimit, tc.ok)
		}
	}
	if v := vmSize(); v == 0 {
		t.Error("vmSize: 0, want this process's VmSize")
	}
}
