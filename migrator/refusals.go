package migrator

import (
	"log/slog"
	"sync"
	"time"
)

// refusals logs a destination's refused connections, at most
// refusalBurst of them each refusalWindow; the rest are counted and said
// in one line once the window is over. Each refusal logged took a line
// of some 340 bytes: one client opening connections without a handshake
// grew the log by 620 KB a second, some 50 GB a day (found by a security
// walk).
type refusals struct {
	log *slog.Logger

	mu      sync.Mutex
	start   time.Time // the window's
	logged  int       // in the window
	dropped int       // unlogged in the window
	last    []any     // the last one dropped's attributes
	timer   *time.Timer
	stopped bool // the destination closed: no window to count in
}

// refusalBurst and refusalWindow: at most this many logged in each
// window (a variable: a test's seam).
const refusalBurst = 10

var refusalWindow = 10 * time.Second

// warn logs msg with args, or counts it where the window's burst is
// logged already.
func (r *refusals) warn(msg string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		// The last few of a closed destination's screened connections:
		// a burst at most, with no timer to say the rest (review 63).
		if r.logged < refusalBurst {
			r.logged++
			r.log.Warn(msg, args...)
		}
		return
	}
	now := time.Now()
	if now.Sub(r.start) >= refusalWindow && r.dropped == 0 {
		r.start, r.logged = now, 0
	}
	if r.logged < refusalBurst {
		r.logged++
		r.log.Warn(msg, args...)
		return
	}
	r.dropped++
	r.last = append([]any{"last", msg}, args...)
	if r.timer == nil {
		r.timer = time.AfterFunc(time.Until(r.start.Add(refusalWindow)), r.flush)
	}
}

// flush says how many went unlogged in the window that ended, and opens
// the next.
func (r *refusals) flush() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.dropped > 0 {
		r.log.Warn("refused more connections than are logged one by one", append([]any{"unlogged", r.dropped, "in", refusalWindow}, r.last...)...)
	}
	r.start, r.logged, r.dropped, r.last, r.timer = time.Now(), 0, 0, nil, nil
}

// stop ends the window early, saying what it dropped.
func (r *refusals) stop() {
	r.mu.Lock()
	t := r.timer
	r.stopped = true
	r.mu.Unlock()
	if t != nil && t.Stop() {
		r.flush()
	}
}
