package migrator

import (
	"sync/atomic"
	"time"
)

// Goner is a Destination whose VM can go on its own while it waits for a
// migration or takes one in (a QEMU that is killed or quits). Gone is nil
// while the VM runs, and once it has gone an error saying so.
type Goner interface {
	Gone() error
}

// goneCheck is how often WatchGone asks whether a VM is gone.
const goneCheck = 250 * time.Millisecond

// WatchGone asks d, where it is a Goner, every quarter second whether its
// VM is gone and, once it is, calls act with d's reason and stops asking.
// gone returns d's
// reason once it is gone, else nil; stop ends the watch and returns once it
// has ended. A d that cannot go is not watched.
func WatchGone(d any, act func(reason error)) (gone func() error, stop func()) {
	g, ok := d.(Goner)
	if !ok {
		return func() error { return nil }, func() {}
	}
	var reason atomic.Pointer[error]
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		tick := time.NewTicker(goneCheck)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			if err := g.Gone(); err != nil {
				reason.Store(&err)
				act(err)
				return
			}
		}
	}()
	return func() error {
			if r := reason.Load(); r != nil {
				return *r
			}
			return nil
		}, func() {
			close(done)
			<-finished
		}
}

// AwaitGone gives a VM that has just failed a moment to be seen gone (a
// killed QEMU's socket breaks before the process is reaped): d's reason
// once it is gone within wait, else nil (also where d cannot go).
func AwaitGone(d any, wait time.Duration) error {
	g, ok := d.(Goner)
	if !ok {
		return nil
	}
	for deadline := time.Now().Add(wait); ; time.Sleep(20 * time.Millisecond) {
		if err := g.Gone(); err != nil {
			return err
		}
		if !time.Now().Before(deadline) {
			return nil
		}
	}
}
