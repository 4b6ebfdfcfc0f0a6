package collector_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/pagecast/pagecast/collector"
	"github.com/pagecast/pagecast/guest"
	"github.com/pagecast/pagecast/internal/testutil"
	"github.com/pagecast/pagecast/qmpserver"
	"github.com/pagecast/pagecast/vmm"
)

// startVM runs a pagecast VM in this process with its QMP socket served,
// so the collector finds this process as the VMM.
func startVM(t *testing.T, workload string, mode string) (*vmm.VM, string) {
	t.Helper()
	testutil.RequiresBPF(t)
	w, err := guest.ParseWorkload(workload)
	if err != nil {
		t.Fatal(err)
	}
	vm, err := vmm.New(vmm.Config{MemoryBytes: 64 << 20, Cmdline: w.Cmdline(1), DirtyMode: mode})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { vm.Close() })
	guest.FillArena(vm.Memory(), guest.DefaultMix, 1)
	sock := filepath.Join(t.TempDir(), "qmp.sock")
	l, err := qmpserver.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := qmpserver.New(nil, "test")
	vm.RegisterQMP(srv, func() {})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.Serve(ctx, l); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	if err := vm.Start(); err != nil {
		t.Fatal(err)
	}
	return vm, sock
}

// TestAgreesWithMonitor profiles pagecast VMs and compares each epoch's
// dirty set from the eBPF programs with the monitor's own harvested dirty
// log for the same epoch. The two are cut a few microseconds apart (harvest,
// then the epoch switch), so a page written in that gap lands in adjacent
// epochs in the two; everything else must agree.
func TestAgreesWithMonitor(t *testing.T) {
	for _, workload := range []string{"hotset", "sweep", "phased:hot=512,period=20000"} {
		t.Run(workload, func(t *testing.T) {
			vm, sock := startVM(t, workload, vmm.DirtyRing)
			ref, err := vm.StartDirtyLog()
			if err != nil {
				t.Fatal(err)
			}
			defer ref.Close()
			c, err := collector.New(collector.Config{QMP: sock, Epoch: 250 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if c.Target().Kind != "pagecast" || c.Hook() != "tp_btf/kvm_dirty_ring_push" {
				t.Fatalf("target %+v hook %s", c.Target(), c.Hook())
			}
			// Align the two on an epoch boundary; the first epoch is partial.
			ref.Harvest()
			c.CloseEpoch()

			var inter, union, onlyBPF, onlyMonitor int
			for i := 0; i < 6; i++ {
				time.Sleep(250 * time.Millisecond)
				want, err := ref.Harvest()
				if err != nil {
					t.Fatal(err)
				}
				e, err := c.CloseEpoch()
				if err != nil {
					t.Fatal(err)
				}
				got := map[uint64]bool{}
				for _, p := range e.Pages {
					got[p] = true
					if want.Has(p) {
						inter++
					} else {
						onlyBPF++
					}
				}
				want.ForEach(func(p uint64) {
					if !got[p] {
						onlyMonitor++
					}
				})
				union += len(e.Pages) + int(want.Count()) - countBoth(e.Pages, want)
			}
			agreement := float64(inter) / float64(union)
			t.Logf("%s: %d pages in both, %d only in the trace, %d only in the monitor's log: agreement %.5f",
				workload, inter, onlyBPF, onlyMonitor, agreement)
			if inter < 1000 {
				t.Fatalf("only %d dirty pages over 6 epochs: the workload did not run", inter)
			}
			if agreement < 0.999 {
				t.Fatalf("agreement %.5f below 0.999", agreement)
			}
			st, err := c.Stats()
			if err != nil {
				t.Fatal(err)
			}
			if st.DroppedAll() != 0 {
				t.Fatalf("programs dropped events: %+v", st)
			}
		})
	}
}

func countBoth(pages []uint64, set *vmm.Bitmap) int {
	n := 0
	for _, p := range pages {
		if set.Has(p) {
			n++
		}
	}
	return n
}
