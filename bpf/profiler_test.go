package bpf_test

import (
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"github.com/pagecast/pagecast/bpf"
	"github.com/pagecast/pagecast/guest"
	"github.com/pagecast/pagecast/internal/testutil"
	"github.com/pagecast/pagecast/vmm"
)

// TestHooksSeeKnownWrites runs a workload that writes a known set of pages
// once, with each ring-mode hook attached, and checks that the pages the
// programs recorded for the epoch are exactly that set.
func TestHooksSeeKnownWrites(t *testing.T) {
	testutil.RequiresBPF(t)
	for _, tc := range []struct {
		hook        string
		staticSlots bool
	}{
		{"tp_btf/kvm_dirty_ring_push", false}, // finds the slot in KVM's memslots
		{"raw_tp/kvm_dirty_ring_push", false},
		{"tracepoint/kvm/kvm_dirty_ring_push", true},
	} {
		t.Run(tc.hook, func(t *testing.T) {
			w, err := guest.ParseWorkload("replay:loops=1,gate=1")
			if err != nil {
				t.Fatal(err)
			}
			vm, err := vmm.New(vmm.Config{MemoryBytes: 32 << 20, Cmdline: w.Cmdline(1)})
			if err != nil {
				t.Fatal(err)
			}
			defer vm.Close()
			pages := vm.MemoryBytes() / vmm.PageSize
			rng := rand.New(rand.NewPCG(3, 4))
			want := map[uint64]bool{}
			var table []uint32
			for len(table) < 1000 {
				p := guest.ArenaStart/guest.PageSize + rng.Uint64N(pages-guest.ArenaStart/guest.PageSize)
				if !want[p] {
					want[p] = true
					table = append(table, uint32(p))
				}
			}
			if err := vm.WriteReplayTable(table); err != nil {
				t.Fatal(err)
			}
			opts := bpf.Options{PID: uint32(os.Getpid()), MaxPages: pages, Mode: bpf.ModeRing, Hook: tc.hook}
			if tc.staticSlots {
				opts.Slots = []bpf.Slot{{ID: 0, BaseGFN: 0, Pages: pages}}
			}
			p, err := bpf.Load(opts)
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			if err := p.SetEpoch(1); err != nil {
				t.Fatal(err)
			}
			if err := vm.Start(); err != nil {
				t.Fatal(err)
			}
			dl, err := vm.StartDirtyLog()
			if err != nil {
				t.Fatal(err)
			}
			defer dl.Close()
			waitState(t, vm, guest.StateWaiting)
			if err := p.SetEpoch(2); err != nil {
				t.Fatal(err)
			}
			if err := vm.ReleaseGate(); err != nil {
				t.Fatal(err)
			}
			waitState(t, vm, guest.StateDone)
			if err := p.SetEpoch(3); err != nil {
				t.Fatal(err)
			}
			states := make([]bpf.PageState, pages)
			if err := p.ReadPages(states); err != nil {
				t.Fatal(err)
			}
			missing, extra := 0, 0
			for gfn := uint64(guest.ArenaStart / guest.PageSize); gfn < pages; gfn++ {
				got := bpf.DirtyIn(states[gfn], 2, 3)
				switch {
				case want[gfn] && !got:
					missing++
				case !want[gfn] && got:
					extra++
				}
			}
			st, err := p.Stats()
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: stats %+v", tc.hook, st)
			if missing+extra > 0 {
				t.Fatalf("epoch 2 arena pages: %d missing, %d extra of %d", missing, extra, len(want))
			}
			if st.Dropped() != 0 || st.Events < uint64(len(want)) {
				t.Fatalf("stats %+v: want no drops and at least %d events", st, len(want))
			}
		})
	}
}

func waitState(t *testing.T, vm *vmm.VM, want guest.State) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		s, err := vm.GuestStatus()
		if err != nil {
			t.Fatal(err)
		}
		if s.State == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("guest %v, waiting for %v", s, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
