package qemuguest

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// stderrTailBytes is how much of QEMU's standard error a failed restore
// quotes: its last words, which say why the state did not load.
const stderrTailBytes = 1024

// qemuSaid returns what QEMU has written to its standard error since it
// was made, at most its last stderrTailBytes; "" where that is unknown.
type qemuSaid func() string

// saidSince is what a QEMU pagecast started (whose standard error it
// holds) wrote after this call.
func saidSince(all func() string) qemuSaid {
	from := len(all())
	return func() string {
		s := all()
		if len(s) < from {
			return tail(s)
		}
		return tail(s[from:])
	}
}

// saidToFile follows a QEMU started by someone else whose standard error
// is a regular file (QEMU's output redirected to a log): it opens the file
// through /proc and reads what QEMU adds to it from now on. Elsewhere (a
// terminal, a pipe, which reading would take from its reader) it returns
// nil and no close.
func saidToFile(pid int) (qemuSaid, func() error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/fd/2", pid))
	if err != nil {
		return nil, nil
	}
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, nil
	}
	from := fi.Size()
	return func() string {
		fi, err := f.Stat()
		if err != nil || fi.Size() <= from {
			return ""
		}
		start := max(from, fi.Size()-stderrTailBytes)
		b, err := io.ReadAll(io.NewSectionReader(f, start, fi.Size()-start))
		if err != nil {
			return ""
		}
		return tail(string(b))
	}, f.Close
}

// tail is the last whole lines of s within stderrTailBytes, trimmed and
// joined by "; ".
func tail(s string) string {
	s = strings.TrimSpace(s)
	if len(s) > stderrTailBytes {
		s = s[len(s)-stderrTailBytes:]
		if i := strings.IndexByte(s, '\n'); i >= 0 {
			s = s[i+1:]
		}
	}
	var lines []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, "; ")
}

// lastWords waits up to wait for QEMU's standard error to say something
// (a QEMU that exits writes it just before) and returns it.
func (said qemuSaid) lastWords(wait time.Duration) string {
	if said == nil {
		return ""
	}
	deadline := time.Now().Add(wait)
	for {
		if s := said(); s != "" || time.Now().After(deadline) {
			return s
		}
		time.Sleep(10 * time.Millisecond)
	}
}
