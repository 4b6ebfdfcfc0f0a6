package simulate

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pagecast/pagecast/migrator"
)

// Response is how much a throttled guest still writes. A guest left a
// share s of its vCPU time advances through its workload at s, but what it
// writes in a stretch of wall-clock time is, mostly, not s of what it wrote
// unthrottled: each time the throttle lets a vCPU run, a Linux kernel
// catches up on its timers, scheduler and the pages its program keeps
// rewriting. Response gives, for a share s, the span of the workload, as a
// share of the wall-clock time, whose pages the guest writes: a harvest
// after wall-clock time t returns the pages of the workload's last
// At(s)·t, though the guest moved on by only s·t.
//
// Points are (share, span) pairs measured at a few shares: between them the
// span is interpolated, below the lowest it falls in proportion to the
// share, and at 1 (no throttle) it is 1. A nil Response is Linear.
type Response []ResponsePoint

// ResponsePoint is a Response's measurement at one share.
type ResponsePoint struct {
	Share float64 // the share of vCPU time left, 0 < Share < 1
	Span  float64 // what it writes, as a share of what it wrote unthrottled
}

// Linear is the response of a guest that writes in proportion to its vCPU
// time: pagecast's own guest, which runs no kernel (measured on QEMU under
// TCG, 2026-12-06: at throttles of 95% and 99% it wrote 4.8% and 1.0% of its
// unthrottled pages a 100 ms epoch; at 50% to 90%, where it rewrites pages
// within an epoch, 68%, 27%, 14%).
var Linear Response = nil

// LinuxResponse is the median of three busybox programs in the README's
// Linux guest (Debian's 6.1 kernel, QEMU under TCG, one vCPU, pagecast's
// cgroup throttle; 2026-12-06): a file tree written with dd and summed,
// sort, and gzip with checksums wrote, a 100 ms epoch, at a throttle of
//
//	          50%   80%   90%   95%   99%
//	tree      .91   .81   .67   .42   .145
//	sort      .50   .37   .28   .16   .052
//	gzip      .79   .59   .59   .46   .24
//
// of the pages they wrote unthrottled, where a guest writing in proportion
// to its vCPU time would have written .50, .20, .10, .05 and .01. At 99% the
// vCPU runs 1 ms of each 100: that millisecond wrote 23 to 58 pages.
var LinuxResponse = Response{{0.01, 0.145}, {0.05, 0.42}, {0.1, 0.59}, {0.2, 0.59}, {0.5, 0.79}}

// At is the span the guest writes at share s of its vCPU time.
func (r Response) At(s float64) float64 {
	switch {
	case s >= 1:
		return 1
	case s <= 0:
		return 0
	case len(r) == 0:
		return s
	}
	i, _ := slices.BinarySearchFunc(r, s, func(p ResponsePoint, s float64) int {
		switch {
		case p.Share < s:
			return -1
		case p.Share > s:
			return 1
		}
		return 0
	})
	if i < len(r) && r[i].Share == s {
		return r[i].Span
	}
	if i == 0 {
		return r[0].Span * s / r[0].Share
	}
	lo, hi := r[i-1], ResponsePoint{1, 1}
	if i < len(r) {
		hi = r[i]
	}
	return lo.Span + (hi.Span-lo.Span)*(s-lo.Share)/(hi.Share-lo.Share)
}

// String is the form ParseResponse reads: "linear", "linux", or the points.
func (r Response) String() string {
	switch {
	case len(r) == 0:
		return "linear"
	case slices.Equal(r, LinuxResponse):
		return "linux"
	}
	parts := make([]string, len(r))
	for i, p := range r {
		parts[i] = fmt.Sprintf("%s:%s", strconv.FormatFloat(p.Share, 'g', 3, 64), strconv.FormatFloat(p.Span, 'g', 3, 64))
	}
	return strings.Join(parts, ",")
}

// ParseResponse reads a Response: "linear", "linux" (LinuxResponse), or
// SHARE:SPAN pairs separated by commas, shares between 0 and 1 exclusive,
// spans between 0 and 1 inclusive, e.g. "0.01:0.15,0.1:0.6".
func ParseResponse(s string) (Response, error) {
	switch strings.TrimSpace(s) {
	case "linear":
		return Linear, nil
	case "linux":
		return LinuxResponse, nil
	}
	var r Response
	for part := range strings.SplitSeq(s, ",") {
		a, b, ok := strings.Cut(strings.TrimSpace(part), ":")
		if !ok {
			return nil, fmt.Errorf("throttle response %q: want linear, linux or SHARE:SPAN pairs such as 0.01:0.15,0.1:0.6", s)
		}
		share, err1 := strconv.ParseFloat(a, 64)
		span, err2 := strconv.ParseFloat(b, 64)
		switch {
		case err1 != nil || err2 != nil:
			return nil, fmt.Errorf("throttle response %q: %q is not two numbers", s, part)
		case !(share > 0 && share < 1):
			return nil, fmt.Errorf("throttle response %q: share %v is not between 0 and 1", s, share)
		case !(span >= 0 && span <= 1) || math.IsNaN(span):
			return nil, fmt.Errorf("throttle response %q: span %v is not between 0 and 1", s, span)
		case len(r) > 0 && share <= r[len(r)-1].Share:
			return nil, fmt.Errorf("throttle response %q: shares must increase", s)
		}
		r = append(r, ResponsePoint{share, span})
	}
	return r, nil
}

