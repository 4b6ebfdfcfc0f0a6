package service

import (
	"context"
	"time"

	"github.com/pagecast/pagecast/trace"
)

// Replay feeds a trace's epochs to vm at the trace's own pace divided by
// speed (0: as fast as possible), starting over at the end when loop is
// set, until ctx ends.
func Replay(ctx context.Context, vm *VM, epochs []trace.Epoch, speed float64, loop bool) {
	var tick <-chan time.Time
	if speed > 0 {
		t := time.NewTicker(time.Duration(float64(vm.Epoch) / speed))
		defer t.Stop()
		tick = t.C
	}
	for {
		for _, e := range epochs {
			if tick != nil {
				select {
				case <-ctx.Done():
					return
				case <-tick:
				}
			} else if ctx.Err() != nil {
				return
			}
			vm.Observe(e.Pages)
		}
		if !loop {
			return
		}
	}
}
