package tcg

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/pagecast/pagecast/internal/proc"
)

// shmDir and shmPrefix make DefaultShm's paths.
const (
	shmDir    = "/dev/shm"
	shmPrefix = "pagecast-tcg."
)

// RemoveStale removes the plugin areas left in /dev/shm by QEMUs that did
// not exit cleanly (the plugin removes its area at QEMU's exit, which a
// QEMU killed with SIGKILL never reaches: 135 KB a 256 MiB guest, kept
// until reboot). It returns the paths removed. Attach and `pagecast
// plugin` call it.
func RemoveStale() ([]string, error) { return removeStaleIn(shmDir) }

// removeStaleIn removes dir's files named as DefaultShm names them whose
// QEMU is gone: the file is a plugin area (its magic) of the pid in its
// name (its header's pid), that process no longer exists, and no reader
// holds the area's lock. Anything else is left alone.
func removeStaleIn(dir string) ([]string, error) {
	names, err := filepath.Glob(filepath.Join(dir, shmPrefix+"*"))
	if err != nil {
		return nil, fmt.Errorf("look for stale plugin areas: %w", err)
	}
	var removed []string
	for _, path := range names {
		pid, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(path), shmPrefix))
		if err != nil || pid <= 0 || !proc.Gone(pid) {
			continue // not DefaultShm's name, or its QEMU may still run
		}
		if stale, err := isStaleArea(path, pid); err != nil || !stale {
			continue
		}
		if err := os.Remove(path); err != nil {
			if !errors.Is(err, os.ErrNotExist) {
				slog.Warn("remove the plugin area of a QEMU that has gone", "path", path, "err", err)
			}
			continue
		}
		slog.Info("removed the plugin area of a QEMU that has gone", "path", path, "qemu-pid", pid)
		removed = append(removed, path)
	}
	return removed, nil
}

// isStaleArea says whether path is the plugin's area of QEMU pid that no
// one reads: its header has the plugin's magic and that pid, and its lock
// is free.
func isStaleArea(path string, pid int) (bool, error) {
	f, err := os.OpenFile(path, os.O_RDWR|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return false, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		return false, err
	}
	var hdr [64]byte
	if _, err := f.ReadAt(hdr[:], 0); err != nil {
		return false, err
	}
	if le32(hdr[offMagic:]) != Magic || int(le32(hdr[offPID:])) != pid {
		return false, nil
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return false, nil // a reader still holds it
	}
	return true, nil
}
