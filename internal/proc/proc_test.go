package proc

import (
	"net"
	"os"
	"os/exec"
	"runtime"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
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

// TestThreadCPU: a thread that spins for 200 ms has had about that much
// CPU, by schedstat; stat's utime and stime are read past a command with
// spaces and parentheses.
func TestThreadCPU(t *testing.T) {
	done := make(chan [2]time.Duration)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		tid := unix.Gettid()
		before, err := ThreadCPU(os.Getpid(), tid)
		if err != nil {
			t.Error(err)
		}
		for start := time.Now(); time.Since(start) < 200*time.Millisecond; {
		}
		after, err := ThreadCPU(os.Getpid(), tid)
		if err != nil {
			t.Error(err)
		}
		done <- [2]time.Duration{before, after}
	}()
	got := <-done
	if d := got[1] - got[0]; d < 50*time.Millisecond || d > time.Second {
		t.Errorf("a thread spinning for 200 ms had %v of CPU", d)
	}
	line := "4242 (qemu-system-x86 (vcpu) 0) S 1 4242 4242 0 -1 4194560 100 0 0 0 1234 56 0 0 20 0 3 0 100 0 0\n"
	if d, err := statCPU("stat", line); err != nil || d != 12900*time.Millisecond {
		t.Errorf("statCPU: %v, %v; want 12.9s", d, err)
	}
	if _, err := statCPU("stat", "4242 (x) S 1"); err == nil {
		t.Error("statCPU of a short line: no error")
	}
}

// TestTCPListener: the process listening on a port is found (this one),
// at its address, at the unspecified one, or at any without addresses; not
// at another address (a review walk: matched by the port alone); and a
// port nobody listens on gives 0.
func TestTCPListener(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	loop4, loop6 := net.ParseIP("127.0.0.1"), net.ParseIP("::1")
	for _, c := range []struct {
		ips  []net.IP
		want int
	}{
		{nil, os.Getpid()},
		{[]net.IP{loop4}, os.Getpid()},
		{[]net.IP{loop6}, 0},
		{[]net.IP{loop6, loop4}, os.Getpid()},
		{[]net.IP{net.ParseIP("127.0.0.2")}, 0},
	} {
		if pid := TCPListener(c.ips, port); pid != c.want {
			t.Errorf("127.0.0.1:%d asked at %v: pid %d, want %d", port, c.ips, pid, c.want)
		}
	}
	l.Close()
	if pid := TCPListener(nil, port); pid != 0 {
		t.Errorf("port %d, closed: pid %d", port, pid)
	}

	// At the unspecified address: any of the family, IPv6's both.
	for _, c := range []struct {
		network, addr string
		held, free    net.IP
	}{
		{"tcp4", "0.0.0.0:0", net.ParseIP("127.0.0.2"), loop6},
		{"tcp", "[::]:0", loop4, nil}, // dual-stack, as Go listens there
	} {
		l, err := net.Listen(c.network, c.addr)
		if err != nil {
			t.Logf("%s: %v", c.network, err)
			continue
		}
		port := l.Addr().(*net.TCPAddr).Port
		if pid := TCPListener([]net.IP{c.held}, port); pid != os.Getpid() {
			t.Errorf("%s:%d asked at %v: pid %d, want this test's", c.addr, port, c.held, pid)
		}
		if c.free != nil {
			if pid := TCPListener([]net.IP{c.free}, port); pid != 0 {
				t.Errorf("%s:%d asked at %v: pid %d, want 0", c.addr, port, c.free, pid)
			}
		}
		l.Close()
	}
}
