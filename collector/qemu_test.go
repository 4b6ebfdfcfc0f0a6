package collector_test

import (
	"errors"
	"testing"
	"time"

	"github.com/pagecast/pagecast/collector"
	"github.com/pagecast/pagecast/guest"
	"github.com/pagecast/pagecast/internal/testutil"
	"github.com/pagecast/pagecast/qemu"
)

// TestQEMU profiles a QEMU VM (dirty ring on) running the pagecast guest's
// sweep and checks each epoch's arena pages against the pages the guest's
// own progress counter says it wrote: sweep writes arena page k mod N as
// its k-th write. The counter is read just before each epoch closes, so
// pages written in between may land one epoch later in the truth.
func TestQEMU(t *testing.T) {
	testutil.RequiresBPF(t)
	testutil.RequiresQEMUWithKVM(t)
	w, err := guest.ParseWorkload("sweep:delay=40")
	if err != nil {
		t.Fatal(err)
	}
	vm, err := qemu.Start(qemu.Options{MemoryBytes: 128 << 20, Cmdline: w.Cmdline(1), DirtyRingSize: 65536})
	if errors.Is(err, qemu.ErrNoQEMU) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Close()
	if _, err := vm.WaitBanner(60 * time.Second); err != nil {
		t.Fatal(err)
	}
	c, err := collector.New(collector.Config{QMP: vm.QMPPath, Epoch: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Target().Kind != "qemu" || c.Target().MemoryBytes != 128<<20 {
		t.Fatalf("target %+v", c.Target())
	}
	progress := func() uint64 {
		s, err := vm.GuestStatus()
		if err != nil {
			t.Fatal(err)
		}
		return s.TotalProgress()
	}
	s, _ := vm.GuestStatus()
	first, n := uint64(s.ArenaFirstPage), uint64(s.ArenaPages)

	// The counter is read just before and just after each epoch switch;
	// writes between the two readings may fall in either epoch and are
	// left out of the comparison (and counted).
	// QEMU turns dirty logging on asynchronously after the dirty limit is
	// set: let the first epoch pass before comparing.
	time.Sleep(500 * time.Millisecond)
	a0 := progress()
	c.CloseEpoch()
	b0 := progress()
	var inter, union, boundary int
	prevAmbiguous := map[uint64]bool{}
	for k := a0 - 1; k < b0+1; k++ {
		prevAmbiguous[first+k%n] = true
	}
	for i := 0; i < 6; i++ {
		time.Sleep(500 * time.Millisecond)
		a1 := progress()
		e, err := c.CloseEpoch()
		if err != nil {
			t.Fatal(err)
		}
		b1 := progress()
		if b1-b0 >= n {
			t.Fatalf("sweep wrapped its %d-page arena within an epoch (%d writes)", n, b1-b0)
		}
		want, ambiguous := map[uint64]bool{}, map[uint64]bool{}
		for k := b0; k < a1; k++ {
			want[first+k%n] = true
		}
		// One more write each side: the guest bumps its counter and
		// writes the page as two stores, in either order to an observer.
		for k := a1 - 1; k < b1+1; k++ {
			ambiguous[first+k%n] = true
		}
		boundary += len(ambiguous)
		got := map[uint64]bool{}
		for _, p := range e.Pages {
			if p >= first && p < first+n && !ambiguous[p] && !prevAmbiguous[p] {
				got[p] = true
			}
		}
		for p := range got {
			if want[p] {
				inter++
			}
		}
		union += len(got) + len(want) - countInter(got, want)
		b0, prevAmbiguous = b1, ambiguous
	}
	agreement := float64(inter) / float64(union)
	t.Logf("qemu sweep: %d pages in both of %d: agreement %.5f, %d pages written during epoch switches left out (hook %s)",
		inter, union, agreement, boundary, c.Hook().Name)
	if inter < 5000 || agreement < 0.999 {
		t.Fatalf("agreement %.5f over %d pages, want ≥ 0.999 over at least 5000", agreement, inter)
	}
}

func countInter(got, want map[uint64]bool) int {
	n := 0
	for p := range got {
		if want[p] {
			n++
		}
	}
	return n
}
