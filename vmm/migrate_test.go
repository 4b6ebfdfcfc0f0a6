package vmm_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/pagecast/pagecast/guest"
	"github.com/pagecast/pagecast/migrator"
	"github.com/pagecast/pagecast/vmm"
)

// TestMigrate moves a running pagecast guest between two of this
// monitor's VMs through package migrator, in pre-copy and in TSMC (whose
// stage 3 puts the destination's memory under userfaultfd while KVM runs
// the guest): the guest runs on at the destination, and its memory equals
// the source's wherever it has not written since. migrator's own tests run
// every mode on a test guest without KVM.
func TestMigrate(t *testing.T) {
	for _, mode := range []string{migrator.ModePrecopy, migrator.ModeTSMC} {
		t.Run(mode, func(t *testing.T) {
			src, _ := startVM(t, vmm.Config{}, "hotset:hot=1024")
			dst, _ := startVM(t, vmm.Config{}, "hotset:hot=1024")
			guest.FillArena(src.Memory(), guest.DefaultMix, 1)
			if err := src.Start(); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "the source guest to start", 20*time.Second, func() bool { return guestState(t, src).TotalProgress() > 0 })
			dlog, err := dst.StartDirtyLog()
			if err != nil {
				t.Fatal(err)
			}
			defer dlog.Close()

			l, err := migrator.Listen("tcp:127.0.0.1:0", nil)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			received := migrator.ReceiveOnce(l, dst.Migratable(), migrator.ReceiveConfig{})
			m, err := migrator.Outgoing(src.Migratable(), "tcp:"+l.Addr().String(), migrator.Config{Mode: mode, MaxBandwidth: 32 << 20})
			if err != nil {
				t.Fatal(err)
			}
			info, err := m.Wait()
			if err != nil {
				t.Fatal(err)
			}
			if err := <-received; err != nil {
				t.Fatalf("destination: %v", err)
			}
			t.Logf("%s: total %d ms, downtime %d ms, %d bytes, stop: %s", mode, info.TotalTime, info.Downtime,
				info.RAM.Transferred, info.Pagecast.StopReason)
			if st, _ := src.State(); st != vmm.StatePaused {
				t.Errorf("source after migration: %s, want paused", st)
			}
			from := guestState(t, src).TotalProgress()
			waitFor(t, "the guest to go on at the destination", 20*time.Second, func() bool { return guestState(t, dst).TotalProgress() > from })

			if err := dst.Pause(); err != nil {
				t.Fatal(err)
			}
			written, err := dlog.Harvest()
			if err != nil {
				t.Fatal(err)
			}
			smem, dmem := src.Memory(), dst.Memory()
			differ := 0
			for gfn := range uint64(len(smem) / vmm.PageSize) {
				a, b := smem[gfn*vmm.PageSize:(gfn+1)*vmm.PageSize], dmem[gfn*vmm.PageSize:(gfn+1)*vmm.PageSize]
				if !written.Has(gfn) && !bytes.Equal(a, b) {
					differ++
				}
			}
			if differ > 0 {
				t.Errorf("%d pages differ between source and destination", differ)
			}
		})
	}
}
