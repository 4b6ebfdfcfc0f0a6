package proc

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
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

// Stopped reports whether process pid is stopped by a signal (SIGSTOP,
// SIGTSTP: state T) or by a tracer (t): every one of its threads, as kill
// returns before they all have stopped, and one still running can still
// answer (CI 57: a thread accepted and greeted after the SIGSTOP).
func Stopped(pid int) bool {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil || len(tasks) == 0 {
		return false
	}
	for _, task := range tasks {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", pid, task.Name()))
		if err != nil {
			return false
		}
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 || i+2 >= len(stat) || stat[i+2] != 'T' && stat[i+2] != 't' {
			return false
		}
	}
	return true
}

// ThreadCPU is the CPU time thread tid of process pid has had, from
// /proc/PID/task/TID/schedstat (nanoseconds), or stat's utime and stime
// (ticks of 10 ms) where the kernel keeps no schedstat.
func ThreadCPU(pid, tid int) (time.Duration, error) {
	dir := fmt.Sprintf("/proc/%d/task/%d/", pid, tid)
	if b, err := os.ReadFile(dir + "schedstat"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 0 {
			if ns, err := strconv.ParseInt(f[0], 10, 64); err == nil {
				return time.Duration(ns), nil
			}
		}
	}
	b, err := os.ReadFile(dir + "stat")
	if err != nil {
		return 0, fmt.Errorf("thread CPU time: %w", err)
	}
	return statCPU(dir+"stat", string(b))
}

// statCPU is the utime and stime of a /proc/PID/stat line s, read from
// file. The command, field 2, is in parentheses and may hold spaces and
// parentheses: the fields after its last ")" start at field 3; utime and
// stime are 14 and 15, in ticks of USER_HZ, 100 a second.
func statCPU(file, s string) (time.Duration, error) {
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("thread CPU time: %s: too few fields", file)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("thread CPU time: %s: utime %q, stime %q", file, f[11], f[12])
	}
	return time.Duration(ut+st) * 10 * time.Millisecond, nil
}

// SocketPIDs maps the inode of every socket a process has open to that
// process (one of them, where several share it), from /proc/PID/fd;
// another user's processes are left out where /proc hides their files.
func SocketPIDs() map[uint64]int {
	pids := make(map[uint64]int)
	procs, _ := os.ReadDir("/proc")
	for _, d := range procs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		dir := fmt.Sprintf("/proc/%d/fd", pid)
		fds, _ := os.ReadDir(dir)
		for _, fd := range fds {
			link, err := os.Readlink(dir + "/" + fd.Name())
			if err != nil {
				continue
			}
			ino, ok := strings.CutPrefix(link, "socket:[")
			if !ok {
				continue
			}
			if n, err := strconv.ParseUint(strings.TrimSuffix(ino, "]"), 10, 64); err == nil {
				pids[n] = pid
			}
		}
	}
	return pids
}

// Command is process pid's command line, spaces between its arguments;
// "" where it cannot be read.
func Command(pid int) string {
	cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return strings.TrimSpace(strings.ReplaceAll(string(cmd), "\x00", " "))
}

// TCPListener is the process listening on TCP port port of this host at
// one of the addresses ips, tried in their order (at that address, or at
// the unspecified one of its family, or at IPv6's, which takes IPv4 too
// unless the socket is IPv6-only), from /proc/net/tcp{,6} and SocketPIDs;
// without ips, at any address. 0 where none is found. (Matched by the port
// alone, a pagecast listening on 127.0.0.1 was taken for the holder of
// [::1]'s, where a QEMU listened: a review walk.)
func TCPListener(ips []net.IP, port int) int {
	type listener struct {
		addr  net.IP
		inode uint64
	}
	var ls []listener
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(table)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			// sl local_address rem_address st ... uid timeout inode
			f := strings.Fields(line)
			if len(f) < 10 || f[3] != "0A" { // 0A: LISTEN
				continue
			}
			hexAddr, hexPort, ok := strings.Cut(f[1], ":")
			p, err := strconv.ParseUint(hexPort, 16, 16)
			n, ierr := strconv.ParseUint(f[9], 10, 64)
			if a := procAddr(hexAddr); ok && err == nil && ierr == nil && int(p) == port && a != nil {
				ls = append(ls, listener{a, n})
			}
		}
	}
	if len(ls) == 0 {
		return 0
	}
	pids := SocketPIDs()
	// The kernel gives a connection to the listener at its very address
	// before one at the unspecified address.
	holds := func(l listener, ip net.IP, exact bool) bool {
		switch {
		case ip == nil || l.addr.Equal(ip):
			return true
		case exact:
			return false
		case l.addr.Equal(net.IPv6unspecified):
			return true
		default:
			return l.addr.Equal(net.IPv4zero) && ip.To4() != nil
		}
	}
	if len(ips) == 0 {
		ips = []net.IP{nil}
	}
	for _, ip := range ips {
		for _, exact := range []bool{true, false} {
			for _, l := range ls {
				if pid, ok := pids[l.inode]; ok && holds(l, ip, exact) {
					return pid
				}
			}
		}
	}
	return 0
}

// procAddr is an address of /proc/net/tcp{,6}: hexadecimal, in 32-bit
// words of this host's byte order (little-endian, as on x86 and arm64);
// nil where it is not one.
func procAddr(h string) net.IP {
	b, err := hex.DecodeString(h)
	if err != nil || (len(b) != net.IPv4len && len(b) != net.IPv6len) {
		return nil
	}
	for i := 0; i < len(b); i += 4 {
		b[i], b[i+1], b[i+2], b[i+3] = b[i+3], b[i+2], b[i+1], b[i]
	}
	return net.IP(b)
}
