package qemuguest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/pagecast/pagecast/internal/proc"
	"github.com/pagecast/pagecast/internal/scratch"
	"github.com/pagecast/pagecast/qemu"
)

// MaxState bounds the device state SaveState reads: with shared RAM left
// out QEMU's stream is a few hundred KB (vCPUs, devices, option ROMs).
const MaxState = 64 << 20

// stateTimeout bounds each step of capturing or loading the state.
const stateTimeout = 30 * time.Second

// migrationInfo is what query-migrate says of QEMU's migration.
type migrationInfo struct {
	Status    string `json:"status"`
	ErrorDesc string `json:"error-desc"`
	TotalTime int64  `json:"total-time"`
}

// saveState runs QEMU's own migration, with shared RAM left out, into a
// unix socket this process listens on, and returns the stream. QEMU ends in
// the postmigrate state; cont runs the guest again from there.
func saveState(mon Monitor, pid int) (_ []byte, err error) {
	defer func() {
		if err != nil {
			err = fmt.Errorf("save qemu %d state: %w", pid, err)
		}
	}()
	if st, err := qemu.RunState(mon); err != nil {
		return nil, err
	} else if st == "running" {
		return nil, errors.New("the guest is running: pause it first")
	}
	prior, err := setIgnoreShared(mon, pid)
	if err != nil {
		return nil, err
	}
	defer func() {
		if cerr := clearIgnoreShared(mon, pid, prior); err == nil && cerr != nil {
			err = cerr
		}
	}()
	// Locked, so that one a pagecast killed here left (SIGKILL during
	// the switch-over; review 105) is swept by the next.
	dir, err := scratch.Dir(scratch.Base(), "pagecast-state-")
	if err != nil {
		return nil, err
	}
	defer scratch.Remove(dir)
	sock := filepath.Join(dir, "state.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		return nil, err
	}
	defer ln.Close()
	type result struct {
		b   []byte
		err error
	}
	got := make(chan result, 1)
	deadline := time.Now().Add(stateTimeout)
	go func() {
		ln.SetDeadline(deadline)
		c, err := ln.Accept()
		if err != nil {
			got <- result{err: fmt.Errorf("qemu did not connect: %w", err)}
			return
		}
		defer c.Close()
		c.SetDeadline(deadline)
		b, err := io.ReadAll(io.LimitReader(c, MaxState+1))
		switch {
		case err != nil:
			got <- result{err: fmt.Errorf("read qemu's stream: %w", err)}
		case len(b) > MaxState:
			got <- result{err: fmt.Errorf("qemu's stream is longer than %d bytes (is guest RAM shared?)", MaxState)}
		default:
			got <- result{b: b}
		}
	}()
	if err := qemu.QMP(mon, "migrate", map[string]any{"uri": "unix:" + sock}, nil); err != nil {
		ln.Close()
		return nil, err
	}
	r := <-got
	info, werr := waitMigration(mon, deadline)
	switch {
	case r.err != nil && werr == nil && info.Status != "completed":
		// The reader's own diagnosis first: its closing the socket on a
		// stream too long is what failed QEMU's migration ("broken pipe").
		return nil, fmt.Errorf("%w (qemu's migration %s: %s)", r.err, info.Status, info.ErrorDesc)
	case r.err != nil:
		return nil, errors.Join(r.err, werr)
	case werr != nil:
		return nil, werr
	case info.Status != "completed":
		return nil, fmt.Errorf("qemu's migration %s: %s", info.Status, info.ErrorDesc)
	}
	return r.b, nil
}

