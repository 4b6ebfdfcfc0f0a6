package migrator

import (
	"context"
	"fmt"
	"time"

	"github.com/digitalocean/go-qemu/qmp"
)

// PauseWatch times a migration's switch-over as the guest lives it: from
// the source QEMU's STOP event to the destination's RESUME, by the
// timestamps QEMU puts on its events (on one host, one clock; across
// hosts, as far apart as their clocks are). The engines count downtime
// each their own way — QEMU until its last bytes are written into its
// socket, pagecast until the destination has verified its memory and been
// told to run — and this is neither's account but the guest's.
type PauseWatch struct {
	cancel        context.CancelFunc
	stop, resume  chan time.Time
	resumeDone    chan struct{} // closed once the destination's events are no longer read
	stopAt, resAt time.Time
	stopOK, resOK bool
}

// WatchPause starts watching src's and dst's events; call it before the
// migration starts. Events already queued on either monitor (a RESUME
// from when dst's guest last started) are skipped. Each monitor's events
// are read only until the one awaited comes, or Close, so a monitor can
// be watched again in the next migration.
func WatchPause(src, dst qmp.Monitor) (*PauseWatch, error) {
	ctx, cancel := context.WithCancel(context.Background())
	w := &PauseWatch{cancel: cancel, stop: make(chan time.Time, 1), resume: make(chan time.Time, 1), resumeDone: make(chan struct{})}
	for _, m := range []struct {
		mon   qmp.Monitor
		event string
		to    chan time.Time
		done  chan struct{}
	}{{src, "STOP", w.stop, nil}, {dst, "RESUME", w.resume, w.resumeDone}} {
		events, err := m.mon.Events(ctx)
		if err != nil {
			cancel()
			return nil, fmt.Errorf("watch the guest's pause: %w", err)
		}
		drain(events)
		go func() {
			if m.done != nil {
				defer close(m.done)
			}
			for {
				select {
				case e, ok := <-events:
					if !ok {
						return
					}
					if e.Event == m.event {
						m.to <- time.Unix(e.Timestamp.Seconds, e.Timestamp.Microseconds*1000)
						return
					}
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	return w, nil
}

// drain skips the events queued now.
func drain(events <-chan qmp.Event) {
	for {
		select {
		case _, ok := <-events:
			if !ok {
				return
			}
		default:
			return
		}
	}
}

// Paused waits up to timeout for the source's STOP and the destination's
// RESUME and returns the time between them. It ends the watch.
func (w *PauseWatch) Paused(timeout time.Duration) (time.Duration, error) {
	defer w.Close()
	deadline := time.After(timeout)
	for !w.stopOK || !w.resOK {
		select {
		case t := <-w.stop:
			w.stopAt, w.stopOK = t, true
		case t := <-w.resume:
			w.resAt, w.resOK = t, true
		case <-deadline:
			switch {
			case !w.stopOK:
				return 0, fmt.Errorf("no STOP event from the source QEMU within %v", timeout)
			default:
				return 0, fmt.Errorf("no RESUME event from the destination QEMU within %v", timeout)
			}
		}
	}
	if w.resAt.Before(w.stopAt) {
		return 0, fmt.Errorf("the destination resumed (%v) before the source stopped (%v): their clocks differ",
			w.resAt.Format(time.StampMicro), w.stopAt.Format(time.StampMicro))
	}
	return w.resAt.Sub(w.stopAt), nil
}

// Resumed says whether the destination's RESUME has come: the guest has
// run there. It waits up to wait for the events the destination sent and
// the watch has not yet read (it read them all once its monitor closed),
// and leaves Paused to tell when.
func (w *PauseWatch) Resumed(wait time.Duration) bool {
	if w.resOK {
		return true
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case r := <-w.resume:
		w.resAt, w.resOK = r, true
	case <-w.resumeDone:
		select {
		case r := <-w.resume:
			w.resAt, w.resOK = r, true
		default:
		}
	case <-t.C:
	}
	return w.resOK
}

// Close stops watching; the monitors' events are left to others.
func (w *PauseWatch) Close() { w.cancel() }
