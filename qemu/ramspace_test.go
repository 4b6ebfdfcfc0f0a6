package qemu

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestRAMSpace: what a guest RAM file still needs is its size less what it
// holds (a hole holds nothing); a process killed by SIGBUS, as QEMU is by
// a write its RAM's file system has no room for, is told apart.
func TestRAMSpace(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ram")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const size = 64 << 10
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(make([]byte, 4096), 8192); err != nil { // one page of the 16
		t.Fatal(err)
	}
	free, need, err := RAMSpace(path, size)
	if err != nil {
		t.Fatal(err)
	}
	if need != size-4096 || free == 0 {
		t.Errorf("free %d, need %d; want need %d", free, need, size-4096)
	}
	if s := ramShort(path, 1<<62); s == "" {
		t.Error("a guest of 4 EiB fits")
	}
	if s := ramShort(path, size); s != "" {
		t.Errorf("a 64 KiB guest: %s", s)
	}
	err = exec.Command("sh", "-c", "kill -BUS $$").Run()
	if !BusError(err) {
		t.Errorf("a shell killed by SIGBUS: %v, not told as one", err)
	}
	if BusError(exec.Command("sh", "-c", "kill -TERM $$").Run()) || BusError(nil) {
		t.Error("SIGTERM, or no error, told as SIGBUS")
	}
}
