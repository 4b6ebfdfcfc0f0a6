package qemu_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pagecast/pagecast/internal/testutil"
	"github.com/pagecast/pagecast/qemu"
	"github.com/pagecast/pagecast/tcg"
)

// TestLinuxGuestDirtiesMemory boots Debian's kernel with a busybox
// initramfs under TCG with pagecast's plugin, and checks the plugin sees
// an idle Linux write little and a Linux running dd into tmpfs write
// every page of the file, epoch by epoch.
func TestLinuxGuestDirtiesMemory(t *testing.T) {
	kernel := testutil.RequiresLinuxGuest(t)
	const (
		memory    = 256 << 20
		fileBytes = 64 << 20
		rounds    = 3
	)
	dir := t.TempDir()
	// The command idles first (for an idle epoch), then rewrites a 64 MiB
	// file in tmpfs a few times: page cache pages, the same ones each round.
	command := fmt.Sprintf(`sleep 3
echo pagecast-linux writing
i=0
while [ $i -lt %d ]; do
	dd if=/dev/zero of=/dev/shm/x bs=1M count=%d 2>/dev/null
	i=$((i+1))
done`, rounds, fileBytes>>20)
	initrd, err := qemu.BuildInitramfs(dir, qemu.InitramfsOptions{Command: command})
	if err != nil {
		t.Fatal(err)
	}
	if pvh, err := qemu.PVHKernel(kernel, dir); err != nil {
		t.Logf("booting the bzImage, its decompression in the guest takes long under TCG: %v", err)
	} else {
		kernel = pvh
	}
	so, err := tcg.WritePlugin(dir)
	if err != nil {
		t.Fatal(err)
	}
	shm := filepath.Join(dir, "dirty.shm")
	start := time.Now()
	vm, err := qemu.Start(qemu.Options{
		Accel: qemu.AccelTCG, MemoryBytes: memory,
		Kernel: kernel, Initrd: initrd, Append: qemu.LinuxAppend,
		Plugin: tcg.PluginArg(so, shm, memory/4096),
	})
	if err != nil {
		if perr := tcg.ExplainLoadError(err.Error()); perr != nil {
			t.Fatal(perr)
		}
		t.Fatal(err)
	}
	defer vm.Close()
	area, err := tcg.Open(shm)
	if err != nil {
		t.Fatal(err)
	}
	defer area.Close()

	line, err := vm.WaitSerial(qemu.LinuxStartMarker, 90*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	boot := time.Since(start)
	t.Logf("%q after %.1fs under TCG with the plugin (kernel %s)", line, boot.Seconds(), filepath.Base(kernel))
	if _, err := vm.GuestStatus(); !errors.Is(err, qemu.ErrLinuxGuest) {
		t.Errorf("GuestStatus of a Linux guest: %v, want ErrLinuxGuest", err)
	}
	if own, err := qemu.RunsPagecastGuest(vm.Monitor); err != nil || own {
		t.Errorf("RunsPagecastGuest of a Linux guest: %v, %v; want false", own, err)
	}

	// closeEpoch ends epoch e and returns the pages written in it.
	closeEpoch := func(e uint32) []uint64 {
		area.SetEpoch(e + 1)
		time.Sleep(tcg.Grace)
		return area.ReadEpoch(e, nil)
	}
	bootPages := closeEpoch(0)
	time.Sleep(time.Second) // the command sleeps 3 s before writing
	idle := closeEpoch(1)
	if _, err := vm.WaitSerial("pagecast-linux writing", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	closeEpoch(2)
	writeStart := time.Now()
	done, err := vm.WaitSerial(qemu.LinuxDoneMarker, 120*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	writing := time.Since(writeStart)
	busy := closeEpoch(3)
	t.Logf("pages written: boot %d, idle second %d, %d dd rounds of %d MiB in %.1fs %d; plugin %+v",
		len(bootPages), len(idle), rounds, fileBytes>>20, writing.Seconds(), len(busy), area.Stats())
	if done != qemu.LinuxDoneMarker+" status=0" {
		t.Errorf("command ended with %q", done)
	}
	// Rounds 2 and 3 rewrite every page of the file within the epoch.
	if want := fileBytes / 4096; len(busy) < want {
		t.Errorf("%d pages written while dd rewrote a %d-page file, want at least %d", len(busy), want, want)
	}
	if len(idle)*10 > len(busy) {
		t.Errorf("idle epoch %d pages, busy epoch %d: want the busy one 10x the idle", len(idle), len(busy))
	}
	for _, p := range busy {
		if p >= memory/4096 {
			t.Fatalf("page %d beyond the guest's %d pages of RAM", p, memory/4096)
		}
	}
	// /init powers the machine off: QEMU exits by itself.
	select {
	case <-vm.Done():
	case <-time.After(20 * time.Second):
		t.Error("qemu still running 20s after the guest's poweroff")
	}
}

// TestLinuxKernelPanic: a kernel that panics (here, on an initramfs that
// is not one) ends WaitSerial at once with ErrKernelPanic, naming the
// panic and what the kernel said before it, where it used to wait out
// its timeout for a line that never comes.
func TestLinuxKernelPanic(t *testing.T) {
	kernel := testutil.RequiresLinuxGuest(t)
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk.img")
	if err := os.WriteFile(junk, bytes.Repeat([]byte("not an initramfs "), 64), 0o644); err != nil {
		t.Fatal(err)
	}
	if pvh, err := qemu.PVHKernel(kernel, dir); err == nil {
		kernel = pvh
	}
	vm, err := qemu.Start(qemu.Options{
		Accel: qemu.AccelTCG, MemoryBytes: 128 << 20,
		Kernel: kernel, Initrd: junk, Append: qemu.LinuxAppend,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Close()
	start := time.Now()
	_, err = vm.WaitSerial(qemu.LinuxStartMarker, 5*time.Minute)
	t.Logf("after %.1fs: %v", time.Since(start).Seconds(), err)
	if !errors.Is(err, qemu.ErrKernelPanic) || !strings.Contains(err.Error(), "Kernel panic - not syncing: VFS: Unable to mount root fs") ||
		!strings.Contains(err.Error(), "Initramfs unpacking failed") || strings.Contains(err.Error(), "\x1b") {
		t.Errorf("WaitSerial on a kernel that panicked: %v; want ErrKernelPanic with the panic and the unpacking failure before it", err)
	}
}
