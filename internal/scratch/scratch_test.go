package scratch

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestSweep: a directory whose maker died (its lock released, the files
// left) goes when the next of its kind is made; one whose maker lives, one
// being made and one without a lock stay.
func TestSweep(t *testing.T) {
	base := t.TempDir()
	live, err := Dir(base, "x-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(live, "ram"), []byte("guest"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A maker that died: a process that made a directory and was killed.
	dead := filepath.Join(base, "x-dead")
	if err := os.Mkdir(dead, 0o700); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dead, "ram"), []byte("guest"), 0o600)
	os.WriteFile(filepath.Join(dead, lockName), nil, 0o600)
	cmd := exec.Command("flock", "-o", filepath.Join(dead, lockName), "sleep", "60") // -o: the lock is flock(1)'s own, not sleep's
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Skipf("flock(1): %v", err)
	}
	t.Cleanup(func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }) // and its sleep
	for held := false; !held; {                                           // until flock(1) holds it
		f, err := os.Open(filepath.Join(dead, lockName))
		if err != nil {
			t.Fatal(err)
		}
		held = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) != nil
		f.Close()
		if !held {
			time.Sleep(5 * time.Millisecond)
		}
	}
	// Being made: its lock not yet renamed into place.
	making := filepath.Join(base, "x-making")
	os.Mkdir(making, 0o700)
	os.WriteFile(filepath.Join(making, lockName+".new"), nil, 0o600)
	// Someone else's, without a lock.
	other := filepath.Join(base, "x-other")
	os.Mkdir(other, 0o700)

	if got := Sweep(base, "x-"); len(got) != 0 {
		t.Fatalf("swept %q while every maker lives", got)
	}
	cmd.Process.Kill()
	cmd.Wait()
	// The maker is dead once no one holds its lock: flock(1), killed as
	// it forks sleep, may leave the lock with the child for a moment,
	// until it closes it (-o); a CI run under load swept too early once.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		f, err := os.Open(filepath.Join(dead, lockName))
		if err != nil {
			t.Fatal(err)
		}
		free := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) == nil
		f.Close()
		if free {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the killed flock(1)'s lock is still held after 5 s")
		}
	}
	next, err := Dir(base, "x-")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{live, next, making, other} {
		if _, err := os.Stat(d); err != nil {
			t.Errorf("%s removed: %v", d, err)
		}
	}
	if _, err := os.Stat(dead); !os.IsNotExist(err) {
		t.Errorf("the dead maker's directory is left (%v)", err)
	}
	if err := Remove(live); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(live); !os.IsNotExist(err) {
		t.Errorf("Remove left %s (%v)", live, err)
	}
	entries, _ := os.ReadDir(base)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if slices.Contains(names, filepath.Base(live)) {
		t.Errorf("left: %q", names)
	}
}
