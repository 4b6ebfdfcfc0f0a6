package qmpserver

import (
	"context"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestListenMode(t *testing.T) {
	// A umask that would leave the socket open to all must not matter.
	old := syscall.Umask(0)
	defer syscall.Umask(old)

	dir := t.TempDir()
	path := filepath.Join(dir, "qmp.sock")
	l, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode = %v, want a socket with 0600", fi.Mode())
	}
	if got := l.Addr().String(); got != path {
		t.Errorf("Addr = %s, want %s", got, path)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("directory holds %d entries, want only the socket: %v", len(entries), entries)
	}

	// It accepts connections by its path.
	accepted := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if err == nil {
			c.Close()
		}
		accepted <- err
	}()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	c.Close()
	if err := <-accepted; err != nil {
		t.Fatalf("accept: %v", err)
	}

	if err := l.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket left behind after Close: %v", err)
	}
}

func TestListenInUse(t *testing.T) {
	srv := startServer(t, nil)
	before, err := os.Lstat(srv.path)
	if err != nil {
		t.Fatal(err)
	}

	_, err = Listen(srv.path)
	if !errors.Is(err, ErrInUse) {
		t.Fatalf("second Listen: err = %v, want ErrInUse", err)
	}
	if want := "qmp socket " + srv.path + " is in use by another process"; err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}

	after, err := os.Lstat(srv.path)
	if err != nil || !os.SameFile(before, after) {
		t.Fatalf("the live socket was touched: %v", err)
	}
	connectGoQEMU(t, srv.path) // and still serves
}

func TestListenStaleSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "qmp.sock")
	old, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	old.SetUnlinkOnClose(false)
	old.Close() // as a crashed monitor leaves it
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("no stale socket to test with: %v", err)
	}

	l, err := Listen(path)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	srv := New(nil, "")
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, l) }()
	defer func() {
		cancel()
		<-served
	}()
	connectGoQEMU(t, path)
}

func TestListenRefusesOtherFiles(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "qmp.sock")
	if err := os.WriteFile(file, []byte("precious"), 0o644); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(dir, "sub")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}

	for _, path := range []string{file, sub} {
		t.Run(filepath.Base(path), func(t *testing.T) {
			_, err := Listen(path)
			if err == nil {
				t.Fatal("Listen succeeded")
			}
			if errors.Is(err, ErrInUse) {
				t.Errorf("err = %v, should not be ErrInUse", err)
			}
			t.Log(err)
		})
	}
	if b, err := os.ReadFile(file); err != nil || string(b) != "precious" {
		t.Errorf("file changed: %q, %v", b, err)
	}
	if fi, err := os.Stat(sub); err != nil || !fi.IsDir() {
		t.Errorf("directory changed: %v", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 2 {
		t.Errorf("directory holds %d entries, want 2: %v", len(entries), entries)
	}
}

func TestCloseKeepsReplacement(t *testing.T) {
	path := filepath.Join(t.TempDir(), "qmp.sock")
	l, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	// Someone removed the socket and put something else there.
	os.Remove(path)
	if err := os.WriteFile(path, []byte("new"), 0o600); err != nil {
		t.Fatal(err)
	}
	l.Close()
	if b, err := os.ReadFile(path); err != nil || string(b) != "new" {
		t.Errorf("Close removed a file it did not create: %q, %v", b, err)
	}
}

func TestServeRemovesSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "qmp.sock")
	l, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- New(nil, "").Serve(ctx, l) }()
	dialNegotiated(t, path)
	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Serve = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return")
	}
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket left behind: %v", err)
	}
}

func TestServeReturnsWhenListenerCloses(t *testing.T) {
	path := filepath.Join(t.TempDir(), "qmp.sock")
	l, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- New(nil, "").Serve(context.Background(), l) }()
	c := dialNegotiated(t, path)
	l.Close()
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Serve = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return")
	}
	c.expectClosed()
}

// TestListenLongPath: a path longer than a unix socket's may be is named,
// not bind's "invalid argument".
func TestListenLongPath(t *testing.T) {
	dir := filepath.Join(t.TempDir(), strings.Repeat("d", 100))
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	_, err := Listen(filepath.Join(dir, "qmp.sock"))
	if err == nil || !strings.Contains(err.Error(), "a unix socket's may be at most 107") {
		t.Fatalf("Listen on a long path: %v", err)
	}
}

// TestListenLongestPath: a path of up to 107 bytes, the most a unix
// socket's may be, is listened on, with mode 0600, and removed at Close
// (Listen bound in a directory beside it, whose name took the path past
// the limit from 93 bytes up: bind's "invalid argument").
func TestListenLongestPath(t *testing.T) {
	for _, n := range []int{92, 100, maxSocketPath} {
		base := t.TempDir()
		dir := base + "/" + strings.Repeat("d", n-len(base)-len("/")-len("/q"))
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, "q")
		if len(path) != n {
			t.Fatalf("path of %d bytes, want %d", len(path), n)
		}
		l, err := Listen(path)
		if err != nil {
			t.Fatalf("Listen on a path of %d bytes: %v", n, err)
		}
		if fi, err := os.Lstat(path); err != nil || fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != 0o600 {
			t.Errorf("%d bytes: %v (%v), want a socket of mode 0600", n, fi.Mode(), err)
		}
		go func() {
			if c, err := l.Accept(); err == nil {
				c.Close()
			}
		}()
		if err := probe(path); err != nil {
			t.Errorf("%d bytes: connect: %v", n, err)
		}
		l.Close()
		if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%d bytes: the socket is left after Close (%v)", n, err)
		}
	}
}
