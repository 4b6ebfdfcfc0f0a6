package simulate

import (
	"context"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/pagecast/pagecast/migrator"
	"github.com/pagecast/pagecast/trace"
)

func TestResponseAt(t *testing.T) {
	r := Response{{0.01, 0.2}, {0.1, 0.6}}
	for _, c := range []struct{ share, want float64 }{
		{0, 0}, {0.005, 0.1}, {0.01, 0.2}, {0.055, 0.4}, {0.1, 0.6}, {0.55, 0.8}, {1, 1}, {1.5, 1},
	} {
		if got := r.At(c.share); math.Abs(got-c.want) > 1e-12 {
			t.Errorf("At(%v) = %v, want %v", c.share, got, c.want)
		}
		if got := Linear.At(c.share); math.Abs(got-min(1, c.share)) > 1e-12 {
			t.Errorf("Linear.At(%v) = %v", c.share, got)
		}
	}
	for _, s := range []string{"linear", "linux", "0.01:0.2,0.1:0.6"} {
		r, err := ParseResponse(s)
		if err != nil {
			t.Fatal(err)
		}
		if r.String() != s {
			t.Errorf("%q read back as %q", s, r)
		}
	}
	for _, bad := range []string{"", "fast", "0.1", "0.1:x", "0:0.5", "1:0.5", "0.1:1.5", "0.1:-0.1", "0.2:0.5,0.1:0.3", "0.1:NaN"} {
		if _, err := ParseResponse(bad); err == nil || !strings.Contains(err.Error(), "throttle response") {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

// A throttled guest writes, a stretch of wall-clock time, the pages of the
// span of its workload its Response gives, while it moves on by its share:
// at 99% a Linux guest's harvest after an epoch holds 14.5% of an epoch's
// pages, pagecast's own 1%; unthrottled, both hold what the workload wrote.
func TestThrottleResponse(t *testing.T) {
	const guestPages, perEpoch = 1 << 16, 4000
	rng := rand.New(rand.NewPCG(5, 6))
	var epochs []trace.Epoch
	for i := range 20 {
		var ps []uint64
		for range perEpoch {
			ps = append(ps, rng.Uint64N(guestPages))
		}
		epochs = append(epochs, trace.Epoch{Index: uint64(i), Pages: ps})
	}
	w, err := NewTrace("t", trace.Meta{MemoryBytes: guestPages * 4096, PageSize: 4096, Epoch: 100 * time.Millisecond}, epochs)
	if err != nil {
		t.Fatal(err)
	}
	written := func(r Response, throttle int) (pages int, pos float64) {
		clock := migrator.NewVirtualClock(time.Unix(0, 0))
		g, err := NewGuest(w, clock, GuestOptions{Response: r})
		if err != nil {
			t.Fatal(err)
		}
		log, err := g.StartDirtyLog()
		if err != nil {
			t.Fatal(err)
		}
		clock.Advance(2 * w.Epoch()) // the guest writes some epochs first
		if _, err := log.(migrator.PageLister).HarvestPages(); err != nil {
			t.Fatal(err)
		}
		if err := g.SetThrottle(throttle); err != nil {
			t.Fatal(err)
		}
		for range 10 {
			clock.Advance(w.Epoch())
			got, err := log.(migrator.PageLister).HarvestPages()
			if err != nil {
				t.Fatal(err)
			}
			pages += len(got)
		}
		g.mu.Lock()
		defer g.mu.Unlock()
		return pages / 10, g.pos
	}
	for _, c := range []struct {
		r        Response
		throttle int
		want     float64 // of an epoch's pages
	}{
		{Linear, 0, 1}, {LinuxResponse, 0, 1},
		{Linear, 99, 0.01}, {LinuxResponse, 99, 0.145},
		{Linear, 90, 0.1}, {LinuxResponse, 90, 0.59},
	} {
		epoch := len(w.Dirty(nil, 5))
		pages, pos := written(c.r, c.throttle)
		if got := float64(pages) / float64(epoch); math.Abs(got-c.want) > 0.15*c.want {
			t.Errorf("%v at %d%%: %d pages an epoch, %.3f of the %d unthrottled, want %.3f", c.r, c.throttle, pages, got, epoch, c.want)
		}
		// It moves on at its share whatever it writes.
		if want := 2 + 10*(1-float64(c.throttle)/100); math.Abs(pos-want) > 1e-9 {
			t.Errorf("%v at %d%%: at epoch %.3f, want %.3f", c.r, c.throttle, pos, want)
		}
	}
}

// MeasureResponse, throttling a simulated guest whose response is known
// and watching what it writes, finds that response: the span it reads off
// the watched curve is the span the guest wrote.
func TestMeasureResponse(t *testing.T) {
	const guestPages = 1 << 16
	rng := rand.New(rand.NewPCG(7, 8))
	var epochs []trace.Epoch
	for i := range 400 {
		var ps []uint64
		for range 300 { // a hot kernel-like set and pages scattered wide
			ps = append(ps, rng.Uint64N(2000), rng.Uint64N(guestPages))
		}
		epochs = append(epochs, trace.Epoch{Index: uint64(i), Pages: ps})
	}
	w, err := NewTrace("t", trace.Meta{MemoryBytes: guestPages * 4096, PageSize: 4096, Epoch: 10 * time.Millisecond}, epochs)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []Response{Linear, LinuxResponse} {
		clock := migrator.NewVirtualClock(time.Unix(0, 0))
		g, err := NewGuest(w, clock, GuestOptions{Response: want})
		if err != nil {
			t.Fatal(err)
		}
		wait := func(ctx context.Context, d time.Duration) error { clock.Advance(d); return nil }
		got, err := measureResponse(context.Background(), g, Window(w, 0, 200), []int{50, 90, 99}, 4, wait)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 3 {
			t.Fatalf("%v: measured %v", want, got)
		}
		for _, p := range got {
			if w := want.At(p.Share); math.Abs(p.Span-w) > 0.2*w {
				t.Errorf("%v: at share %.2f measured span %.3f, want %.3f", want, p.Share, p.Span, w)
			}
		}
		if g.Throttle() != 0 {
			t.Errorf("throttle left at %d%%", g.Throttle())
		}
		t.Logf("%v measured as %v", want, got)
	}
	if _, err := measureResponse(context.Background(), nil, w, []int{99, 90}, 4, nil); err == nil {
		t.Error("throttles descending taken")
	}
}

// The span is a share of the window, whatever the watched epoch: a fifth
// of a 250 ms epoch is half of a 100 ms window, a fifth of a 10 ms epoch a
// fiftieth.
func TestWorkingSetSpan(t *testing.T) {
	for _, c := range []struct {
		epoch time.Duration
		want  float64
	}{{250 * time.Millisecond, 0.5}, {100 * time.Millisecond, 0.2}, {10 * time.Millisecond, 0.02}} {
		var epochs []trace.Epoch
		for i := range 20 {
			var ps []uint64
			for p := range uint64(1000) {
				ps = append(ps, uint64(i)*1000+p) // each epoch its own pages
			}
			epochs = append(epochs, trace.Epoch{Index: uint64(i), Pages: ps})
		}
		w, err := NewTrace("t", trace.Meta{MemoryBytes: 20000 * 4096, PageSize: 4096, Epoch: c.epoch}, epochs)
		if err != nil {
			t.Fatal(err)
		}
		if got := workingSet(w, ResponseWindow).span(200); math.Abs(got-c.want) > 1e-9 {
			t.Errorf("%v epochs: 200 pages a window is a span of %v, want %v", c.epoch, got, c.want)
		}
	}
}
