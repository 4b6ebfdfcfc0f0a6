package qemu

import (
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/pagecast/pagecast/internal/units"
)

// RAMSpace is what the file system holding the guest RAM file at path
// has free, and what the file still needs to hold size bytes: size less
// what it has allocated (a guest's memory never written is a hole).
func RAMSpace(path string, size uint64) (free, need uint64, err error) {
	var fs unix.Statfs_t
	if err := unix.Statfs(filepath.Dir(path), &fs); err != nil {
		return 0, 0, fmt.Errorf("statfs %s: %w", filepath.Dir(path), err)
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, 0, fmt.Errorf("stat %s: %w", path, err)
	}
	if fs.Blocks == 0 {
		return 0, 0, errNoLimit
	}
	held := uint64(st.Blocks) * 512
	return fs.Bavail * uint64(fs.Bsize), size - min(size, held), nil
}

// errNoLimit is a file system with no size limit (a tmpfs of size=0, a
// hugetlbfs without one): it reports no blocks, and nothing free (review
// 75: read as full, every vm run there was warned of).
var errNoLimit = errors.New("a file system of no size limit: its room is the memory's")

// ramShort says, where the guest RAM file at path cannot grow to size
// bytes on its file system, how short it falls; "" where it can, or it
// cannot tell.
func ramShort(path string, size uint64) string {
	free, need, err := RAMSpace(path, size)
	if err != nil || free >= need {
		return ""
	}
	return fmt.Sprintf("the guest's RAM, %s, is in %s, whose file system has %s free where %s more may be written",
		units.FormatBytes(float64(size)), filepath.Dir(path), units.FormatBytes(float64(free)), units.FormatBytes(float64(need)))
}

// RAMShort is ramShort for the VM's RAM file: said at Start, as a
// warning, and with QEMU's exit by SIGBUS, which a write past what its
// file system holds raises (a walk saw "qemu (the VM) ended: signal: bus
// error", and nothing on why).
func (v *VM) RAMShort() string { return ramShort(v.ramPath, uint64(len(v.mem))) }

// BusError says whether err is the exit of a process killed by SIGBUS.
func BusError(err error) bool {
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		return false
	}
	ws, ok := exit.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGBUS
}
