package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// writeOutput writes path through write, as its -o says: into the file
// path names, following symbolic links.
//
// A regular file, or a new one, is written into a temporary file beside
// it, synced and renamed over it only once write succeeds: a failed export
// or import leaves no partial file, nor does one ended by SIGINT, SIGTERM
// or SIGHUP (the temporary file is removed, then pagecast exits as the
// signal would have it). Where path is a symbolic link, that is done to the
// file the link points to, so the link stays a link.
//
// A device, FIFO or other file that is not regular is written into
// directly, as the shell's > does: a file renamed over it would replace it
// (/dev/null became a regular file) or leave its reader nothing (a FIFO).
// A directory is refused.
func writeOutput(path string, write func(io.Writer) error) error {
	target, fi, err := outputFile(path)
	if err != nil {
		return err
	}
	if fi != nil && !fi.Mode().IsRegular() {
		return writeInto(target, write)
	}
	return writeReplace(target, write)
}

// checkOutput checks, before the work whose output it is, that path can be
// written as writeOutput writes it, and names the flag that gave it: not
// a directory, and in a directory that exists (walk 136: trace import's
// "/nonexistent/x.pct: no such file or directory", after the import).
func checkOutput(flag, path string) error {
	target, _, err := outputFile(path)
	if err != nil {
		return fmt.Errorf("%s %w", flag, err)
	}
	if _, err := os.Stat(filepath.Dir(target)); err != nil {
		return fmt.Errorf("%s %s: its directory: %w", flag, path, err)
	}
	return nil
}

// outputFile returns the file writeOutput writes for path, and what it is
// (nil where it does not exist yet): path itself, or the end of its chain
// of symbolic links, which need not exist either (a dangling link's target
// is created, as the shell's > creates it). A directory is an error that
// names path, as -o's other errors do.
func outputFile(path string) (target string, fi fs.FileInfo, err error) {
	target = path
	for range 40 { // Linux's limit on the links one lookup follows
		fi, err = os.Lstat(target)
		if errors.Is(err, fs.ErrNotExist) {
			return target, nil, nil
		}
		if err != nil {
			var pe *fs.PathError
			if errors.As(err, &pe) {
				err = pe.Err // path, not lstat and the link's target, is what the user gave
			}
			return "", nil, fmt.Errorf("%s: %w", path, err)
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			if fi.IsDir() {
				return "", nil, fmt.Errorf("%s: is a directory", path)
			}
			return target, fi, nil
		}
		link, err := os.Readlink(target)
		if err != nil {
			return "", nil, fmt.Errorf("%s: %w", path, err)
		}
		if !strings.HasPrefix(link, "/") {
			// Relative to the link's directory, joined as text and not
			// cleaned: a .. in it is resolved by the kernel after the
			// directory's own links, as opening the link would.
			link = target[:strings.LastIndexByte(target, '/')+1] + link
		}
		target = link
	}
	return "", nil, fmt.Errorf("%s: too many levels of symbolic links", path)
}

// writeReplace writes path, a regular file or a new one, through a
// temporary file renamed over it (see writeOutput).
func writeReplace(path string, write func(io.Writer) error) error {
	// The handler is in place before the file exists, so no signal can
	// fall between its creation and its guard.
	tmp := fmt.Sprintf("%s.%d.tmp", path, os.Getpid())
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	done := make(chan struct{})
	defer func() {
		signal.Stop(sigs)
		close(done)
	}()
	go func() {
		select {
		case sig := <-sigs:
			os.Remove(tmp)
			fmt.Fprintf(os.Stderr, "pagecast: %v: stopped, %s not written\n", sig, path)
			os.Exit(128 + int(sig.(syscall.Signal)))
		case <-done:
		}
	}()
	// A file replaced keeps its permissions (a trace made private stayed
	// private only until written again: found by a review walk) and, as
	// far as this user may give it, its owner; the new file is this
	// user's alone until then.
	old, statErr := os.Stat(path)
	mode := fs.FileMode(0o666)
	if statErr == nil {
		mode = 0o600
	}
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err // the temporary file's name is not the user's
		}
		return fmt.Errorf("%s: %w", path, err)
	}
	defer os.Remove(tmp) // after a successful rename, a no-op
	if statErr == nil {
		if st, ok := old.Sys().(*syscall.Stat_t); ok {
			_ = f.Chown(int(st.Uid), int(st.Gid)) // refused unless root or already so
		}
		if err := f.Chmod(old.Mode().Perm()); err != nil {
			f.Close()
			return fmt.Errorf("%s: keep its permissions: %w", path, err)
		}
	}
	if err := write(f); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// writeInto writes path, a device, FIFO or the like, in place. It is not
// synced: fsync fails on pipes and most devices, and there is no file to
// keep whole. A FIFO's open waits for a reader, as the shell's > does.
func writeInto(path string, write func(io.Writer) error) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if err := write(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// tableMS is v milliseconds as pagecast prints a duration beside others:
// seconds to the millisecond from a second up ("5.600s", not "5.6s" above
// "5.584s", walk 104; "1m1.000s", not "1m1s" beside "59.975s", walk 131),
// and under a second as Go says it ("85ms"). Auto's line of prediction
// against outcome and a migration's summary say it so too, as the table
// above them does (they said "22.5s" under its "22.500s").
func tableMS(v int64) string {
	d := time.Duration(v) * time.Millisecond
	if d < time.Second {
		return d.String()
	}
	h, m := d/time.Hour, (d%time.Hour)/time.Minute
	s := fmt.Sprintf("%.3fs", (d % time.Minute).Seconds())
	switch {
	case h > 0:
		return fmt.Sprintf("%dh%dm%s", h, m, s)
	case m > 0:
		return fmt.Sprintf("%dm%s", m, s)
	}
	return s
}
