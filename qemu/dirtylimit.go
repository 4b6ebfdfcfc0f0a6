package qemu

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// DirtyLimitRate is the per-vCPU dirty limit (MB/s) pagecast sets on a
// KVM QEMU to keep its dirty logging on and its dirty ring collected (the
// kernel then pushes every write to the ring, where eBPF sees it): far
// above what any vCPU dirties, so nothing is throttled.
const DirtyLimitRate = 1 << 20

// LockDir holds the lock files by which pagecast processes share a QEMU's
// dirty limit.
var LockDir = "/run/pagecast"

// DirtyLogging is one process's hold on a KVM QEMU's dirty logging.
//
// QEMU has one dirty limit for all its clients, and cancelling it turns
// its dirty logging off: a profile that ended beside a migration of the
// same QEMU left the migration's dirty log blind (found when /dev/kvm came
// back; the destination's memory then differs). So every holder takes a
// shared flock on the QEMU's lock file before it sets the limit, and the
// last to let go, the lock then exclusive, cancels it. The kernel drops a
// killed holder's lock; the limit it leaves is harmless.
type DirtyLogging struct {
	mon Runner
	f   *os.File
}

// HoldDirtyLogging keeps the dirty logging of the KVM QEMU pid, monitored
// by mon, on until Release.
func HoldDirtyLogging(mon Runner, pid int) (*DirtyLogging, error) {
	f, err := OpenLock("dirty-limit", pid)
	if err != nil {
		// Without a lock file (LockDir not writable) it holds the limit
		// alone, as before locks: its release cancels it.
		slog.Warn("QEMU's dirty limit is not shared with other pagecast processes (no lock file): when this one stops it turns QEMU's dirty logging off, "+
			"and a profile or migration of this QEMU running then sees no more writes", "err", err)
		f = nil
	} else if err := sharedLock(f, lockWait); err != nil {
		f.Close()
		return nil, err
	}
	if err := QMP(mon, "set-vcpu-dirty-limit", map[string]any{"dirty-rate": DirtyLimitRate}, nil); err != nil {
		release(mon, f)
		return nil, fmt.Errorf("keep QEMU's dirty logging on (QEMU needs -accel kvm,dirty-ring-size=N): %w", err)
	}
	return &DirtyLogging{mon: mon, f: f}, nil
}

// lockWait is how long HoldDirtyLogging waits for a process letting go of
// the dirty limit (its exclusive lock held while it cancels it, a QMP
// command): one stopped or stuck there held every later profile and
// migration of the QEMU for good, Ctrl-C or not (found by a review walk).
var lockWait = 10 * time.Second

// Release lets go of the hold, and cancels QEMU's dirty limit where no
// other process holds it.
func (d *DirtyLogging) Release() error {
	if d == nil || d.mon == nil {
		return nil
	}
	mon, f := d.mon, d.f
	d.mon, d.f = nil, nil
	return release(mon, f)
}

func release(mon Runner, f *os.File) error {
	if f == nil {
		return QMP(mon, "cancel-vcpu-dirty-limit", nil, nil)
	}
	defer f.Close()
	// Taken exclusive only where no other holder has it shared; a holder
	// arriving meanwhile waits for the close, then sets the limit again.
	switch last, err := TryLock(f, syscall.LOCK_EX); {
	case err != nil:
		return err
	case !last:
		return nil // another process still holds the dirty logging
	}
	return QMP(mon, "cancel-vcpu-dirty-limit", nil, nil)
}

// TryLock takes f's flock, how being syscall.LOCK_EX or LOCK_SH, without
// waiting: false where another process holds it so that it cannot be
// taken.
func TryLock(f *os.File, how int) (bool, error) {
	for {
		err := syscall.Flock(int(f.Fd()), how|syscall.LOCK_NB)
		switch {
		case err == nil:
			return true, nil
		case errors.Is(err, syscall.EWOULDBLOCK):
			return false, nil
		case !errors.Is(err, syscall.EINTR):
			return false, fmt.Errorf("lock %s: %w", f.Name(), err)
		}
	}
}

// LockPath is QEMU pid's lock file of kind: LockDir/KIND-PID.lock.
func LockPath(kind string, pid int) string {
	return filepath.Join(LockDir, fmt.Sprintf("%s-%d.lock", kind, pid))
}

// OpenLock opens QEMU pid's lock file of kind (LockDir/KIND-PID.lock),
// making LockDir where it is missing, and removes the lock files of QEMUs
// that have exited. The caller flocks it.
func OpenLock(kind string, pid int) (*os.File, error) {
	if err := os.MkdirAll(LockDir, 0o700); err != nil {
		return nil, fmt.Errorf("lock QEMU %d's %s: %w", pid, kind, err)
	}
	sweepLocks()
	path := LockPath(kind, pid)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock QEMU %d's %s: %w", pid, kind, err)
	}
	return f, nil
}

// sharedLock takes f's shared flock, waiting at most wait for an
// exclusive holder to let go.
func sharedLock(f *os.File, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	for {
		switch ok, err := TryLock(f, syscall.LOCK_SH); {
		case err != nil:
			return err
		case ok:
			return nil
		case time.Now().After(deadline):
			return fmt.Errorf("lock %s: another pagecast process has held it for %v as it cancels this QEMU's dirty limit (stopped, or its QEMU not answering?); "+
				"see fuser -v %s", f.Name(), wait, f.Name())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// sweepLocks removes the lock files of QEMUs that have exited.
func sweepLocks() {
	files, _ := filepath.Glob(filepath.Join(LockDir, "*-*.lock"))
	for _, file := range files {
		name := strings.TrimSuffix(filepath.Base(file), ".lock")
		pid, err := strconv.Atoi(name[strings.LastIndexByte(name, '-')+1:])
		if err != nil {
			continue
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); errors.Is(err, os.ErrNotExist) {
			os.Remove(file)
		}
	}
}