// waitMigration polls query-migrate until QEMU's migration has ended.
func waitMigration(mon Monitor, deadline time.Time) (migrationInfo, error) {
	for {
		var info migrationInfo
		if err := qemu.QMP(mon, "query-migrate", nil, &info); err != nil {
			return info, err
		}
		switch info.Status {
		case "completed", "failed", "cancelled":
			return info, nil
		}
		if time.Now().After(deadline) {
			return info, fmt.Errorf("qemu's migration still %s after %s", info.Status, stateTimeout)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// restoreState feeds a stream saveState captured to QEMU pid, waiting with
// -incoming, and waits until QEMU has loaded it. QEMU 7.2 exits when a
// stream fails to load.
func restoreState(mon Monitor, pid int, state []byte) (err error) {
	in, err := prepareIncoming(mon, pid, "")
	if err != nil {
		return fmt.Errorf("restore qemu %d state: %w", pid, err)
	}
	defer in.close()
	if err := loadState(mon, in, state); err != nil {
		return fmt.Errorf("restore qemu %d state: %w", pid, err)
	}
	return nil
}

// incoming is a QEMU's incoming migration made ready for a state.
type incoming struct {
	uri   string          // where QEMU listens: unix:PATH or tcp:HOST:PORT
	dir   string          // the directory holding the socket pagecast gave a QEMU waiting with -incoming defer, or ""
	prior map[string]bool // the capabilities setIgnoreShared changed, as they were
	pid   int             // the QEMU's
}

// close removes the socket's directory. QEMU listens there until a state
// has loaded: a Dest whose migration failed before leaves it (under
// scratch.Base()) for the next attempt on the same QEMU.
func (in incoming) close() error {
	if in.dir == "" {
		return nil
	}
	return os.RemoveAll(in.dir)
}

// incomingPrefix names the directories of QEMU's incoming sockets, which
// outlive a receiver killed before the state loaded, for the next attempt
// on the same QEMU: pagecast-incoming-PID-…, PID the QEMU's.
const incomingPrefix = "pagecast-incoming-"

// sweepIncoming removes the incoming sockets' directories in base whose
// QEMU has exited: no one listens there any more. (A directory named
// without a pid, as before, is left alone.)
func sweepIncoming(base string) {
	dirs, _ := filepath.Glob(filepath.Join(base, incomingPrefix+"*"))
	for _, dir := range dirs {
		name, _ := strings.CutPrefix(filepath.Base(dir), incomingPrefix)
		spid, _, ok := strings.Cut(name, "-")
		pid, err := strconv.Atoi(spid)
		if !ok || err != nil || pid <= 0 || !proc.Gone(pid) {
			continue
		}
		if err := os.RemoveAll(dir); err == nil {
			slog.Info("removed the incoming socket's directory of a QEMU that has exited", "dir", dir, "qemu-pid", pid)
		}
	}
}

// prepareIncoming makes QEMU pid, waiting with -incoming, ready to load a
// state saveState captured: x-ignore-shared set and, for -incoming defer,
// QEMU listening on a unix socket in dir, or in a new directory if dir is
// "". It takes some 11 ms of QMP on a TCG QEMU, which the destination
// spends before the switch-over rather than in it (Dest.PrepareRestore).
func prepareIncoming(mon Monitor, pid int, dir string) (in incoming, err error) {
	if st, err := qemu.RunState(mon); err != nil {
		return in, err
	} else if st != "inmigrate" {
		return in, fmt.Errorf("qemu is %s, not waiting for a migration (start it with -incoming defer)", st)
	}
	in.pid = pid
	if in.prior, err = setIgnoreShared(mon, pid); err != nil {
		return in, err
	}
	// An earlier attempt may have started QEMU's incoming migration (a
	// source that died mid-migration, before the state came): QEMU
	// accepts migrate-incoming once, and listens on there still.
	var info struct {
		Sockets []struct {
			Type string `json:"type"`
			Path string `json:"path"`
			Host string `json:"host"`
			Port string `json:"port"`
		} `json:"socket-address"`
	}
	if err := qemu.QMP(mon, "query-migrate", nil, &info); err != nil {
		return in, err
	}
	if len(info.Sockets) > 0 {
		switch a := info.Sockets[0]; a.Type {
		case "unix":
			if _, err := os.Stat(a.Path); err != nil {
				return in, fmt.Errorf("qemu's incoming migration was started on unix:%s, which is gone (%w): start QEMU again with -incoming defer", a.Path, err)
			}
			in.uri = "unix:" + a.Path
			if d := filepath.Dir(a.Path); strings.HasPrefix(d, filepath.Join(scratch.Base(), incomingPrefix)) {
				in.dir = d // the earlier attempt's: gone with the state loaded
			}
		case "inet":
			in.uri = "tcp:" + net.JoinHostPort(a.Host, a.Port)
		default:
			return in, fmt.Errorf("qemu's incoming migration was started on a %s socket: want unix or tcp", a.Type)
		}
		return in, nil
	}
	uri, err := incomingURI(pid)
	if err != nil {
		return in, err
	}
	if uri == "defer" {
		if dir == "" {
			sweepIncoming(scratch.Base())
			if dir, err = os.MkdirTemp(scratch.Base(), fmt.Sprintf("%s%d-", incomingPrefix, pid)); err != nil {
				return in, err
			}
			in.dir = dir
		}
		uri = "unix:" + filepath.Join(dir, "incoming.sock")
		if err := qemu.QMP(mon, "migrate-incoming", map[string]any{"uri": uri}, nil); err != nil {
			in.close()
			return incoming{}, err
		}
	}
	if network, _, ok := strings.Cut(uri, ":"); !ok || (network != "unix" && network != "tcp") {
		in.close()
		return incoming{}, fmt.Errorf("qemu waits with -incoming %s: want defer, unix:PATH or tcp:HOST:PORT", uri)
	}
	in.uri = uri
	return in, nil
}

// stateRefused is a state QEMU did not load: it exited, as QEMU 7.2 does
// then, and cause is how that showed.
type stateRefused struct{ cause error }

func (e *stateRefused) Error() string {
	return e.cause.Error() + ": QEMU exits when the state does not load, saying why on its standard error (a machine or devices unlike the source's, for one)"
}

func (e *stateRefused) Unwrap() error { return e.cause }

// loadState feeds state to the QEMU listening at in, waits until QEMU has
// loaded it, and turns x-ignore-shared off again.
func loadState(mon Monitor, in incoming, state []byte) error {
	deadline := time.Now().Add(stateTimeout)
	network, addr, _ := strings.Cut(in.uri, ":")
	var c net.Conn
	var err error
	for {
		if c, err = net.DialTimeout(network, addr, time.Second); err == nil {
			break
		}
		if _, qerr := qemu.RunState(mon); qerr != nil {
			return fmt.Errorf("connect to qemu's incoming %s: %w (and QMP: %w)", in.uri, err, qerr)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("connect to qemu's incoming %s: %w", in.uri, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	c.SetDeadline(deadline)
	_, err = io.Copy(c, bytes.NewReader(state))
	c.Close()
	if err != nil {
		// QEMU stops reading, and exits, at the first part it will not
		// take.
		if _, qerr := qemu.RunState(mon); qerr != nil {
			return &stateRefused{fmt.Errorf("send the state: %w (and QMP: %w)", err, qerr)}
		}
		return fmt.Errorf("send the state: %w", err)
	}
	for {
		st, err := qemu.RunState(mon)
		if err != nil {
			return &stateRefused{err}
		}
		switch st {
		case "inmigrate":
		case "paused", "running", "postmigrate":
			return clearIgnoreShared(mon, in.pid, in.prior)
		default:
			var info migrationInfo
			qemu.QMP(mon, "query-migrate", nil, &info)
			return fmt.Errorf("qemu is %s after loading the state: %s", st, info.ErrorDesc)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("qemu still loading the state after %s", stateTimeout)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// incomingURI is the -incoming option QEMU pid was started with.
func incomingURI(pid int) (string, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return "", fmt.Errorf("qemu's -incoming: %w", err)
	}
	if uri, ok := incomingArg(strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")); ok {
		return uri, nil
	}
	return "", errors.New("qemu was started without -incoming")
}

// incomingArg finds the value of -incoming in a QEMU command line.
func incomingArg(args []string) (string, bool) {
	for i, a := range args {
		switch {
		case (a == "-incoming" || a == "--incoming") && i+1 < len(args):
			return args[i+1], true
		case strings.HasPrefix(a, "-incoming="), strings.HasPrefix(a, "--incoming="):
			_, v, _ := strings.Cut(a, "=")
			return v, true
		}
	}
	return "", false
}
