package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pagecast/pagecast/internal/testutil"
	"github.com/pagecast/pagecast/qmpclient"
)

// TestVMRunBackground: vm run --background returns once the VM is ready,
// a destination's port listening and a source's QMP socket answering,
// and, where the VM is refused, returns with status 1 and its error said
// once, where "&" and a loop waiting for the socket waited for good
// (walk 147).
func TestVMRunBackground(t *testing.T) {
	for _, monitor := range []string{"pagecast", "qemu"} {
		t.Run(monitor, func(t *testing.T) {
			if monitor == "pagecast" {
				testutil.RequiresKVM(t)
			} else {
				testutil.RequiresQEMU(t)
			}
			dir := t.TempDir()
			background := func(args ...string) (int, string, error) {
				t.Helper()
				return startBackground(t, dir, append([]string{"--log-level", "warn", "vm", "run", "--monitor", monitor, "--memory", "32M", "--background"}, args...)...)
			}

			port, err := freePort()
			if err != nil {
				t.Fatal(err)
			}
			pid, stderr, err := background("--incoming", fmt.Sprintf("tcp:127.0.0.1:%d", port), "--qmp", "unix:"+filepath.Join(dir, "dst.sock"))
			if err != nil || pid == 0 {
				t.Fatalf("destination: %v, pid %d:\n%s", err, pid, stderr)
			}
			// Ready means listening: no wait, no retry.
			c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
			if err != nil {
				t.Fatalf("the destination returned ready, but its port does not answer: %v", err)
			}
			c.Close()

			pidfile := filepath.Join(dir, "src.pid")
			pid, stderr, err = background("--qmp", "unix:"+filepath.Join(dir, "src.sock"), "--pidfile", pidfile)
			if err != nil || pid == 0 {
				t.Fatalf("source: %v, pid %d:\n%s", err, pid, stderr)
			}
			// As QEMU's -pidfile: the pid of what runs the VM, for
			// scripts (walk 154 grepped it out of a sentence).
			if b, err := os.ReadFile(pidfile); err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(pid) {
				t.Errorf("--pidfile holds %q (%v), want %d", b, err, pid)
			}
			srcPID := pid
			defer func() {
				stopPID(t, srcPID)
				if _, err := os.Stat(pidfile); !os.IsNotExist(err) {
					t.Errorf("--pidfile left once vm run ended: %v", err)
				}
			}()
			mon, err := qmpclient.Dial("unix", filepath.Join(dir, "src.sock"), 2*time.Second)
			if err != nil {
				t.Fatalf("the source returned ready, but its QMP socket does not answer: %v", err)
			}
			defer mon.Disconnect()
			if err := mon.Connect(); err != nil {
				t.Fatal(err)
			}
			if st := run(t, mon, "query-status", nil)["status"]; st != "running" {
				t.Errorf("source returned ready with its guest %v, want running", st)
			}

			// Refused: the socket is another process's.
			busy := filepath.Join(dir, "busy.sock")
			l, err := net.Listen("unix", busy)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			pid, stderr, err = background("--qmp", "unix:"+busy)
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 1 || pid != 0 {
				t.Fatalf("vm run on a busy socket with --background: %v, pid %d, want status 1 and no VM:\n%s", err, pid, stderr)
			}
			if !strings.Contains(stderr, "is in use by another process") || strings.Count(stderr, "pagecast: ") != 1 {
				t.Errorf("vm run on a busy socket with --background said %q, want its error once", stderr)
			}
		})
	}
}

// startBackground runs pagecast with args (a --background among them),
// waits up to 90 s for it to return, and returns the pid of what it left
// running (0: none; stopped at the test's end), its standard error, and
// its exit.
func startBackground(t *testing.T, dir string, args ...string) (pid int, stderr string, err error) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	// A file, not a pipe: what is left running keeps the command's
	// stderr, and Wait would wait for it to close.
	out, err := os.CreateTemp(dir, "stderr")
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd.Stderr = out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited, err := waitExit(cmd, 90*time.Second)
	said, _ := os.ReadFile(out.Name())
	if !exited {
		t.Fatalf("pagecast %s still waiting after 90s:\n%s", strings.Join(args, " "), said)
	}
	m := regexp.MustCompile(`runs in the background, pid (\d+) `).FindSubmatch(said)
	if m != nil {
		pid, _ = strconv.Atoi(string(m[1]))
		t.Cleanup(func() { stopPID(t, pid) })
	}
	return pid, string(said), err
}

// stopPID stops a vm run left in the background, and waits until it has
// gone (or is a zombie its new parent has yet to reap).
func stopPID(t *testing.T, pid int) {
	if pid <= 0 {
		return // kill(0) or kill(-1) would signal the test's own group, or every process
	}
	syscall.Kill(pid, syscall.SIGTERM)
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return
		}
		if f := strings.Fields(string(b)); len(f) > 2 && f[2] == "Z" {
			return
		}
	}
	syscall.Kill(pid, syscall.SIGKILL)
	t.Errorf("vm run pid %d did not stop on SIGTERM", pid)
}
