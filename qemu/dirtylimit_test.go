package qemu

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// limitMonitor records the QMP commands it is sent.
type limitMonitor struct {
	mu   sync.Mutex
	cmds []string
}

func (m *limitMonitor) Run(b []byte) ([]byte, error) {
	var req struct {
		Execute string `json:"execute"`
	}
	if err := json.Unmarshal(b, &req); err != nil {
		return nil, err
	}
	m.mu.Lock()
	m.cmds = append(m.cmds, req.Execute)
	m.mu.Unlock()
	return []byte(`{"return":{}}`), nil
}

// TestDirtyLoggingShared: QEMU's dirty limit is cancelled by the last of
// its holders only, whatever the order they let go in; a profile's end
// cancelled it under a migration, whose dirty log then saw nothing.
func TestDirtyLoggingShared(t *testing.T) {
	defer func(d string) { LockDir = d }(LockDir)
	LockDir = t.TempDir()
	pid := os.Getpid()
	for _, order := range [][2]int{{0, 1}, {1, 0}} {
		mon := &limitMonitor{}
		var holds [2]*DirtyLogging
		for i := range holds {
			h, err := HoldDirtyLogging(mon, pid)
			if err != nil {
				t.Fatal(err)
			}
			holds[i] = h
		}
		if err := holds[order[0]].Release(); err != nil {
			t.Fatal(err)
		}
		if slices.Contains(mon.cmds, "cancel-vcpu-dirty-limit") {
			t.Errorf("release %d of two holds cancelled the dirty limit the other holds: %v", order[0], mon.cmds)
		}
		if err := holds[order[1]].Release(); err != nil {
			t.Fatal(err)
		}
		if err := holds[order[1]].Release(); err != nil { // twice: nothing more
			t.Fatal(err)
		}
		want := []string{"set-vcpu-dirty-limit", "set-vcpu-dirty-limit", "cancel-vcpu-dirty-limit"}
		if !slices.Equal(mon.cmds, want) {
			t.Errorf("commands %v, want %v", mon.cmds, want)
		}
	}
	// A holder gone without letting go (killed: the kernel drops its
	// lock) leaves the next release the last.
	mon := &limitMonitor{}
	a, err := HoldDirtyLogging(mon, pid)
	if err != nil {
		t.Fatal(err)
	}
	b, err := HoldDirtyLogging(mon, pid)
	if err != nil {
		t.Fatal(err)
	}
	a.f.Close()
	if err := b.Release(); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(mon.cmds, "cancel-vcpu-dirty-limit") {
		t.Errorf("the last live holder's release did not cancel the limit: %v", mon.cmds)
	}
	// Lock files of QEMUs that have exited are swept.
	gone := filepath.Join(LockDir, "dirty-limit-2147483647.lock")
	if err := os.WriteFile(gone, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := HoldDirtyLogging(mon, pid)
	if err != nil {
		t.Fatal(err)
	}
	c.Release()
	if _, err := os.Stat(gone); !os.IsNotExist(err) {
		t.Errorf("%s left (%v)", gone, err)
	}
}

// TestDirtyLoggingLockTrouble: a process stuck letting go of the limit
// (its lock exclusive) holds a new holder back for lockWait, not for
// ever; a LockDir that cannot be made leaves the limit unshared, as
// before locks, rather than failing the profile or migration (walk 45).
func TestDirtyLoggingLockTrouble(t *testing.T) {
	defer func(d string) { LockDir = d }(LockDir)
	LockDir = t.TempDir()
	pid := os.Getpid()
	f, err := OpenLock("dirty-limit", pid)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	defer func(w time.Duration) { lockWait = w }(lockWait)
	lockWait = 200 * time.Millisecond
	mon := &limitMonitor{}
	start := time.Now()
	if _, err := HoldDirtyLogging(mon, pid); err == nil || !strings.Contains(err.Error(), "has held it for") {
		t.Errorf("a hold behind a stuck release: %v", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("gave up after %v", took)
	}
	if len(mon.cmds) != 0 {
		t.Errorf("commands sent: %v", mon.cmds)
	}

	LockDir = "/dev/null/pagecast"
	h, err := HoldDirtyLogging(mon, pid)
	if err != nil {
		t.Fatalf("without a lock directory: %v", err)
	}
	if err := h.Release(); err != nil {
		t.Fatal(err)
	}
	if want := []string{"set-vcpu-dirty-limit", "cancel-vcpu-dirty-limit"}; !slices.Equal(mon.cmds, want) {
		t.Errorf("commands %v, want %v", mon.cmds, want)
	}
}
