package qemuguest_test

import (
	"bytes"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/pagecast/pagecast/internal/testutil"
	"github.com/pagecast/pagecast/migrator"
	"github.com/pagecast/pagecast/qemu"
	"github.com/pagecast/pagecast/qemuguest"
)

// TestEngineLinux migrates a real Linux guest (Debian's kernel, a busybox
// initramfs) with pagecast's engine, predictive over a 64 MiB/s link,
// while a shell loop in it rewrites a 2 MiB file in tmpfs and counts on
// the serial console: the destination's memory checks out against the
// source's, and the same shell goes on counting there, from where it was.
func TestEngineLinux(t *testing.T) {
	kernel := testutil.RequiresLinuxGuest(t)
	dir := t.TempDir()
	initrd, err := qemu.BuildInitramfs(dir, qemu.InitramfsOptions{Command: `i=0
while :; do i=$((i+1)); yes $i | head -c 2097152 > /dev/shm/x; echo "pagecast-tick $i"; done`})
	if err != nil {
		t.Fatal(err)
	}
	if pvh, err := qemu.PVHKernel(kernel, dir); err == nil {
		kernel = pvh
	}
	o := qemu.Options{Accel: qemu.AccelTCG, MemoryBytes: 256 << 20, Kernel: kernel, Initrd: initrd, Append: qemu.LinuxAppend}
	src, err := qemuguest.StartSource(o)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if _, err := src.VM().WaitSerial("pagecast-tick 3", 120*time.Second); err != nil {
		t.Fatal(err)
	}
	dst, err := qemuguest.StartDest(o)
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	engineMigrate(t, src, dst, migrator.Config{Mode: migrator.ModePredictive, MaxBandwidth: 64 << 20, MaxRounds: 8})
	last := lastTick(t, src.VM().SerialPath())
	if _, err := dst.VM().WaitSerial(fmt.Sprintf("pagecast-tick %d", last+2), 60*time.Second); err != nil {
		t.Fatalf("the source's shell stopped at tick %d; on the destination: %v", last, err)
	}
}

// lastTick is the last count the guest's shell printed on the serial log.
func lastTick(t *testing.T, serial string) int {
	t.Helper()
	log, err := os.ReadFile(serial)
	if err != nil {
		t.Fatal(err)
	}
	ticks := regexp.MustCompile(`pagecast-tick (\d+)\r?\n`).FindAllSubmatch(bytes.ReplaceAll(log, []byte("\r"), nil), -1)
	if len(ticks) == 0 {
		t.Fatal("no tick on the source's serial port")
	}
	n, _ := strconv.Atoi(string(ticks[len(ticks)-1][1]))
	return n
}
