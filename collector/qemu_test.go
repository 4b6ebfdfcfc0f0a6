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
	testutil.RequiresQEMU(t)
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
	if _, err := vm.WaitBanner(30 * time.Second); err != nil {
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

	p0 := progress()
	c.CloseEpoch()
	var inter, union int
	for i := 0; i < 6; i++ {
		time.Sleep(500 * time.Millisecond)
		p1 := progress()
		e, err := c.CloseEpoch()
		if err != nil {
			t.Fatal(err)
		}
		if p1-p0 >= n {
			t.Fatalf("sweep wrapped its %d-page arena within an epoch (%d writes)", n, p1-p0)
		}
		want := map[uint64]bool{}
		for k := p0; k < p1; k++ {
			want[first+k%n] = true
		}
		got := 0
		for _, p := range e.Pages {
			if p < first || p >= first+n {
				continue // the guest's own status page and stack
			}
			got++
			if want[p] {
				inter++
			}
		}
		union += got + len(want) - countInter(e.Pages, want)
		p0 = p1
	}
	agreement := float64(inter) / float64(union)
	t.Logf("qemu sweep: %d pages in both of %d: agreement %.5f (hook %s)", inter, union, agreement, c.Hook().Name)
	if inter < 5000 || agreement < 0.999 {
		t.Fatalf("agreement %.5f over %d pages, want ≥ 0.999 over at least 5000", agreement, inter)
	}
}

func countInter(pages []uint64, want map[uint64]bool) int {
	n := 0
	for _, p := range pages {
		if want[p] {
			n++
		}
	}
	return n
}
