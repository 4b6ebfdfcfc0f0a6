package service

import (
	"context"
	"time"

	"github.com/pagecast/pagecast/trace"
)

// MinReplayInterval is the shortest time Replay leaves between epochs,
// however high the speed: a model update takes about that long.
const MinReplayInterval = time.Millisecond

// Replay feeds a trace's epochs to vm at the trace's own pace divided by
// speed (0: as fast as possible, once: loop is then ignored), but no
// faster than one epoch every MinReplayInterval, starting over at the end
// when loop is set, until ctx ends. A speed that is negative or not a
// number is taken as 0. With parts (see predictor.GroupEpochs) each epoch
// is fed as its parts.
func Replay(ctx context.Context, vm *VM, epochs []trace.Epoch, parts [][][]uint64, speed float64, loop bool) {
	var tick <-chan time.Time
	if speed > 0 {
		every := MinReplayInterval
		if d := float64(vm.Epoch) / speed; d > float64(every) {
			every = time.Duration(min(d, float64(24*time.Hour)))
		}
		t := time.NewTicker(every)
		defer t.Stop()
		tick = t.C
	}
	if len(epochs) == 0 {
		return // nothing to feed (looping over nothing would spin)
	}
	for {
		for i, e := range epochs {
			if tick != nil {
				select {
				case <-ctx.Done():
					return
				case <-tick:
				}
			} else if ctx.Err() != nil {
				return
			}
			if parts != nil {
				vm.ObserveParts(parts[i])
			} else {
				vm.Observe(e.Pages)
			}
		}
		if !loop || tick == nil {
			return
		}
	}
}
