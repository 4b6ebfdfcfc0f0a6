package qemuguest_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pagecast/pagecast/internal/testutil"
	"github.com/pagecast/pagecast/migrator"
	"github.com/pagecast/pagecast/qemu"
	"github.com/pagecast/pagecast/qemuguest"
)

// TestEngineLinux migrates a real Linux guest (Debian's kernel, a busybox
// initramfs) with pagecast's engine, predictive over a 64 MiB/s link,
// while a shell loop in it rewrites a 2 MiB file in tmpfs, writes its count
// to a virtio disk and prints it on the serial console. The guest has a
// NIC too, as the VMs people run do. The disk is a file both QEMUs open, as
// shared storage is: QEMU's own migration hands it over with the device
// state. The destination's memory checks out against the source's, the
// same shell goes on counting there from where it was, and its counts
// reach the disk.
func TestEngineLinux(t *testing.T) {
	kernel := testutil.RequiresLinuxGuest(t)
	dir := t.TempDir()
	modules, insmod := virtioModules(t, kernel)
	initrd, err := qemu.BuildInitramfs(dir, qemu.InitramfsOptions{Files: modules, Command: insmod + `
n=0; while [ ! -b /dev/vda ] && [ $n -lt 100 ]; do sleep 0.1; n=$((n+1)); done
echo "pagecast-net $(ls /sys/class/net | tr '\n' ' ')"
i=0
while :; do
  i=$((i+1)); yes $i | head -c 2097152 > /dev/shm/x
  printf "pagecast-disk %08d\n" $i | dd of=/dev/vda bs=512 count=1 conv=sync,fsync 2>/dev/null
  echo "pagecast-tick $i"
done`})
	if err != nil {
		t.Fatal(err)
	}
	if pvh, err := qemu.PVHKernel(kernel, dir); err == nil {
		kernel = pvh
	}
	disk := filepath.Join(dir, "disk.raw")
	if err := os.WriteFile(disk, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	o := qemu.Options{Accel: qemu.AccelTCG, MemoryBytes: 256 << 20, Kernel: kernel, Initrd: initrd, Append: qemu.LinuxAppend,
		Extra: []string{"-drive", "file=" + disk + ",if=virtio,format=raw", "-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0"}}
	src, err := qemuguest.StartSource(o)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if _, err := src.VM().WaitSerial("pagecast-tick 3", 120*time.Second); err != nil {
		t.Fatal(err)
	}
	if line, err := src.VM().WaitSerial("pagecast-net", time.Second); err != nil || !strings.Contains(line, "eth0") {
		t.Fatalf("the guest's network interfaces: %q (%v), want eth0, its virtio NIC", line, err)
	}
	if n := diskTick(t, disk); n < 3 {
		t.Fatalf("the source's guest wrote count %d to its disk, want 3 or more", n)
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
	if n := diskTick(t, disk); n <= last {
		t.Errorf("the disk holds count %d, the source's last was %d: the destination's guest does not write it", n, last)
	}
}

// virtioModules are the kernel's modules for a virtio disk and NIC, as
// initramfs files, and the commands that load them in order. Debian's
// kernel builds virtio as modules; they are under /lib/modules of the
// kernel's release.
func virtioModules(t *testing.T, kernel string) (map[string]string, string) {
	t.Helper()
	release := strings.TrimPrefix(filepath.Base(kernel), "vmlinuz-")
	root := filepath.Join("/lib/modules", release, "kernel")
	files := map[string]string{}
	var insmod strings.Builder
	for _, m := range []string{"drivers/virtio/virtio_ring", "drivers/virtio/virtio", "drivers/virtio/virtio_pci_modern_dev",
		"drivers/virtio/virtio_pci_legacy_dev", "drivers/virtio/virtio_pci", "drivers/block/virtio_blk",
		"net/core/failover", "drivers/net/net_failover", "drivers/net/virtio_net"} {
		host := filepath.Join(root, m+".ko")
		if _, err := os.Stat(host); err != nil {
			t.Skipf("needs the kernel's virtio modules (Debian package linux-image-%s): %v", release, err)
		}
		in := "/lib/modules/" + filepath.Base(m) + ".ko"
		files[in] = host
		fmt.Fprintf(&insmod, "insmod %s\n", in)
	}
	return files, insmod.String()
}

// diskTick is the last count the guest's shell wrote to its disk.
func diskTick(t *testing.T, disk string) int {
	t.Helper()
	b := make([]byte, 32)
	f, err := os.Open(disk)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	var n int
	fmt.Sscanf(string(b), "pagecast-disk %d", &n)
	return n
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
