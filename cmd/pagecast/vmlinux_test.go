package main

import (
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pagecast/pagecast/internal/testutil"
	"github.com/pagecast/pagecast/qemu"
)

// TestLinuxVCPUs: vm run --monitor qemu boots a Linux guest on the vCPUs
// --vcpus gives (it refused any but 1, as for the pagecast guest: walk
// 80), a destination of another count is refused in the handshake, and one
// of the same count takes the guest, which counts on there from where it
// was, on both vCPUs; the source then says its guest has gone.
// (TestVMRunQEMUHungStops: the watch of the run state holds no signal up.)
func TestLinuxVCPUs(t *testing.T) {
	if testing.Short() {
		t.Skip("boots Linux under QEMU")
	}
	kernel := testutil.RequiresLinuxGuest(t)
	initrd, err := qemu.BuildInitramfs(t.TempDir(), qemu.InitramfsOptions{Command: `
echo "pagecast-cpus $(grep -c ^processor /proc/cpuinfo)"
i=0
while :; do
  i=$((i+1)); yes $i | head -c 1048576 > /dev/shm/x
  echo "pagecast-tick $i"
  sleep 0.2
done`})
	if err != nil {
		t.Fatal(err)
	}
	src := startQEMURun(t, "--memory", "128M", "--vcpus", "2", "--kernel", kernel, "--initrd", initrd)
	srcSerial := serialOf(t, src)
	waitConsole(t, srcSerial, regexp.MustCompile(`pagecast-tick 2\b`))
	if b, _ := os.ReadFile(srcSerial); !strings.Contains(string(b), "pagecast-cpus 2") {
		t.Fatalf("the guest does not see 2 vCPUs:\n%s", b)
	}

	one := freeTCP(t)
	startQEMURun(t, "--memory", "128M", "--incoming", one)
	out, err := exec.Command(binary, "migrate", "--qmp", "unix:"+src.sock, "--to", one, "--mode", "precopy", "--quiet").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "vCPUs: 2 at the source, 1 at the destination") {
		t.Fatalf("a 2-vCPU guest into a destination of 1: %v\n%s", err, out)
	}

	uri := freeTCP(t)
	dst := startQEMURun(t, "--memory", "128M", "--vcpus", "2", "--incoming", uri)
	dstSerial := serialOf(t, dst)
	out, err = exec.Command(binary, "migrate", "--qmp", "unix:"+src.sock, "--to", uri, "--mode", "precopy", "--quiet").CombinedOutput()
	if err != nil || !regexp.MustCompile(`(?m)^verified +true`).Match(out) {
		t.Fatalf("migrate a 2-vCPU Linux guest: %v\n%s", err, out)
	}
	b, _ := os.ReadFile(srcSerial)
	ticks := regexp.MustCompile(`pagecast-tick (\d+)`).FindAllStringSubmatch(string(b), -1)
	last, _ := strconv.Atoi(ticks[len(ticks)-1][1])
	waitConsole(t, dstSerial, regexp.MustCompile(`pagecast-tick `+strconv.Itoa(last+3)+`\b`))
	if b, _ := os.ReadFile(dstSerial); strings.Contains(string(b), "pagecast-tick 1\r") || strings.Contains(string(b), "pagecast-tick 1\n") {
		t.Errorf("the guest started counting afresh on the destination:\n%s", b)
	}
	src.saysEventually(t, "the guest's migration out has completed (QEMU's run state postmigrate): this QEMU keeps a paused copy of its 128.0 MiB of RAM")
}

// serialOf is the serial console's file vm run names.
func serialOf(t *testing.T, r *qemuRun) string {
	t.Helper()
	for _, line := range r.head {
		if path, ok := strings.CutPrefix(line, "serial console in "); ok {
			path, _, _ = strings.Cut(path, " ")
			return path
		}
	}
	t.Fatalf("vm run names no serial console: %q", r.head)
	return ""
}

// waitConsole waits up to two minutes for re to match the console's file.
func waitConsole(t *testing.T, path string, re *regexp.Regexp) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		b, _ := os.ReadFile(path)
		if re.Match(b) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q on the console in two minutes:\n%s", re, b)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestVMRunQEMUHungStops: vm run --monitor qemu whose QEMU does not answer
// (stopped by SIGSTOP here) still stops on SIGTERM: its watch of QEMU's
// run state waits on its own (it held the signal up until QEMU answered:
// review 81).
func TestVMRunQEMUHungStops(t *testing.T) {
	if testing.Short() {
		t.Skip("boots QEMU")
	}
	r := startQEMURun(t, "--memory", "32M")
	if err := syscall.Kill(r.qemuPID, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer syscall.Kill(r.qemuPID, syscall.SIGCONT)
	time.Sleep(2500 * time.Millisecond) // a poll is under way, unanswered
	r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.exited:
	case <-time.After(20 * time.Second):
		syscall.Kill(r.qemuPID, syscall.SIGCONT)
		t.Fatal("vm run took no SIGTERM while its QEMU did not answer")
	}
}
