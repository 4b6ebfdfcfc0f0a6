package uffd_test

// TestKVMGuestPulls lives in the external test package: it runs
// pagecast's KVM monitor (package vmm), which imports the migration engine,
// which imports uffd.

import (
	"bytes"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/pagecast/pagecast/guest"
	"github.com/pagecast/pagecast/internal/testutil"
	"github.com/pagecast/pagecast/uffd"
	"github.com/pagecast/pagecast/vmm"
)

func pageOf(mem []byte, p uint64) []byte { return mem[p*uffd.PageSize : (p+1)*uffd.PageSize] }

func registerExt(t testing.TB, mem []byte) *uffd.Region {
	t.Helper()
	r, err := uffd.Register(mem)
	if err != nil {
		t.Skipf("needs userfaultfd: %v", err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// TestKVMGuestPulls runs a real pagecast guest whose whole arena has been
// dropped, serving its faults from a saved copy of the memory as the
// destination of a post-copy migration serves them from the source, then
// pushes the rest in the background.
func TestKVMGuestPulls(t *testing.T) {
	testutil.RequiresKVM(t)
	const memory = 32 << 20
	w, err := guest.ParseWorkload("sweep")
	if err != nil {
		t.Fatal(err)
	}
	vm, err := vmm.New(vmm.Config{MemoryBytes: memory, Cmdline: w.Cmdline(1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { vm.Close() })
	mem := vm.Memory()
	guest.FillArena(mem, guest.DefaultMix, 1)
	source := bytes.Clone(mem) // what the migration source would send
	r := registerExt(t, mem)   // closed before the VM (cleanups run last first)

	first, pages := uint64(guest.ArenaStart/uffd.PageSize), uint64(len(mem)/uffd.PageSize)
	arena := make([]uint64, 0, pages-first)
	for p := first; p < pages; p++ {
		arena = append(arena, p)
	}
	if err := r.Drop(arena); err != nil {
		t.Fatal(err)
	}
	if got := r.Missing(); got != uint64(len(arena)) {
		t.Fatalf("Missing = %d, want %d", got, len(arena))
	}

	// The handler serves faults from the source copy.
	var (
		mu        sync.Mutex
		latencies []time.Duration // fault received to Fill returned, pages filled on demand
		repeats   int             // faults on pages present by the time they were served
		outside   []uint64        // faults on pages never dropped
		firstAt   time.Time       // when the first fault arrived
	)
	served := make(chan struct{})
	go func() {
		defer close(served)
		for p := range r.Faults() {
			start := time.Now()
			err := r.Fill(p, pageOf(source, p))
			d := time.Since(start)
			mu.Lock()
			if firstAt.IsZero() {
				firstAt = start
			}
			switch {
			case p < first:
				outside = append(outside, p)
			case errors.Is(err, uffd.ErrPresent):
				repeats++
			case err != nil:
				t.Errorf("serve fault: %v", err)
			default:
				latencies = append(latencies, d)
			}
			mu.Unlock()
		}
	}()
	faults := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(latencies)
	}

	progress := func() uint64 {
		st, err := vm.GuestStatus()
		if err != nil {
			t.Fatal(err)
		}
		if state, err := vm.State(); err != nil {
			t.Fatalf("guest %s: %v", state, err)
		}
		return st.TotalProgress()
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(60 * time.Second); !cond(); time.Sleep(2 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s (progress %d, faults served %d, missing %d)", what, progress(), faults(), r.Missing())
			}
		}
	}

	// Demand only: every arena page the sweep reaches is pulled.
	start := time.Now()
	if err := vm.Start(); err != nil {
		t.Fatal(err)
	}
	const demandPages = 2000
	waitFor("the guest to write pages pulled on demand", func() bool { return progress() >= demandPages })
	demandProgress, demandFaults := progress(), faults()
	mu.Lock()
	boot, demandTime := firstAt.Sub(start), time.Since(firstAt)
	mu.Unlock()
	t.Logf("demand only: first fault %v after start, then %d guest writes, %d faults served in %v: %.0f faults/s, %.0f writes/s",
		boot.Round(time.Microsecond), demandProgress, demandFaults, demandTime.Round(time.Millisecond),
		float64(demandFaults)/demandTime.Seconds(), float64(demandProgress)/demandTime.Seconds())
	if demandFaults == 0 {
		t.Fatal("the guest made progress through dropped pages without a fault")
	}

	// Then a pusher fills everything in the background, racing the handler.
	pushStart := time.Now()
	pushed, present := 0, 0
	for _, p := range arena {
		switch err := r.Fill(p, pageOf(source, p)); {
		case errors.Is(err, uffd.ErrPresent):
			present++
		case err != nil:
			t.Fatal(err)
		default:
			pushed++
		}
	}
	pushTime := time.Since(pushStart)
	t.Logf("push: %d pages filled, %d already present, in %v: %.0f pages/s",
		pushed, present, pushTime.Round(time.Millisecond), float64(pushed)/pushTime.Seconds())
	if got := r.Missing(); got != 0 {
		t.Fatalf("Missing after the push = %d, want 0", got)
	}

	// With everything present the guest runs at full speed again.
	before, t0 := progress(), time.Now()
	waitFor("the guest to go on after the push", func() bool { return progress() >= before+demandPages })
	t.Logf("all present: %.0f writes/s", float64(progress()-before)/time.Since(t0).Seconds())

	if err := vm.Pause(); err != nil {
		t.Fatal(err)
	}
	st, err := vm.GuestStatus()
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	<-served

	slices.Sort(latencies)
	q := func(f float64) time.Duration { return latencies[int(f*float64(len(latencies)-1))] }
	t.Logf("fault service (receive to Fill return), %d faults: median %v, p90 %v, p99 %v, max %v; %d repeats on present pages",
		len(latencies), q(0.5), q(0.9), q(0.99), latencies[len(latencies)-1], repeats)
	if len(outside) > 0 {
		t.Errorf("%d faults on pages never dropped, first %d", len(outside), outside[0])
	}

	checkSweptMemory(t, mem, source, st)
}

// checkSweptMemory checks the arena after a sweep guest on one vCPU ran over
// pages that were filled from source, by what the sweep can have changed.
// With total progress n over an arena of N pages, the sweep wrote arena
// page i exactly n/N times plus once more if i < n%N, each write one
// aligned 32-bit word; and the write after the last counted one may have
// landed before the vCPU stopped without its count. So a page may differ
// from source in at most that many words. A page lost (read as zeros) or
// filled with the wrong content differs in hundreds of words, unless it was
// a zero page to begin with, which no check on content can tell from a
// page lost; the log counts those apart.
func checkSweptMemory(t *testing.T, mem, source []byte, st guest.Status) {
	t.Helper()
	first, n, arenaPages := uint64(st.ArenaFirstPage), st.TotalProgress(), uint64(st.ArenaPages)
	if first == 0 {
		first = guest.ArenaStart / uffd.PageSize
	}
	if arenaPages == 0 || first+arenaPages > uint64(len(mem)/uffd.PageSize) {
		t.Fatalf("guest status reports arena %d+%d, beyond memory", first, arenaPages)
	}
	identical, written, bad, zero := 0, 0, 0, 0
	for i := range arenaPages {
		writes := n / arenaPages
		if i < n%arenaPages {
			writes++
		}
		if i == n%arenaPages {
			writes++ // the uncounted write in flight
		}
		got, want := pageOf(mem, first+i), pageOf(source, first+i)
		if !slices.ContainsFunc(want, func(b byte) bool { return b != 0 }) {
			zero++
		}
		words := 0
		for off := 0; off < uffd.PageSize; off += 4 {
			if !bytes.Equal(got[off:off+4], want[off:off+4]) {
				words++
			}
		}
		switch {
		case words == 0:
			identical++
		case uint64(words) <= writes:
			written++
		default:
			bad++
			if bad <= 5 {
				t.Errorf("arena page %d differs from the source in %d words, but the sweep wrote it only %d times", i, words, writes)
			}
		}
	}
	t.Logf("arena after %d writes over %d pages: %d pages identical to the source, %d differing only by the sweep's words, %d wrong; %d source pages are zero",
		n, arenaPages, identical, written, bad, zero)
}
