package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pagecast/pagecast/internal/testutil"
	"github.com/pagecast/pagecast/qemu"
	"github.com/pagecast/pagecast/qmpclient"
)

// TestReceiveHandStartedQEMU: pagecast's engine migrates the guest of
// `vm run --monitor qemu` into a QEMU started by hand, as a user would
// (guest RAM in a memfd, no kernel, two QMP sockets, -incoming defer),
// through `pagecast receive`: the memory checks out, receive exits 0 and
// QEMU runs the guest. receive first refuses a QEMU that is not waiting
// for a migration, says it was stopped when SIGINT comes before a source,
// and a first attempt whose source is killed in round 1 leaves the QEMU
// waiting for the next; with --paused the guest waits there for cont.
func TestReceiveHandStartedQEMU(t *testing.T) {
	if testing.Short() {
		t.Skip("boots QEMUs; skipped in short mode")
	}
	testutil.RequiresQEMU(t)
	src := startQEMURun(t, "--memory", "32M", "--workload", "hotset:delay=25000")
	addr := freeAddr(t)
	out, err := exec.Command(binary, "receive", "--qmp", "unix:"+src.sock, "--listen", "tcp:"+addr).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "is running, not waiting for a migration: start it with -incoming defer") {
		t.Fatalf("receive into a running QEMU: %v\n%s", err, out)
	}
	// A bad --listen is said before the QEMU is asked anything.
	out, err = exec.Command(binary, "receive", "--qmp", "unix:"+src.sock, "--listen", "4654").CombinedOutput()
	if err == nil || !strings.Contains(string(out), `--listen: migration URI "4654": want tcp:HOST:PORT`) {
		t.Errorf("receive --listen 4654: %v\n%s", err, out)
	}

	dir := t.TempDir()
	dstQMP, watchQMP := filepath.Join(dir, "dst.sock"), filepath.Join(dir, "watch.sock")
	var qemuErr bytes.Buffer
	startWaitingQEMU(t, dstQMP, &qemuErr,
		"-serial", "file:"+filepath.Join(dir, "serial.log"), // as the source has
		"-qmp", "unix:"+watchQMP+",server=on,wait=off")

	receive := func(extra ...string) (*exec.Cmd, *syncBuffer, chan error) {
		return startReceive(t, dstQMP, addr, extra...)
	}
	exited := func(what string, done chan error, out *syncBuffer) error {
		select {
		case err := <-done:
			return err
		case <-time.After(30 * time.Second):
			t.Fatalf("%s: receive did not exit:\n%s", what, out.String())
		}
		return nil
	}
	migrate := func(bandwidth string) *exec.Cmd {
		return exec.Command(binary, "--log-level", "warn", "migrate", "--qmp", "unix:"+src.sock, "--to", "tcp:"+addr,
			"--mode", "predictive", "--bandwidth", bandwidth, "--dest-qmp", "unix:"+watchQMP, "--quiet")
	}

	// Stopped before any source came, receive says just that; given TLS
	// files, its line says it takes TLS (walk 160: it read the same).
	cert, key, ca := testutil.PKI(t, dir, "site")
	recv, recvOut, recvDone := receive("--tls-cert", cert, "--tls-key", key, "--tls-ca", ca)
	waitFor(t, "receive's line", func() bool { return strings.Contains(recvOut.String(), "waiting for pagecast migrate --to") })
	if !strings.Contains(recvOut.String(), "waiting for pagecast migrate --to tcp:"+addr+", mutual TLS (the source must show a certificate signed by --tls-ca)") {
		t.Errorf("receive with TLS files does not say it takes TLS:\n%s", recvOut.String())
	}
	recv.Process.Signal(syscall.SIGINT)
	if err := exited("SIGINT", recvDone, recvOut); err == nil || !strings.Contains(recvOut.String(), "pagecast: stopped while waiting for an incoming migration\n") {
		t.Fatalf("receive stopped while it waited: %v\n%s", err, recvOut.String())
	}

	// A first attempt whose source dies in round 1: receive fails, the
	// QEMU waits on for another.
	_, recvOut, recvDone = receive()
	first := migrate("4MiB/s")
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the first migration accepted", func() bool { return strings.Contains(recvOut.String(), "incoming migration accepted") })
	time.Sleep(300 * time.Millisecond)
	first.Process.Kill()
	first.Wait()
	if err := exited("a source killed in round 1", recvDone, recvOut); err == nil || !strings.Contains(recvOut.String(), "the migration failed; the guest stays with the source") {
		t.Fatalf("receive after its source was killed: %v\n%s", err, recvOut.String())
	}

	// QEMU listens on where the first attempt started its incoming
	// migration, for the second.
	mon, err := qmpclient.Dial("unix", watchQMP, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer mon.Disconnect()
	if err := mon.Connect(); err != nil {
		t.Fatal(err)
	}
	var sock string
	if a, ok := run(t, mon, "query-migrate", nil)["socket-address"].([]any); ok && len(a) == 1 {
		sock, _ = a[0].(map[string]any)["path"].(string)
	}
	if _, err := os.Stat(sock); sock == "" || err != nil {
		t.Fatalf("after the first attempt QEMU listens on %q (%v), want the socket receive gave it", sock, err)
	}
	mon.Disconnect()

	// The second, with --paused: the guest stays paused until cont.
	_, recvOut, recvDone = receive("--paused")
	mig, err := migrate("32MiB/s").CombinedOutput()
	if err != nil || !strings.Contains(string(mig), "verified         true") {
		t.Fatalf("migrate into the hand-started QEMU: %v\n%s\nreceive:\n%s\nqemu: %s", err, mig, recvOut.String(), qemuErr.String())
	}
	if err := exited("the second migration", recvDone, recvOut); err != nil || !strings.Contains(recvOut.String(), "migration received, memory verified; guest paused (--paused): QMP cont runs it") {
		t.Fatalf("receive: %v\n%s", err, recvOut.String())
	}
	if st := qmpState(t, watchQMP); st != "paused" {
		t.Errorf("the hand-started QEMU is %v after receive --paused, want paused", st)
	}
	if mon, err = qmpclient.Dial("unix", watchQMP, 2*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := mon.Connect(); err != nil {
		t.Fatal(err)
	}
	run(t, mon, "cont", nil)
	mon.Disconnect()
	if _, err := os.Stat(filepath.Dir(sock)); !os.IsNotExist(err) {
		t.Errorf("the incoming socket's directory %s is still there after the state loaded (%v)", filepath.Dir(sock), err)
	}
	if st := qmpState(t, watchQMP); st != "running" {
		t.Errorf("the hand-started QEMU is %v after the migration, want running", st)
	}
}

// waitFor polls ok every 20 ms for up to 30 s.
func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	for end := time.Now().Add(30 * time.Second); !ok(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("no %s after 30 s", what)
		}
	}
}

