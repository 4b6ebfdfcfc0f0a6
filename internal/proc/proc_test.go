package proc

import (
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

func TestExited(t *testing.T) {
	for _, tc := range []struct {
		stat string
		want bool
	}{
		{"42 (qemu-system-x86) S 1 42", false},
		{"42 (qemu-system-x86) Z 1 42", true},
		{"42 (a) b) X 1", true},  // a command name holding ") "
		{"42 (a) Z) R 1", false}, // the last ) ends the name
		{"42 (short)", false},
		{"", false},
	} {
		if got := Exited([]byte(tc.stat)); got != tc.want {
			t.Errorf("Exited(%q) = %v, want %v", tc.stat, got, tc.want)
		}
	}
}

// TestGone: a running process is not gone; one that has exited is, both
// before it is reaped (a zombie) and after.
func TestGone(t *testing.T) {
	if Gone(os.Getpid()) {
		t.Fatal("this process is gone")
	}
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	if Gone(pid) {
		t.Fatal("a sleeping child is gone")
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !Gone(pid) { // a zombie until it is waited for
		if time.Now().After(deadline) {
			t.Fatal("a killed child not gone before it is reaped")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cmd.Wait()
	if !Gone(pid) {
		t.Error("a reaped child not gone")
	}
}
