package tcg_test

import (
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/pagecast/pagecast/guest"
	"github.com/pagecast/pagecast/internal/testutil"
	"github.com/pagecast/pagecast/qemu"
	"github.com/pagecast/pagecast/tcg"
)

const testMemory = 64 << 20

// startGuest boots the pagecast guest under TCG running workload, with the
// plugin recording into an area in a temporary directory when withPlugin.
func startGuest(tb testing.TB, workload string, withPlugin bool) (*qemu.VM, *tcg.Area) {
	tb.Helper()
	testutil.RequiresQEMU(tb)
	w, err := guest.ParseWorkload(workload)
	if err != nil {
		tb.Fatal(err)
	}
	o := qemu.Options{Accel: qemu.AccelTCG, MemoryBytes: testMemory, Cmdline: w.Cmdline(1)}
	var shm string
	if withPlugin {
		dir := tb.TempDir()
		so, err := tcg.WritePlugin(dir)
		if err != nil {
			tb.Fatal(err)
		}
		shm = filepath.Join(dir, "area")
		o.Extra = []string{"-plugin", tcg.PluginArg(so, shm, testMemory>>tcg.PageShift)}
	}
	vm, err := qemu.Start(o)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { vm.Close() })
	var area *tcg.Area
	if withPlugin {
		if area, err = tcg.Open(shm); err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { area.Close() })
		if found, err := tcg.FindShm(area.Stats().PID); err != nil || found != shm {
			tb.Fatalf("FindShm(qemu) = %q, %v; want %q", found, err, shm)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for progress(tb, vm) == 0 {
		if time.Now().After(deadline) {
			tb.Fatal("guest made no progress in 30s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return vm, area
}

func progress(tb testing.TB, vm *qemu.VM) uint64 {
	tb.Helper()
	s, err := vm.GuestStatus()
	if err != nil {
		tb.Fatal(err)
	}
	return s.TotalProgress()
}

// TestSweepAgreement checks the plugin's per-epoch dirty sets against the
// guest's own count of the pages it wrote. With one vCPU, sweep's write
// number j (1-based, the value of the progress counter once it is done)
// goes to arena page (j-1) mod ArenaPages. At each epoch switch the test
// reads progress just before (lo) and just after (hi) SetEpoch: writes up
// to lo certainly fell in the old epoch, writes after hi in the new one,
// the few in between in either. So epoch k certainly holds the writes
// (hi_k, lo_k+1] and possibly those in (lo_k, hi_k+1]. Recall is measured
// on the certain set, precision of the plugin's arena pages against the
// possible set; outside the arena the guest writes its own status page,
// stack and data, which are checked only for the status page.
func TestSweepAgreement(t *testing.T) {
	// delay slows the sweep so that an epoch covers part of the arena's
	// 15328 pages, not all of it: at delay=5000 an idle machine ran it at
	// 600 000 pages a second, the whole arena in a 25 ms epoch; 40000 is
	// about 75 000 a second there, and still writes every epoch on a
	// loaded machine.
	vm, area := startGuest(t, "sweep:delay=40000", true)
	st, err := vm.GuestStatus()
	if err != nil {
		t.Fatal(err)
	}
	first, n := uint64(st.ArenaFirstPage), uint64(st.ArenaPages)
	statusPFN := statusPage(t, vm)

	type boundary struct{ lo, hi uint64 }
	switchTo := func(e uint32) boundary {
		lo := progress(t, vm)
		area.SetEpoch(e)
		hi := progress(t, vm)
		return boundary{lo, hi}
	}
	// pagesOf is the set of arena pages (as guest page frames) of writes
	// (from, to].
	pagesOf := func(from, to uint64) map[uint64]bool {
		set := map[uint64]bool{}
		for j := from + 1; j <= to && uint64(len(set)) < n; j++ {
			set[first+(j-1)%n] = true
		}
		return set
	}

	const epochs = 10
	b := switchTo(1) // epoch 0 holds the boot; it is not compared
	time.Sleep(tcg.Grace)
	area.ReadEpoch(0, nil) // clears buffer 0 for epoch 2
	var certain, recalled, seen, possible, windows uint64
	busy := 0 // epochs in which the guest wrote (a loaded host can stall it for one)
	var got []uint64
	for k := uint32(1); k <= epochs; k++ {
		start := time.Now()
		time.Sleep(20 * time.Millisecond)
		next := switchTo(k + 1)
		took := time.Since(start)
		time.Sleep(tcg.Grace)
		got = area.ReadEpoch(k, got[:0])
		if !slices.IsSorted(got) {
			t.Fatalf("epoch %d: pages not in ascending order", k)
		}
		sure, maybe := pagesOf(b.hi, next.lo), pagesOf(b.lo, next.hi)
		inArena := 0
		for _, p := range got {
			if p >= first && p < first+n {
				inArena++
				if maybe[p] {
					possible++
				}
			}
		}
		seen += uint64(inArena)
		for p := range sure {
			certain++
			if _, ok := slices.BinarySearch(got, p); ok {
				recalled++
			}
		}
		if _, ok := slices.BinarySearch(got, statusPFN); !ok && next.lo > b.hi {
			t.Errorf("epoch %d: the guest's status page %#x, written on every write, is missing", k, statusPFN)
		}
		windows += b.hi - b.lo
		t.Logf("epoch %d (%v): guest wrote %d-%d pages (writes %d..%d), plugin: %d pages, %d in the arena",
			k, took.Round(time.Millisecond), len(sure), len(maybe), b.hi+1, next.lo, len(got), inArena)
		if uint64(len(maybe)) >= n {
			t.Fatalf("epoch %d: %d pages written, the whole arena: epochs too long for the test", k, len(maybe))
		}
		if len(sure) > 0 {
			busy++
		}
		b = next
	}
	if busy < epochs/2 {
		t.Fatalf("the guest wrote in only %d of %d epochs", busy, epochs)
	}
	rec, prec := float64(recalled)/float64(certain), float64(possible)/float64(seen)
	s := area.Stats()
	t.Logf("recall %.6f (%d/%d), precision %.6f (%d/%d), %d writes in switch windows; stats %+v",
		rec, recalled, certain, prec, possible, seen, windows, s)
	if rec < 0.999 || prec < 0.999 {
		t.Errorf("agreement below 0.999: recall %.6f, precision %.6f", rec, prec)
	}
	if s.PluginAPI < tcg.PluginAPIOldest || s.PluginAPI > tcg.PluginAPINewest || s.APICur < s.PluginAPI || s.APIMin > s.PluginAPI ||
		s.Exited || s.PID == 0 || s.Writes == 0 {
		t.Errorf("stats %+v", s)
	}
}

// statusPage is the guest page frame of the status page: the one page
// below the arena whose bytes hold the status magic.
func statusPage(t *testing.T, vm *qemu.VM) uint64 {
	k, err := guest.Load(guest.Image())
	if err != nil {
		t.Fatal(err)
	}
	return k.StatusAddr >> tcg.PageShift
}
