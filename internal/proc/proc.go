package proc

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"
)

// Gone reports whether process pid has exited: no such process, or one
// that has ended and waits to be reaped. Any other failure to tell (out of
// file descriptors, say) is not taken as gone.
func Gone(pid int) bool {
	if errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) {
		return true
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ESRCH)
	}
	return Exited(stat)
}

// Exited reports whether a /proc/PID/stat line says its process has ended
// (a zombie, or dead). The state letter follows the command name in
// parentheses, which may itself hold spaces and parentheses.
func Exited(stat []byte) bool {
	i := bytes.LastIndexByte(stat, ')')
	return i >= 0 && i+2 < len(stat) && (stat[i+2] == 'Z' || stat[i+2] == 'X')
}
