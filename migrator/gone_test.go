package migrator

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

type goner struct{ at time.Time }

func (g goner) Gone() error {
	if time.Now().Before(g.at) {
		return nil
	}
	return errors.New("the VM has exited")
}

func TestWatchGone(t *testing.T) {
	var acts atomic.Int32
	gone, stop := WatchGone(goner{at: time.Now().Add(300 * time.Millisecond)}, func(error) { acts.Add(1) })
	if err := gone(); err != nil {
		t.Fatalf("gone before the VM went: %v", err)
	}
	for deadline := time.Now().Add(10 * time.Second); acts.Load() < 1; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("act not called in 10 s after the VM went")
		}
	}
	if err := gone(); err == nil || err.Error() != "the VM has exited" {
		t.Fatalf("gone() = %v, want the VM's reason", err)
	}
	time.Sleep(2 * goneCheck)
	stop()
	if n := acts.Load(); n != 1 {
		t.Fatalf("act called %d times, want once", n)
	}

	// A destination that cannot go is not watched.
	gone, stop = WatchGone(struct{}{}, func(error) { t.Error("act called for a destination that cannot go") })
	time.Sleep(2 * goneCheck)
	stop()
	if err := gone(); err != nil {
		t.Fatalf("gone() = %v for a destination that cannot go", err)
	}
}

func TestAwaitGone(t *testing.T) {
	if err := AwaitGone(goner{at: time.Now().Add(50 * time.Millisecond)}, 5*time.Second); err == nil {
		t.Fatal("a VM gone within the wait was not seen gone")
	}
	if err := AwaitGone(goner{at: time.Now().Add(time.Hour)}, 100*time.Millisecond); err != nil {
		t.Fatalf("a running VM was seen gone: %v", err)
	}
	if err := AwaitGone(struct{}{}, time.Second); err != nil {
		t.Fatalf("a destination that cannot go was seen gone: %v", err)
	}
}
