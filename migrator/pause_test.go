package migrator

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/digitalocean/go-qemu/qmp"
)

// eventMonitor is a monitor whose events are what a test sends on ch.
type eventMonitor struct {
	qmp.Monitor
	ch chan qmp.Event
}

func (m eventMonitor) Events(context.Context) (<-chan qmp.Event, error) { return m.ch, nil }

func event(name string, at time.Time) qmp.Event {
	e := qmp.Event{Event: name}
	e.Timestamp.Seconds, e.Timestamp.Microseconds = at.Unix(), int64(at.Nanosecond()/1000)
	return e
}

// The guest's pause runs from the source's STOP to the destination's
// RESUME, by QEMU's timestamps; events queued before the watch began (the
// destination's guest resumed after its own last migration) do not count.
func TestPauseWatch(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	src, dst := eventMonitor{ch: make(chan qmp.Event, 8)}, eventMonitor{ch: make(chan qmp.Event, 8)}
	dst.ch <- event("RESUME", t0.Add(-time.Minute))
	src.ch <- event("STOP", t0.Add(-2*time.Minute))
	w, err := WatchPause(src, dst)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	src.ch <- event("MIGRATION_PASS", t0)
	src.ch <- event("STOP", t0.Add(time.Second))
	dst.ch <- event("RESUME", t0.Add(time.Second+123456*time.Microsecond))
	got, err := w.Paused(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if want := 123456 * time.Microsecond; got != want {
		t.Errorf("paused %v, want %v", got, want)
	}

	// A destination that never resumes: said, after the timeout.
	w2, err := WatchPause(src, dst)
	if err != nil {
		t.Fatal(err)
	}
	defer w2.Close()
	src.ch <- event("STOP", t0)
	if _, err := w2.Paused(50 * time.Millisecond); err == nil || !strings.Contains(err.Error(), "no RESUME event from the destination") {
		t.Errorf("no RESUME: err %v", err)
	}

	// Clocks apart (hosts): a RESUME before the STOP is refused.
	w3, err := WatchPause(src, dst)
	if err != nil {
		t.Fatal(err)
	}
	defer w3.Close()
	src.ch <- event("STOP", t0)
	dst.ch <- event("RESUME", t0.Add(-time.Millisecond))
	if _, err := w3.Paused(time.Second); err == nil || !strings.Contains(err.Error(), "clocks differ") {
		t.Errorf("RESUME before STOP: err %v", err)
	}
}

// Resumed sees a RESUME the destination sent before its monitor closed,
// even one the watch had not read yet (review 58: read at once, it missed
// it every time, and the source would have been resumed after the guest
// ran on the destination); Paused still times the pause after it.
func TestPauseWatchResumed(t *testing.T) {
	t0 := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	for range 100 {
		src, dst := eventMonitor{ch: make(chan qmp.Event, 8)}, eventMonitor{ch: make(chan qmp.Event, 8)}
		w, err := WatchPause(src, dst)
		if err != nil {
			t.Fatal(err)
		}
		src.ch <- event("STOP", t0)
		dst.ch <- event("RESUME", t0.Add(time.Millisecond))
		close(dst.ch) // the destination exits
		if !w.Resumed(time.Second) {
			t.Fatal("a RESUME sent before the destination's monitor closed was missed")
		}
		if got, err := w.Paused(time.Second); err != nil || got != time.Millisecond {
			t.Fatalf("paused %v, %v after Resumed", got, err)
		}
	}
	src, dst := eventMonitor{ch: make(chan qmp.Event, 8)}, eventMonitor{ch: make(chan qmp.Event, 8)}
	w, err := WatchPause(src, dst)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	close(dst.ch)
	if w.Resumed(time.Second) {
		t.Error("Resumed with no RESUME sent")
	}
}
