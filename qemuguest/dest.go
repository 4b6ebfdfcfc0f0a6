package qemuguest

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/pagecast/pagecast/internal/proc"
	"github.com/pagecast/pagecast/migrator"
	"github.com/pagecast/pagecast/qemu"
)

var _ migrator.Destination = (*Dest)(nil)

// Dest is a QEMU started with -incoming (defer, unix:PATH or tcp:HOST:PORT)
// and shared guest RAM, the VM a migration by pagecast's engine arrives in.
// The receiver writes its RAM in place; a QEMU that waits with -incoming
// writes nothing there itself, and with x-ignore-shared (set by Restore)
// loading the device state leaves it alone too.
type Dest struct {
	vm
	in      *incoming // made ready by PrepareRestore
	sockDir string    // where QEMU's incoming socket goes: the directory of the QEMU StartDest or DestFromVM has, removed with it; else a new one
	said    qemuSaid  // QEMU's standard error from the Dest's making on, where it can be read
}

// DialDest connects to the QMP socket of a QEMU waiting with -incoming.
func DialDest(qmpPath string) (*Dest, error) {
	mon, err := dial(qmpPath)
	if err != nil {
		return nil, err
	}
	d, err := NewDest(mon)
	if err != nil {
		mon.Disconnect()
		return nil, err
	}
	mon.SetAnswerWait(0) // attached: the migration's questions wait as long as QEMU takes
	d.owned = append(d.owned, mon.Disconnect)
	if said, closeFile := saidToFile(d.pid); said != nil {
		d.said = said
		d.owned = append(d.owned, closeFile)
	}
	return d, nil
}

// NewDest is the QEMU behind mon.
func NewDest(mon Monitor) (*Dest, error) {
	d := &Dest{}
	if err := d.attach(mon, 0, nil); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

// DestFromVM is the QEMU v started with Options.Incoming; v stays the
// caller's to close.
func DestFromVM(v *qemu.VM) (*Dest, error) {
	d := &Dest{sockDir: filepath.Dir(v.SerialPath()), said: saidSince(v.Stderr)}
	if err := d.attach(v.Monitor, v.PID(), v.Memory()); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

// Waiting reports whether QEMU waits for a migration (run state
// inmigrate), else its run state.
func (d *Dest) Waiting() (bool, string) {
	st, err := qemu.RunState(d.mon)
	if err != nil {
		// A QEMU killed breaks its QMP socket ("write: broken pipe"):
		// say that it exited, once it is seen gone (it can take a
		// moment to be reaped).
		if gerr := migrator.AwaitGone(d, 500*time.Millisecond); gerr != nil {
			return false, gerr.Error()
		}
		return false, err.Error()
	}
	return st == "inmigrate", st
}

// Restore loads the source's SaveState into QEMU and waits until it has
// (QEMU then is paused, as the source was). A stream that does not load
// makes QEMU 7.2 exit.
func (d *Dest) Restore(state []byte) error {
	if d.in == nil {
		return restoreState(d.mon, d.pid, state)
	}
	if err := loadState(d.mon, *d.in, state); err != nil {
		var refused *stateRefused
		if errors.As(err, &refused) {
			if words := d.said.lastWords(200 * time.Millisecond); words != "" {
				return fmt.Errorf("restore qemu %d state: QEMU refused it and exited, saying: %s (%w)", d.pid, words, refused.cause)
			}
		}
		return fmt.Errorf("restore qemu %d state: %w", d.pid, err)
	}
	if err := d.in.close(); err != nil { // QEMU listens there no more
		return fmt.Errorf("restore qemu %d state: %w", d.pid, err)
	}
	return nil
}

var _ migrator.RestorePreparer = (*Dest)(nil)

// PrepareRestore readies QEMU's incoming migration for the state (see
// prepareIncoming) once a source is accepted, so that the switch-over's
// pause does not wait for it: measured on a TCG QEMU, it was 11 ms of the
// 24 ms Restore took. Called again, it does nothing. Until a state has
// loaded, QEMU listens on a socket in a directory of this process's, left
// in place should the migration fail, so that another attempt on the same
// QEMU (a Dest dialled anew) finds it (QEMU takes migrate-incoming once).
func (d *Dest) PrepareRestore() error {
	if d.in != nil {
		return nil
	}
	in, err := prepareIncoming(d.mon, d.pid, d.sockDir)
	if err != nil {
		return fmt.Errorf("prepare qemu %d for the state: %w", d.pid, err)
	}
	d.in = &in
	return nil
}

// Gone is nil while the destination QEMU runs, and once it has exited
// (quit, killed, or failed) an error saying so, with its last words where
// they can be read.
func (d *Dest) Gone() error {
	if d.pid == 0 || !proc.Gone(d.pid) {
		return nil
	}
	msg := fmt.Sprintf("the destination QEMU (pid %d) has exited", d.pid)
	if d.said != nil {
		if said := strings.TrimSpace(d.said()); said != "" {
			msg += ", saying: " + said
		}
	}
	return errors.New(msg)
}

// Start runs the guest (QMP cont).
func (d *Dest) Start() error { return qemu.QMP(d.mon, "cont", nil, nil) }

// StartPaused holds the guest paused (migrator.PausedStarter): Restore
// left QEMU paused, as the source was at the switch-over.
func (d *Dest) StartPaused() error { return nil }

var _ migrator.PausedStarter = (*Dest)(nil)

// Stop stops the guest (QMP stop).
func (d *Dest) Stop() error { return qemu.QMP(d.mon, "stop", nil, nil) }

// Close releases the RAM mapping and whatever this Dest opened or started.
func (d *Dest) Close() error {
	if d.in != nil && d.in.dir != "" && proc.Gone(d.pid) {
		// Kept for another attempt on the same QEMU, which is gone
		// (it exits on a state it will not load).
		d.in.close()
	}
	return d.close()
}

var _ migrator.NoPostcopy = (*Dest)(nil)

// NoPostcopy says why pagecast's TSMC cannot finish on a QEMU destination:
// its stage-3 userfaultfd would watch pagecast's own mapping of the shared
// RAM, while the guest reaches it through QEMU's, so a dropped page would
// come back zero-filled (measured: a lost status page). tsmc on QEMU is
// QEMU's own post-copy.
func (d *Dest) NoPostcopy() string {
	return "a QEMU destination's guest reaches its RAM through QEMU's mapping, where pagecast's userfaultfd sees no fault; use QEMU's post-copy (pagecast migrate --engine qemu --mode tsmc)"
}
