package main

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pagecast/pagecast/internal/testutil"
	"github.com/pagecast/pagecast/qemu"
	"github.com/pagecast/pagecast/qemuguest"
)

// TestPublishQMP: QEMU's socket, staged beside --qmp while the guest
// boots, is moved into place, but never over something that took the path
// meanwhile (review 77: rename replaced another process's live socket).
func TestPublishQMP(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "q.sock")
	staged := stagedQMP(path)
	if staged != filepath.Join(dir, ".q.sock.booting") {
		t.Fatalf("staged at %s", staged)
	}
	l, err := net.Listen("unix", staged)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	v := &qemuVM{VM: &qemu.VM{QMPPath: staged}, qmp: path, staged: staged}
	other, err := net.Listen("unix", path) // took the path meanwhile
	if err != nil {
		t.Fatal(err)
	}
	if err := v.publishQMP(); err == nil || !strings.Contains(err.Error(), "something made it while the guest booted") {
		t.Errorf("publish over a live socket: %v", err)
	}
	other.Close()
	os.Remove(path)
	if err := v.publishQMP(); err != nil || v.QMPPath != path || v.staged != "" {
		t.Fatalf("publish: %v, QMPPath %s, staged %q", err, v.QMPPath, v.staged)
	}
	if c, err := net.Dial("unix", path); err != nil {
		t.Errorf("dial the published socket: %v", err)
	} else {
		c.Close()
	}
}

// abandonedNote says a migrate was killed in its switch-over, or exited
// after a migration its destination did not confirm (walk 123), as the
// mark it left says.
func TestAbandonedNote(t *testing.T) {
	killed := abandonedNote("process 7 (pagecast migrate)")
	if !strings.Contains(killed, "process 7 (pagecast migrate) paused this guest for its switch-over and exited before the migration ended: the guest may be only here") {
		t.Errorf("killed: %s", killed)
	}
	left := abandonedNote("process 7 (pagecast migrate)" + qemuguest.Unconfirmed)
	if !strings.Contains(left, "process 7 (pagecast migrate), whose destination did not confirm it runs the guest, paused this guest for its switch-over and exited: the guest may be only here") {
		t.Errorf("unconfirmed: %s", left)
	}
}

// TestVMRunQEMUPortInUse: a QEMU that exits at start, its -incoming port
// taken, is said in QEMU's own words first, and leaves no --qmp socket
// behind (walk 152: "qemu's QMP socket handshake: … connection reset by
// peer (qemu-system-x86_64: … Address already in use)", and a stale
// socket).
func TestVMRunQEMUPortInUse(t *testing.T) {
	testutil.RequiresQEMU(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	sock := filepath.Join(t.TempDir(), "dst.sock")
	out, err := exec.Command(binary, "--log-level", "warn", "vm", "run", "--monitor", "qemu", "--memory", "32M",
		"--engine", "qemu", "--incoming", "tcp:"+l.Addr().String(), "--qmp", "unix:"+sock).CombinedOutput()
	if err == nil || !strings.HasPrefix(string(out), "pagecast: qemu exited: ") || !strings.Contains(string(out), "Address already in use") {
		t.Errorf("vm run --engine qemu --incoming on a port in use: %v\n%s", err, out)
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("--qmp's socket left behind: %v", err)
	}
}

// TestKeepSerialLog: a Linux guest that panicked has its serial log kept
// out of the VM's directory, which goes with the VM (walk 152: vm run had
// named a log already gone). vm run on a junk --initrd takes 17 s under
// TCG to panic, too long for this package's share of make test: the copy
// is checked alone.
func TestKeepSerialLog(t *testing.T) {
	log := filepath.Join(t.TempDir(), "serial.log")
	want := "Booting from ROM..\nKernel panic - not syncing: VFS: Unable to mount root fs\n"
	if err := os.WriteFile(log, []byte(want), 0o600); err != nil {
		t.Fatal(err)
	}
	kept := keepSerialLog(log, 1<<22+os.Getpid())
	if kept == "" {
		t.Fatal("the serial log was not kept")
	}
	defer os.Remove(kept)
	if b, err := os.ReadFile(kept); err != nil || string(b) != want || filepath.Dir(kept) != os.TempDir() {
		t.Errorf("kept in %s: %q, %v; want %q in %s", kept, b, err, want, os.TempDir())
	}
	if keepSerialLog(filepath.Join(t.TempDir(), "none.log"), 1) != "" {
		t.Error("a serial log that is not there was said kept")
	}
}
