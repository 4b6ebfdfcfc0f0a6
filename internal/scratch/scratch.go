package scratch

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"golang.org/x/sys/unix"
)

// lockName is the lock file in each directory. It is created under
// another name and renamed once locked, so a sweeper never takes the lock
// of a directory still being made.
const lockName = ".pagecast-lock"

var (
	mu    sync.Mutex
	locks = map[string]*os.File{} // directory → its held lock
)

// Base is where scratch directories go: /dev/shm, whose files are memory
// (a guest's RAM as QEMU shares it), or the temporary directory.
func Base() string {
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		return "/dev/shm"
	}
	return os.TempDir()
}

// Dir makes a directory in base named prefix followed by random
// characters, locked for this process until Remove; first it removes the
// directories of that prefix whose makers have died.
func Dir(base, prefix string) (string, error) {
	Sweep(base, prefix)
	dir, err := os.MkdirTemp(base, prefix)
	if err != nil {
		return "", err
	}
	f, err := lock(dir)
	if err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("lock %s: %w", dir, err)
	}
	mu.Lock()
	locks[dir] = f
	mu.Unlock()
	return dir, nil
}

func lock(dir string) (*os.File, error) {
	tmp := filepath.Join(dir, lockName+".new")
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return nil, err
	}
	if err := os.Rename(tmp, filepath.Join(dir, lockName)); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// Remove removes a directory Dir made, and its lock.
func Remove(dir string) error {
	mu.Lock()
	f := locks[dir]
	delete(locks, dir)
	mu.Unlock()
	err := os.RemoveAll(dir)
	if f != nil {
		f.Close()
	}
	return err
}

// Sweep removes the directories base/prefix* whose lock no process holds:
// their makers died. Directories without a lock (made by another program,
// or by a pagecast from before these locks) are left alone. It returns
// what it removed.
func Sweep(base, prefix string) []string {
	dirs, _ := filepath.Glob(filepath.Join(base, prefix+"*"))
	var removed []string
	for _, dir := range dirs {
		f, err := os.OpenFile(filepath.Join(dir, lockName), os.O_RDWR, 0)
		if err != nil {
			continue // no lock, or not ours to open
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			f.Close()
			continue // its maker lives
		}
		err = os.RemoveAll(dir)
		f.Close()
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			slog.Warn("could not remove a dead process's scratch directory", "dir", dir, "err", err)
			continue
		}
		slog.Info("removed a scratch directory its maker left when it died", "dir", dir)
		removed = append(removed, dir)
	}
	return removed
}
