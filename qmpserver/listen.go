package qmpserver

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// ErrInUse is returned, wrapped, by Listen when another process accepts
// connections on the socket path.
var ErrInUse = errors.New("in use by another process")

// maxSocketPath is the longest path a unix socket can be bound or
// connected to on Linux (sun_path's 108 bytes, less the NUL).
const maxSocketPath = 107

// Listen creates the unix socket path for a Server, with mode 0600: only its
// owner may connect.
//
// If path exists and a process accepts connections on it, Listen fails with an
// error wrapping ErrInUse. A socket nobody listens on any more (left by a
// monitor that crashed) is removed and replaced. Anything else at path is left
// alone and Listen fails.
//
// Closing the listener removes the socket, unless something else has replaced
// it since.
func Listen(path string) (net.Listener, error) {
	if err := ClearStaleSocket(path); err != nil {
		return nil, err
	}

	// bind(2) creates the socket file with the process umask, typically 0755 or
	// 0775, so a chmod after binding leaves a moment in which others may
	// connect; changing the umask around bind would affect files that other
	// goroutines create meanwhile, since the umask belongs to the process. So
	// the socket is bound in a fresh directory of mode 0700, where nobody else
	// can reach it, given mode 0600 there, and only then linked to path.
	// link(2) fails if path exists, so a socket another process creates at path
	// meanwhile is never replaced. The directory is beside path, on the same
	// file system, and its name is short: socket paths are limited to 107 bytes.
	tmpDir, err := os.MkdirTemp(filepath.Dir(path), ".qmp")
	if err != nil {
		return nil, fmt.Errorf("qmp socket %s: %w", path, err)
	}
	defer os.RemoveAll(tmpDir)
	tmpPath := filepath.Join(tmpDir, "s")
	bindPath := tmpPath
	if len(tmpPath) > maxSocketPath {
		// The directory's name takes up to 15 bytes more than path's
		// own: a path within the limit is bound through the directory's
		// descriptor instead (bind failed, "invalid argument", naming
		// a path the user never gave; found by a review walk).
		dir, err := os.Open(tmpDir)
		if err != nil {
			return nil, fmt.Errorf("qmp socket %s: %w", path, err)
		}
		defer dir.Close()
		bindPath = fmt.Sprintf("/proc/self/fd/%d/s", dir.Fd())
	}

	ul, err := net.ListenUnix("unix", &net.UnixAddr{Name: bindPath, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("qmp socket %s: %w", path, err)
	}
	ul.SetUnlinkOnClose(false) // the socket is removed by path, not by tmpPath
	if err := os.Chmod(tmpPath, 0o600); err != nil {
		ul.Close()
		return nil, fmt.Errorf("qmp socket %s: %w", path, err)
	}
	if err := os.Link(tmpPath, path); err != nil {
		ul.Close()
		if errors.Is(err, fs.ErrExist) && probe(path) == nil {
			return nil, fmt.Errorf("qmp socket %s is %w", path, ErrInUse)
		}
		return nil, fmt.Errorf("qmp socket %s: %w", path, err)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		ul.Close()
		return nil, fmt.Errorf("qmp socket %s: %w", path, err)
	}
	return &socketListener{UnixListener: ul, path: path, file: fi}, nil
}

// ClearStaleSocket makes sure a socket can be made at path: nothing is
// there, removing a socket that nobody listens on (left by a process that
// is gone). It fails with ErrInUse if a process accepts connections there,
// and if path is not a socket, is too long for one, or its directory is
// not there.
func ClearStaleSocket(path string) error {
	if len(path) > maxSocketPath {
		// Checked here for QEMU's -qmp too, whose bind says less.
		return fmt.Errorf("qmp socket %s: the path is %d bytes, and a unix socket's may be at most %d (Linux's sun_path): give a shorter one", path, len(path), maxSocketPath)
	}
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		if _, err := os.Stat(filepath.Dir(path)); err != nil {
			return fmt.Errorf("qmp socket %s: its directory: %w", path, err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("qmp socket %s: %w", path, err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("qmp socket %s: exists and is not a socket", path)
	}
	err = probe(path)
	switch {
	case err == nil:
		return fmt.Errorf("qmp socket %s is %w", path, ErrInUse)
	case errors.Is(err, syscall.ECONNREFUSED):
		// Nobody listens: left by a process that is gone.
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("qmp socket %s: remove stale socket: %w", path, err)
		}
		return nil
	default:
		// Perhaps a socket we may not connect to; not ours to remove.
		return fmt.Errorf("qmp socket %s: probe existing socket: %w", path, err)
	}
}

// probe connects to the socket at path and hangs up; it returns nil if a
// process accepts connections there.
func probe(path string) error {
	conn, err := net.DialTimeout("unix", path, time.Second)
	if err != nil {
		return err
	}
	return conn.Close()
}

// socketListener is the listener Listen returns: it reports path as its
// address and removes path when closed.
type socketListener struct {
	*net.UnixListener
	path   string
	file   fs.FileInfo // the socket at path, to recognise it
	remove sync.Once
}

// Addr returns the socket's path; the listener was bound elsewhere.
func (l *socketListener) Addr() net.Addr {
	return &net.UnixAddr{Name: l.path, Net: "unix"}
}

// Close stops listening and removes the socket, if path still names it.
func (l *socketListener) Close() error {
	err := l.UnixListener.Close()
	l.remove.Do(func() {
		if fi, statErr := os.Lstat(l.path); statErr == nil && os.SameFile(fi, l.file) {
			os.Remove(l.path)
		}
	})
	return err
}
