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

// TestRunLastEpoch: a Run whose context ends as profile --duration's does,
// just before the n-th epoch closes (the deadline is set before Run
// starts), hands on n epochs; it handed n-1, and none for a --duration of
// one epoch (found by a review walk). One cut short by more than half is
// dropped.
func TestRunLastEpoch(t *testing.T) {
	const epoch = 100 * time.Millisecond
	for _, tc := range []struct {
		run  time.Duration
		want int
	}{{epoch, 1}, {5 * epoch, 5}, {epoch + epoch/4, 1}, {epoch / 4, 0}} {
		c := &Collector{cfg: Config{Epoch: epoch}, vmm: &vmmControl{}, hook: fakeHook{}}
		c.epoch, c.start, c.began = 1, time.Now(), time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), tc.run)
		time.Sleep(2 * time.Millisecond) // profile's setup between its deadline and Run
		got := 0
		if err := c.Run(ctx, func(Epoch) error { got++; return nil }); err != nil {
			t.Fatal(err)
		}
		cancel()
		if got != tc.want {
			t.Errorf("Run for %v in epochs of %v handed %d epochs, want %d", tc.run, epoch, got, tc.want)
		}
	}
}