// ResponseWindow is how long MeasureResponse counts a throttled guest's
// writes at a time: what LinuxResponse was measured over, and about as
// long as a throttled migration's rounds.
const ResponseWindow = 100 * time.Millisecond

// MeasureResponse measures a running guest's Response: it throttles g at
// each of throttles (percent, ascending) for windows+1 ResponseWindows,
// counts the pages written in each window after the first, and lifts the
// throttle, also on error. watched is what the guest wrote unthrottled
// just before (a trace of its writes, as auto watches them): a throttle's
// span is the share of a window whose stretch of watched holds as many
// distinct pages as the guest wrote a window throttled. It costs the guest
// Σ throttle × (windows+1) × ResponseWindow of its vCPU time.
func MeasureResponse(ctx context.Context, g migrator.Guest, watched Workload, throttles []int, windows int) (Response, error) {
	return measureResponse(ctx, g, watched, throttles, windows, func(ctx context.Context, d time.Duration) error {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(d):
			return nil
		}
	})
}

// measureResponse is MeasureResponse, waiting with wait.
func measureResponse(ctx context.Context, g migrator.Guest, watched Workload, throttles []int, windows int, wait func(context.Context, time.Duration) error) (r Response, err error) {
	if windows < 1 || len(throttles) == 0 {
		return nil, fmt.Errorf("measure the throttle's response: %d windows at %d throttles", windows, len(throttles))
	}
	for i, pct := range throttles {
		if pct < 1 || pct > 99 || (i > 0 && pct <= throttles[i-1]) {
			return nil, fmt.Errorf("measure the throttle's response: throttles %v: want ascending, 1 to 99", throttles)
		}
	}
	curve := workingSet(watched, ResponseWindow)
	if curve == nil {
		return nil, errors.New("measure the throttle's response: nothing written while watched")
	}
	log, err := g.StartDirtyLog()
	if err != nil {
		return nil, fmt.Errorf("measure the throttle's response: %w", err)
	}
	defer log.Close()
	defer func() {
		if lerr := g.SetThrottle(0); lerr != nil {
			err = errors.Join(err, fmt.Errorf("lift the throttle: %w", lerr))
		}
	}()
	for _, pct := range throttles {
		if err := g.SetThrottle(pct); err != nil {
			return nil, fmt.Errorf("throttle the guest %d%%: %w", pct, err)
		}
		pages := 0
		for i := range windows + 1 {
			if err := wait(ctx, ResponseWindow); err != nil {
				return nil, err
			}
			h, err := log.Harvest()
			if err != nil {
				return nil, fmt.Errorf("measure the throttle's response: %w", err)
			}
			if i > 0 { // the first window's writes began unthrottled
				pages += int(h.Count())
			}
		}
		r = append(Response{{1 - float64(pct)/100, curve.span(float64(pages) / float64(windows))}}, r...)
	}
	return r, nil
}

// workingSetCurve is how many distinct pages a workload writes in a stretch
// of it, at whole epochs from 1 to a window's: at[k-1] over k epochs.
// epoch is an epoch's share of the window.
type workingSetCurve struct {
	at    []float64
	epoch float64
}

// workingSet measures w's curve over its stretches up to window long; nil
// if w writes nothing.
func workingSet(w Workload, window time.Duration) *workingSetCurve {
	n, k := w.Len(), max(1, int(window/w.Epoch()))
	if n == 0 || n > 2000 {
		n = 2000 // a generated workload, or a long one: its first epochs
	}
	k = min(k, int(n))
	var epochs [][]uint64
	for i := range n {
		epochs = append(epochs, w.Dirty(nil, i))
	}
	c := &workingSetCurve{at: make([]float64, k), epoch: w.Epoch().Seconds() / window.Seconds()}
	seen := map[uint64]bool{}
	for size := 1; size <= k; size++ {
		sum, count := 0, 0
		for start := 0; start+size <= len(epochs); start += size {
			clear(seen)
			for _, e := range epochs[start : start+size] {
				for _, p := range e {
					seen[p] = true
				}
			}
			sum += len(seen)
			count++
		}
		c.at[size-1] = float64(sum) / float64(count)
	}
	if c.at[k-1] == 0 {
		return nil
	}
	return c
}

// span is the share of the curve's window whose stretch holds pages
// distinct pages: within an epoch in proportion, as the simulated guest
// writes an epoch's pages at instants through it; at most 1.
func (c *workingSetCurve) span(pages float64) float64 {
	prev := 0.0
	for i, d := range c.at {
		if pages <= d {
			if d == prev {
				return min(1, float64(i+1)*c.epoch)
			}
			return min(1, (float64(i)+(pages-prev)/(d-prev))*c.epoch)
		}
		prev = d
	}
	return 1
}
