package collector

import (
	"context"
	"testing"
	"time"
)

type fakeHook struct{}

func (fakeHook) name() string                                   { return "fake" }
func (fakeHook) setEpoch(uint32) error                          { return nil }
func (fakeHook) pages(e uint32, dst []uint64) ([]uint64, error) { return append(dst, 1, 2, 3), nil }
func (fakeHook) stats() (Stats, error)                          { return Stats{}, nil }
func (fakeHook) close() error                                   { return nil }

// TestRunAfterStall: after one slow hand-off (a blocked stdout, a slow
// disk under the trace, a GC pause, a host stall) Run goes on from then,
// one epoch the longer; it closed the next epochs back to back, each a
// few milliseconds long instead of cfg.Epoch and reported at a dirty rate
// scaled up to match (found by a review walk).
func TestRunAfterStall(t *testing.T) {
	c := &Collector{cfg: Config{Epoch: 100 * time.Millisecond}, vmm: &vmmControl{}, hook: fakeHook{}}
	c.epoch, c.start, c.began = 1, time.Now(), time.Now()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var got []Epoch
	var rates []float64
	err := c.Run(ctx, func(e Epoch) error {
		got = append(got, e)
		c.mu.Lock()
		rates = append(rates, c.rate)
		c.mu.Unlock()
		if len(got) == 2 {
			time.Sleep(time.Second) // one slow consumer call
		}
		if len(got) == 14 {
			cancel()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	short := 0
	for i, e := range got {
		t.Logf("epoch %2d: %-12v rate %.0f B/s", e.Index, e.Duration.Round(10*time.Microsecond), rates[i])
		if e.Duration < c.cfg.Epoch/2 {
			short++
		}
	}
	if short > 0 {
		t.Errorf("%d of %d epochs lasted under half the %v epoch", short, len(got), c.cfg.Epoch)
	}
}
