package qemuguest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSaidToFile: the standard error of a process started by someone else,
// redirected to a file, is read from when it was opened; a pipe is not
// read at all (that would take its reader's data).
func TestSaidToFile(t *testing.T) {
	log := filepath.Join(t.TempDir(), "qemu.log")
	f, err := os.Create(log)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command("sh", "-c", `echo "warning: before" >&2; read x; printf 'first\n\nsecond  \n' >&2; sleep 5`)
	cmd.Stderr = f
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	waitFile(t, log, "warning: before")
	said, closeFile := saidToFile(cmd.Process.Pid)
	if said == nil {
		t.Fatal("no reader for a standard error that is a regular file")
	}
	defer closeFile()
	if got := said(); got != "" {
		t.Errorf("before the process wrote more: %q, want nothing (what it wrote before is not its last words)", got)
	}
	stdin.Write([]byte("go\n"))
	if got := said.lastWords(5 * time.Second); got != "first; second" {
		t.Errorf("said %q, want %q", got, "first; second")
	}

	piped := exec.Command("sleep", "5")
	if _, err := piped.StderrPipe(); err != nil {
		t.Fatal(err)
	}
	if err := piped.Start(); err != nil {
		t.Fatal(err)
	}
	defer piped.Process.Kill()
	if said, _ := saidToFile(piped.Process.Pid); said != nil {
		t.Error("a standard error that is a pipe is read")
	}
}

func TestTail(t *testing.T) {
	long := strings.Repeat("x", stderrTailBytes)
	for _, c := range []struct{ in, want string }{
		{"", ""},
		{"one\n", "one"},
		{"a\r\n\n b \n", "a; b"},
		{long + "\nlast line\n", "last line"},
	} {
		if got := tail(c.in); got != c.want {
			t.Errorf("tail(%.20q…) = %q, want %q", c.in, got, c.want)
		}
	}
}

func waitFile(t *testing.T, path, substr string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if b, _ := os.ReadFile(path); strings.Contains(string(b), substr) {
			return
		}
	}
	t.Fatalf("%s never held %q", path, substr)
}

// TestCloseRemovesSocketDirOfGoneQEMU: the incoming socket's directory,
// kept for another attempt on the same QEMU, goes once that QEMU has.
func TestCloseRemovesSocketDirOfGoneQEMU(t *testing.T) {
	dir := t.TempDir()
	sockDir := filepath.Join(dir, "pagecast-incoming-1")
	if err := os.Mkdir(sockDir, 0o700); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	d := &Dest{in: &incoming{dir: sockDir}}
	d.pid = os.Getpid() // alive: the directory stays
	d.Close()
	if _, err := os.Stat(sockDir); err != nil {
		t.Fatalf("the directory of a live QEMU's socket went: %v", err)
	}
	d.pid = cmd.Process.Pid
	d.Close()
	if _, err := os.Stat(sockDir); !os.IsNotExist(err) {
		t.Errorf("the directory of a gone QEMU's socket is still there (%v)", err)
	}
}

// TestSweepIncoming: the incoming socket's directory of a QEMU that has
// exited goes when the next is made; a live QEMU's, and one named without
// a pid, stay.
func TestSweepIncoming(t *testing.T) {
	base := t.TempDir()
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	gone := filepath.Join(base, fmt.Sprintf("%s%d-123", incomingPrefix, dead.Process.Pid))
	live := filepath.Join(base, fmt.Sprintf("%s%d-456", incomingPrefix, os.Getpid()))
	old := filepath.Join(base, incomingPrefix+"789")
	for _, d := range []string{gone, live, old} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(d, "incoming.sock"), nil, 0o600)
	}
	sweepIncoming(base)
	if _, err := os.Stat(gone); !os.IsNotExist(err) {
		t.Errorf("the directory of an exited QEMU (pid %d) is still there: %v", dead.Process.Pid, err)
	}
	for _, d := range []string{live, old} {
		if _, err := os.Stat(d); err != nil {
			t.Errorf("%s went: %v", d, err)
		}
	}
}