// TestReceiveQEMUQuits: a destination QEMU that exits while pagecast
// receive waits ends the wait at once, saying so in QEMU's own words
// (its standard error a file, as a QEMU started by hand often has).
func TestReceiveQEMUQuits(t *testing.T) {
	testutil.RequiresQEMU(t)
	dir := t.TempDir()
	dstQMP := filepath.Join(dir, "dst.sock")
	errFile, err := os.Create(filepath.Join(dir, "qemu.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer errFile.Close()
	qemu := startWaitingQEMU(t, dstQMP, errFile)
	addr := freeAddr(t)
	_, out, done := startReceive(t, dstQMP, addr)
	qemu.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-done:
		if err == nil {
			t.Fatalf("receive succeeded with its QEMU gone:\n%s", out.String())
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("receive still waits 5 s after its QEMU exited:\n%s", out.String())
	}
	want := fmt.Sprintf("the destination QEMU (pid %d) has exited, saying: qemu-system-x86_64: terminating on signal 15", qemu.Process.Pid)
	if !strings.Contains(out.String(), want) {
		t.Errorf("receive's output lacks %q:\n%s", want, out.String())
	}
}

// startWaitingQEMU starts a QEMU by hand as a user would for pagecast
// receive: 32 MiB of guest RAM in a memfd, QMP at qmp, waiting with
// -incoming defer, its standard error to stderr; and waits for its socket.
func startWaitingQEMU(t *testing.T, qmp string, stderr io.Writer, extra ...string) *exec.Cmd {
	t.Helper()
	return startMemfdQEMU(t, qmp, stderr, append([]string{"-incoming", "defer"}, extra...)...)
}

// startMemfdQEMU starts a QEMU by hand with 32 MiB of guest RAM in a memfd,
// QMP at qmp, extra, and its standard error to stderr; and waits for its
// socket.
func startMemfdQEMU(t *testing.T, qmp string, stderr io.Writer, extra ...string) *exec.Cmd {
	t.Helper()
	return startTCGQEMU(t, qmp, stderr, append([]string{"-machine", "pc,memory-backend=ram",
		"-object", "memory-backend-memfd,id=ram,size=32M,share=on"}, extra...)...)
}

// startTCGQEMU starts a QEMU by hand under TCG with 32 MiB of guest RAM,
// no display or default devices, QMP at qmp, args, and its standard error
// to stderr; and waits for its socket.
func startTCGQEMU(t *testing.T, qmp string, stderr io.Writer, args ...string) *exec.Cmd {
	t.Helper()
	args = append([]string{"-accel", "tcg", "-m", "32M", "-nographic", "-nodefaults",
		"-qmp", "unix:" + qmp + ",server=on,wait=off"}, args...)
	qemu := exec.Command("qemu-system-x86_64", args...)
	qemu.Stderr = stderr
	qemu.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := qemu.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { qemu.Process.Kill(); qemu.Wait() })
	waitFor(t, "the hand-started QEMU's QMP socket", func() bool {
		c, err := net.Dial("unix", qmp)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return qemu
}

// startBinary starts the pagecast under test with args, its standard
// output and error into one buffer; done has how it exited, and it is
// killed at the test's end if it still runs.
func startBinary(t *testing.T, args ...string) (cmd *exec.Cmd, out *syncBuffer, done chan error) {
	t.Helper()
	cmd = exec.Command(binary, args...)
	out = &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done = make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill() })
	return cmd, out, done
}

// startReceive runs `pagecast receive` into the hand-started QEMU at qmp
// and waits until it listens on addr.
func startReceive(t *testing.T, qmp, addr string, extra ...string) (*exec.Cmd, *syncBuffer, chan error) {
	t.Helper()
	recv, out, done := startBinary(t, append([]string{"receive", "--qmp", "unix:" + qmp, "--listen", "tcp:" + addr}, extra...)...)
	waitFor(t, "receive listening on "+addr, func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close() // receive logs the empty connection and waits on
		}
		return err == nil
	})
	return recv, out, done
}

