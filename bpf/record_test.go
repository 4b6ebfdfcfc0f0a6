package bpf

import (
	"os"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
)

// TestStaleEpochWrite runs the raw_tp program on made-up ring pushes
// (BPF_PROG_TEST_RUN: no KVM, but root and the kernel's BTF): a write
// recorded under an epoch one behind the page's last (its CPU read the
// epoch just before it moved, another recorded the page in the next one
// since) counts in that epoch, and the page's history stays (taken as a
// gap of 65 535 epochs, it wiped the history, the later epoch's write
// with it).
func TestStaleEpochWrite(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs eBPF: root to load programs")
	}
	const pages = 64
	p, err := Load(Options{PID: uint32(os.Getpid()), MaxPages: pages, Mode: ModeRing,
		Hook: "raw_tp/kvm_dirty_ring_push", Slots: []Slot{{ID: 0, Pages: pages}}})
	if err != nil {
		t.Skipf("needs eBPF: %v", err)
	}
	defer p.Close()
	write := func(gfn uint64) {
		t.Helper()
		// kvm_dirty_ring_push(ring, slot, offset)
		if _, err := p.prog.Run(&ebpf.RunOptions{Context: []uint64{0, 0, gfn}}); err != nil {
			t.Fatal(err)
		}
	}
	state := func(gfn int) PageState {
		t.Helper()
		s := make([]PageState, pages)
		if err := p.ReadPages(s); err != nil {
			t.Fatal(err)
		}
		return s[gfn]
	}
	for e := uint32(1); e <= 5; e++ {
		p.SetEpoch(e)
		write(7)
	}
	write(9) // page 9: epoch 5 only
	p.SetEpoch(6)
	write(7) // one CPU, in epoch 6
	p.SetEpoch(5)
	write(7) // another, which read the epoch as 5
	write(9) // page 9 again in 5, after nothing later: unchanged
	p.SetEpoch(4)
	write(9) // and one in 4, whose bit was clear
	p.SetEpoch(6)
	s := state(7)
	for e := uint32(1); e <= 6; e++ {
		if !DirtyIn(s, e, 6) {
			t.Errorf("page 7, written in epochs 1 to 6: state %#x says not in %d", s.State, e)
		}
	}
	s9 := state(9)
	for e, want := range map[uint32]bool{3: false, 4: true, 5: true, 6: false} {
		if got := DirtyIn(s9, e, 6); got != want {
			t.Errorf("page 9, written in epochs 4 and 5: state %#x says %v for %d", s9.State, got, e)
		}
	}
}

// TestLoadPageBound: 2^32 pages, which a 32-bit map size holds as 0, is
// refused as too many, not taken for no hook loading (no root needed).
func TestLoadPageBound(t *testing.T) {
	for _, n := range []uint64{0, 1 << 32} {
		if _, err := Load(Options{PID: 1, MaxPages: n, Mode: ModeRing}); err == nil || !strings.Contains(err.Error(), "want 1 to 2^32-1") {
			t.Errorf("MaxPages %d: %v, want the bound said", n, err)
		}
	}
}
