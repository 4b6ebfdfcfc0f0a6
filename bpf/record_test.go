package bpf

import (
	"os"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
)

// TestEpochWrap runs the raw_tp program on made-up ring pushes
// (BPF_PROG_TEST_RUN: no KVM, but root and the kernel's BTF) across the
// 16-bit epoch's wrap: a page's first write in epoch 65534 shows in it,
// and a page written in epoch 1 and next in 65536 shows in 65536 and not
// in 65537. (A change to count a write under a stale epoch as the
// earlier epoch's, taking a step of one or two back for one, lost the
// first and invented the second: found by a review walk, and undone.)
func TestEpochWrap(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs eBPF: root to load programs")
	}
	const pages = 8
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
	p.SetEpoch(2)
	write(3) // page 3: epoch 2, then 65536
	p.SetEpoch(65534)
	write(1) // page 1: first written in 65534
	if s := state(1); !DirtyIn(s, 65534, 65535) {
		t.Errorf("page 1, first written in epoch 65534: state %#x says not", s.State)
	}
	p.SetEpoch(1)
	write(5) // page 5: epoch 1, then 65536
	p.SetEpoch(65536)
	write(5)
	write(3)
	if s := state(5); !DirtyIn(s, 65536, 65537) {
		t.Errorf("page 5, written in epoch 65536: state %#x says not", s.State)
	}
	if s := state(3); !DirtyIn(s, 65536, 65537) {
		t.Errorf("page 3, written in epochs 2 and 65536: state %#x says not in 65536", s.State)
	}
	p.SetEpoch(65538)
	if s := state(5); DirtyIn(s, 65537, 65538) {
		t.Errorf("page 5, written in epochs 1 and 65536 only: state %#x says in 65537", s.State)
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