// TestReceiveIntoOwnMonitor: receive is for QEMU; pointed at pagecast's own
// monitor it says so (it said only that query-memdev was not found).
func TestReceiveIntoOwnMonitor(t *testing.T) {
	own := startVMRunProc(t, "--memory", "16M")
	out, err := exec.Command(binary, "receive", "--qmp", "unix:"+own.sock, "--listen", "tcp:"+freeAddr(t)).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "is it pagecast's own monitor?") {
		t.Errorf("receive into pagecast's own monitor: %v\n%s", err, out)
	}
}

// TestMigrateMemfdSource: a source QEMU of 8.1 or later whose guest RAM is
// a memfd is refused by pagecast's engine, naming the file backend to use,
// and --engine auto takes QEMU's own migration instead, saying why (walk
// 111: its state carried the RAM, a 256 MiB guest paused 2.9 s).
func TestMigrateMemfdSource(t *testing.T) {
	if testing.Short() {
		t.Skip("starts QEMU")
	}
	testutil.RequiresQEMU(t)
	v, err := qemu.BinaryVersion("qemu-system-x86_64")
	if err != nil {
		t.Fatal(err)
	}
	if !qemu.MigratesMemfdRAM(v) {
		t.Skipf("QEMU %s leaves a memfd's RAM out of its migration under x-ignore-shared: nothing to refuse (make test's last pass runs this on QEMU 10)", v)
	}
	sock := filepath.Join(t.TempDir(), "qmp.sock")
	startMemfdQEMU(t, sock, nil, "-S")
	uri := freeTCP(t) // nothing listens: the migration QEMU's engine starts fails there
	out, err := exec.Command(binary, "migrate", "--qmp", "unix:"+sock, "--to", uri, "--engine", "pagecast").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "its guest RAM is not in a named file") ||
		!strings.Contains(string(out), "memory-backend-file,id=ram,size=SIZE,mem-path=/dev/shm/FILE,share=on") {
		t.Errorf("--engine pagecast from a memfd source of QEMU %s: %v\n%s", v, err, out)
	}
	out, _ = exec.Command(binary, "migrate", "--qmp", "unix:"+sock, "--to", uri).CombinedOutput()
	if !strings.Contains(string(out), "engine: qemu (pagecast's engine cannot run on it: ") ||
		!strings.Contains(string(out), "its guest RAM is not in a named file") {
		t.Errorf("--engine auto from a memfd source of QEMU %s:\n%s", v, out)
	}
}

