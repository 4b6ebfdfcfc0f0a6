package qemuguest_test

import (
	"testing"
	"time"

	"github.com/pagecast/pagecast/bitmap"
	"github.com/pagecast/pagecast/internal/testutil"
	"github.com/pagecast/pagecast/qemu"
	"github.com/pagecast/pagecast/qemuguest"
)

// TestDirtyLogHighMemory: a 64-bit Linux guest of 3.5 GiB, whose RAM
// past 3 GiB QEMU maps from 4 GiB up, writes there (Linux fills its
// Normal zone, above 4 GiB, first), and every page of that part whose
// content changes between two copies of it is in the dirty log harvested
// in between: what a migration needs. The TCG plugin names those pages by
// their offset in RAM; taken as guest-physical frames, those past 3 GiB
// fell in the hole below 4 GiB and were dropped, and a 5 GiB guest's
// migration failed its memory check.
func TestDirtyLogHighMemory(t *testing.T) {
	t.Parallel()
	kernel := testutil.RequiresLinuxGuest(t)
	const (
		memory = 3584 << 20
		low    = 3 << 30 // RAM below 4 GiB; the rest is the high part
	)
	dir := t.TempDir()
	// A 16 MiB file in tmpfs, rewritten with new content each time.
	command := `echo pagecast-linux writing
i=0
while :; do i=$((i+1)); yes $i | head -c 16777216 > /dev/shm/x; done`
	initrd, err := qemu.BuildInitramfs(dir, qemu.InitramfsOptions{Command: command})
	if err != nil {
		t.Fatal(err)
	}
	if pvh, err := qemu.PVHKernel(kernel, dir); err == nil {
		kernel = pvh
	}
	s, err := qemuguest.StartSource(qemu.Options{Accel: qemu.AccelTCG, MemoryBytes: memory,
		Kernel: kernel, Initrd: initrd, Append: qemu.LinuxAppend})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if _, err := s.VM().WaitSerial("pagecast-linux writing", 120*time.Second); err != nil {
		t.Fatal(err)
	}
	log, err := s.StartDirtyLog()
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	dirty := bitmap.New(memory / 4096)
	harvest := func() {
		b, err := log.Harvest()
		if err != nil {
			t.Fatal(err)
		}
		dirty.Or(b)
	}
	high := s.Memory()[low:]
	var changed, missed, tries int
	for ; changed == 0 && tries < 5; tries++ {
		harvest()
		dirty = bitmap.New(memory / 4096) // from here on
		before := append([]byte(nil), high...)
		time.Sleep(2 * time.Second)
		harvest()
		after := append([]byte(nil), high...)
		harvest() // writes during the second copy
		for off := 0; off < len(high); off += 4096 {
			if string(before[off:off+4096]) == string(after[off:off+4096]) {
				continue
			}
			changed++
			if !dirty.Has(uint64(low+off) / 4096) {
				missed++
			}
		}
	}
	t.Logf("%d pages past 3 GiB changed, %d of them not in the dirty log (%d tries)", changed, missed, tries)
	if changed == 0 {
		t.Fatal("the guest wrote nothing past 3 GiB of its RAM: nothing to check")
	}
	if missed > 0 {
		t.Errorf("%d of the %d pages past 3 GiB that changed are not in the dirty log", missed, changed)
	}
}
