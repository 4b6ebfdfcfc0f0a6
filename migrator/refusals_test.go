package migrator

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"
)

// countingHandler keeps the records logged to it.
type countingHandler struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (h *countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countingHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.recs = append(h.recs, r)
	return nil
}
func (h *countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *countingHandler) WithGroup(string) slog.Handler      { return h }

func (h *countingHandler) lines() (n int, last slog.Record) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.recs) > 0 {
		last = h.recs[len(h.recs)-1]
	}
	return len(h.recs), last
}

// TestRefusals: a flood of refused connections logs a burst, then one
// line saying how many more went unlogged once the window is over, then a
// burst again; stop says what the window dropped at once.
func TestRefusals(t *testing.T) {
	defer func(w time.Duration) { refusalWindow = w }(refusalWindow)
	refusalWindow = 200 * time.Millisecond
	h := &countingHandler{}
	r := &refusals{log: slog.New(h)}
	for i := 0; i < 5*refusalBurst; i++ {
		r.warn("refused a connection", "from", "192.0.2.1:1")
	}
	if n, _ := h.lines(); n != refusalBurst {
		t.Fatalf("%d lines for %d refusals at once, want the burst of %d", n, 5*refusalBurst, refusalBurst)
	}
	time.Sleep(2 * refusalWindow)
	n, last := h.lines()
	unlogged := int64(-1)
	last.Attrs(func(a slog.Attr) bool {
		if a.Key == "unlogged" {
			unlogged = a.Value.Int64()
		}
		return true
	})
	if n != refusalBurst+1 || unlogged != 4*refusalBurst {
		t.Fatalf("after the window: %d lines, the last %q with unlogged %d; want %d, saying %d", n, last.Message, unlogged, refusalBurst+1, 4*refusalBurst)
	}
	// The second flood within one window, however loaded the machine:
	// a flood that straddled the end of the window the flush opened
	// logged a burst on each side of it (CI 75: 24 lines). The flush has
	// read the window (its line is in, under the handler's lock).
	refusalWindow = time.Minute
	for i := 0; i < refusalBurst+3; i++ {
		r.warn("refused a connection", "from", "192.0.2.1:1")
	}
	r.stop()
	if n, _ := h.lines(); n != 2*refusalBurst+2 {
		t.Fatalf("a second flood, then stop: %d lines, want %d", n, 2*refusalBurst+2)
	}
	// After stop (the destination closed), a burst at most, and no timer
	// left to log after it.
	for i := 0; i < 2*refusalBurst; i++ {
		r.warn("refused a connection", "from", "192.0.2.1:1")
	}
	if n, _ := h.lines(); n != 3*refusalBurst+2 || r.timer != nil {
		t.Fatalf("after stop: %d lines (want %d), timer %v", n, 3*refusalBurst+2, r.timer)
	}
}