// TestReceiveBackground: receive started in the same breath as the QEMU it
// is for waits for that QEMU's socket (walk 152: pasted as the README had
// it, receive failed with "no such file or directory"), and with
// --background returns once it listens; refused, it returns with status 1
// and its error said once.
func TestReceiveBackground(t *testing.T) {
	testutil.RequiresQEMU(t)
	dir := t.TempDir()
	qmp := filepath.Join(dir, "dst.sock")
	addr := freeAddr(t)
	type result struct {
		pid    int
		stderr string
		err    error
	}
	done := make(chan result, 1)
	go func() {
		pid, stderr, err := startBackground(t, dir, "receive", "--qmp", "unix:"+qmp, "--listen", "tcp:"+addr, "--background")
		done <- result{pid, stderr, err}
	}()
	// QEMU starts once receive says it waits for the socket (CI 123: a
	// receive slow to start under load found it there after a fixed 0.5 s).
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		said, _ := filepath.Glob(filepath.Join(dir, "stderr*"))
		if len(said) == 1 {
			if b, _ := os.ReadFile(said[0]); strings.Contains(string(b), "waiting for the QEMU's QMP socket to appear") {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("receive --background did not say within 30 s that it waits for the QMP socket")
		}
	}
	startWaitingQEMU(t, qmp, io.Discard)
	r := <-done
	if r.err != nil || r.pid == 0 || !strings.Contains(r.stderr, "waiting for the QEMU's QMP socket to appear") ||
		!strings.Contains(r.stderr, "pagecast: receive is ready and runs in the background") {
		t.Fatalf("receive --background started before its QEMU: %v, pid %d:\n%s", r.err, r.pid, r.stderr)
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("receive returned ready, but does not listen: %v", err)
	}
	c.Close()

	// Refused: what --qmp names is no socket.
	notSocket := filepath.Join(dir, "not.sock")
	if err := os.WriteFile(notSocket, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	pid, stderr, err := startBackground(t, dir, "--log-level", "warn", "receive", "--qmp", "unix:"+notSocket, "--listen", "tcp:"+freeAddr(t), "--background")
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 || pid != 0 || strings.Count(stderr, "pagecast: ") != 1 {
		t.Errorf("receive --background on a file that is no socket: %v, pid %d, want status 1, its error once:\n%s", err, pid, stderr)
	}
}

// TestAutoRefusalSaysRAMOnce: a hand-started QEMU under TCG whose RAM is
// not shared, no plugin loaded, is refused by --engine auto (QEMU's own
// migration loses writes there before 9.0) saying once how to give it
// shared RAM (walk 152: twice, id=mem and id=ram).
func TestAutoRefusalSaysRAMOnce(t *testing.T) {
	testutil.RequiresQEMU(t)
	sock := filepath.Join(t.TempDir(), "qmp.sock")
	startTCGQEMU(t, sock, nil, "-S") // RAM not shared: no memory backend
	out, err := exec.Command(binary, "migrate", "--qmp", "unix:"+sock, "--to", freeTCP(t), "--quiet").CombinedOutput()
	if !strings.Contains(string(out), "--engine auto does not fall back to QEMU's own migration") {
		t.Skipf("this QEMU's own migration is taken (QEMU 9.0 or later): %v\n%s", err, out)
	}
	if err == nil || strings.Count(string(out), "memory-backend-file") != 1 || !strings.Contains(string(out), "id=ram") {
		t.Errorf("auto refused for want of shared RAM: %v; want the backend's options once\n%s", err, out)
	}
}
