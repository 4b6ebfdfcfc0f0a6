package collector

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pagecast/pagecast/internal/testutil"
)

// TestAliveOutOfFiles: a profiler out of file descriptors cannot read
// /proc/PID/stat, but that does not make the VM gone (it said "has exited,
// or never ran" of a QEMU that ran on): the real error is reported, and
// only a process that is really gone is called so.
func TestAliveOutOfFiles(t *testing.T) {
	oldSignal, oldRead := signalProcess, readProcStat
	t.Cleanup(func() { signalProcess, readProcStat = oldSignal, oldRead })
	c := &vmmControl{target: Target{Kind: "qemu", PID: os.Getpid()}}
	statErr := func(err error) func(int) ([]byte, error) {
		return func(int) ([]byte, error) { return nil, &fs.PathError{Op: "open", Path: "/proc/1/stat", Err: err} }
	}

	for _, errno := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOMEM} {
		readProcStat = statErr(errno)
		err := c.alive()
		if err == nil || errors.Is(err, ErrVMGone) || strings.Contains(err.Error(), "exited") ||
			!strings.Contains(err.Error(), errno.Error()) {
			t.Errorf("/proc unreadable with %v: %v, want the real error, not the VM gone", errno, err)
		}
	}

	readProcStat = statErr(syscall.ENOENT)
	if err := c.alive(); !errors.Is(err, ErrVMGone) || !strings.Contains(err.Error(), "has exited") {
		t.Errorf("/proc/PID/stat gone: %v, want the VM gone", err)
	}
	readProcStat = oldRead
	signalProcess = func(int, syscall.Signal) error { return syscall.ESRCH }
	if err := c.alive(); !errors.Is(err, ErrVMGone) {
		t.Errorf("no such process: %v, want the VM gone", err)
	}
	signalProcess = oldSignal
	if err := c.alive(); err != nil {
		t.Errorf("a running process: %v", err)
	}
}

// TestSilentVMM: a VMM that greets, takes qmp_capabilities, then answers
// nothing (stopped, or stuck) is given up on, saying so, rather than
// holding the collector for good.
func TestSilentVMM(t *testing.T) {
	defer func(d time.Duration) { learnWait = d }(learnWait)
	learnWait = 200 * time.Millisecond
	sock := filepath.Join(t.TempDir(), "qmp.sock")
	testutil.ServeFakeQMP(t, sock, testutil.SilentAfterCapabilities)
	start := time.Now()
	_, err := connect(sock, 0)
	if err == nil || !strings.Contains(err.Error(), "the VM greeted, then answered no command in 200ms") {
		t.Fatalf("connect to a silent VMM: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("gave up after %v", d)
	}
}
