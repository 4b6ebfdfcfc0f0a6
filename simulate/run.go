package simulate

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"time"

	"github.com/pagecast/pagecast/migrator"
	"github.com/pagecast/pagecast/migrator/mecom"
)

// Options describe a simulated migration.
type Options struct {
	Workload      Workload
	Bandwidth     uint64                 // the link, bytes/s
	DowntimeLimit time.Duration          // default 300 ms
	MaxRounds     int                    // default the engine's
	TargetRound   int                    // throttle's; default the engine's
	Start         uint64                 // the workload epoch the migration starts at
	Content       Mix                    // default DefaultMix
	Written       Mix                    // what written pages hold; default Content's non-zero classes
	Classes       map[uint64]mecom.Class // what some pages hold once written; before Written (see GuestOptions)
	Samples       *Samples               // pages standing for each class's (a live guest's); nil: generated ones
	// WrittenSamples are pages standing for each class's among those the
	// guest writes (SampleWritten: a live guest's written while watched);
	// nil: Samples.
	WrittenSamples *Samples
	// StateBytes is the vCPU and device state sent at the switch-over;
	// default 300 KiB, about what a small QEMU VM's device state weighs.
	StateBytes int
	// VCPUs is the guest's vCPU count, which post-copy's faults and the
	// guest's slowdown go by (see GuestOptions); default 1.
	VCPUs int
	// Response is what the guest writes while throttled (see Response);
	// nil: Linear, as pagecast's own guest. A Linux guest's is far from
	// it: LinuxResponse, or measured (MeasureResponse).
	Response Response
	// Switchover is the fixed cost of a switch-over (see
	// migrator.SimConfig); default 0.
	Switchover time.Duration
	// ChecksumRate is how fast the paused source reads the memory its
	// guest holds for the checksums after the switch-over, bytes/s (see
	// migrator.SimConfig); default DefaultChecksumRate, negative: not
	// counted.
	ChecksumRate float64
	// PageRate is the most pages a second the engine's own path moves,
	// whatever the link (see migrator.SimConfig, MeasurePageRate); 0:
	// no such bound.
	PageRate float64
	// PausedPageRate is PageRate while the guest is paused (see
	// migrator.SimConfig); 0: PageRate.
	PausedPageRate float64
	// PolicyTime passes the policy's own time on the migration's clock
	// (see migrator.SimConfig): what a live auto charges.
	PolicyTime bool
	// CodingScale has MECOM's coding cost this many times the CPU time
	// measured on the machine as it simulates (see
	// migrator.SimConfig.CodingScale); 0: as measured.
	CodingScale float64
	// Grow replays a workload that ends before the migration does with
	// the pages it wrote once moved elsewhere on each lap (see
	// GuestOptions.Grow): what auto predicts from, a guest watched for
	// a few seconds that goes on writing memory it had not.
	Grow bool
	// Lead, with Grow, is how long after the workload's end the
	// migration starts (see GuestOptions.Lead): a live auto's probes and
	// predictions, which a sweep of memory goes on through.
	Lead time.Duration
	// Shift starts such a front this many pages further still (see
	// GuestOptions.Shift).
	Shift float64
	// Profile, if set, is a trace that warms the predictive modes'
	// predictor before round 1, as migrate --profile does live.
	Profile string
	// Step is how often, in virtual time, Result.Timeline samples the
	// migration; default one epoch.
	Step time.Duration
	// Budget, if set, bounds the real time auto's predictions take
	// (ChooseAmong): the simulations still running then stop (a
	// *CutShort whose Budget is set) and are not chosen.
	Budget time.Duration
	// Progress, if set, hears of each of Result.Timeline's points as it
	// is sampled, with the mode's name: how far a long simulation has
	// come.
	Progress func(mode string, p Point)
	// Done, if set, hears of each simulation's result as it ends.
	Done func(Result)
}

// DefaultStateBytes is Options.StateBytes' default.
const DefaultStateBytes = 300 << 10

// DefaultChecksumRate is Options.ChecksumRate's default, a little under the
// slowest measured live on two cores: a 1 GiB QEMU TCG guest holding some
// 730 MiB summed in 308 ms (2.3 GiB/s, its vCPU busy on the other core);
// a 3 GiB one holding 2 GiB in 309 ms (6.5 GiB/s) and a 5 GiB one holding
// 2.4 GiB in 300–307 ms (7.8–8.0 GiB/s) on another day's machine.
const DefaultChecksumRate = 2 << 30

// Result is one mode's simulated migration.
type Result struct {
	Mode    string
	Info    migrator.Info // as query-migrate would have reported it at the end
	Replays uint64        // times the workload was started over, from Start
	// Moved is the share of the pages the workload wrote once, Once of
	// them, that each replay wrote elsewhere (Options.Grow;
	// GuestOptions.Grow).
	Moved float64
	Once  uint64
	// Drift, where they went on as one front (a sweep of memory), is
	// how far each replay moved them, pages, the sign its direction; 0:
	// an offset drawn for each replay.
	Drift float64
	// Lead is how far the front had gone on before the migration
	// (Options.Lead), pages.
	Lead  float64
	Start uint64 // the workload epoch the migration started at
	// DowntimeLimit is the limit the migration was given (Options'
	// or the default), which its Downtime may pass where the round cap
	// forced the stop-and-copy.
	DowntimeLimit time.Duration
	Timeline      []Point
	// Wall is the real time the simulation took, and Events the pages
	// it handled: sent, deferred or written by the guest.
	Wall   time.Duration
	Events uint64
	Err    error
}

// LaterRounds returns the mean length of the pre-copy rounds after the
// first, or the first's where it is the only one, from the timeline (0
// where there is none): where it is shorter than the workload's epoch,
// the rounds meet less of the dirtying than a live migration's would (see
// Guest: each page of an epoch is written at one instant in it). The last
// round is the switch-over (the stop-and-copy, or post-copy's start),
// whose guest writes nothing here, and is not counted. The timeline has a
// point as each round begins.
func (r Result) LaterRounds() time.Duration {
	if r.Err != nil || len(r.Timeline) == 0 {
		return 0
	}
	last := r.Timeline[len(r.Timeline)-1].Round
	if last < 2 {
		return 0
	}
	starts := make(map[int]time.Duration, 3)
	for i, p := range r.Timeline {
		if i == 0 || r.Timeline[i-1].Round != p.Round {
			starts[p.Round] = p.At
		}
	}
	if last == 2 { // round 1, then the switch-over
		return starts[2] - starts[1]
	}
	return (starts[last] - starts[2]) / time.Duration(last-2)
}

// Point is the migration's state at one virtual instant.
type Point struct {
	At          time.Duration // since the migration began
	Remaining   uint64        // bytes the destination lacks
	Transferred uint64        // bytes sent
	Round       int
}

// Check reports impossible options, one line each.
func (o Options) Check() error {
	if o.Workload == nil {
		return errors.New("simulate: no workload")
	}
	if o.Bandwidth == 0 {
		return errors.New("simulate: bandwidth 0: a migration needs a link that moves bytes (e.g. --bandwidth 1Gbit/s)")
	}
	if err := migrator.CheckLink(o.Bandwidth, downtimeLimit(o)); err != nil {
		return fmt.Errorf("simulate: %w", err)
	}
	if o.StateBytes < 0 || o.StateBytes > migrator.MaxState {
		// The simulated guest holds a state of this size.
		return fmt.Errorf("simulate: device state of %d bytes: want 0 (the default, %d) to %d, what a migration carries", o.StateBytes, DefaultStateBytes, migrator.MaxState)
	}
	if w := o.Workload; w.Len() > 0 && o.Start >= w.Len() {
		return fmt.Errorf("simulate: start at epoch %d, but the workload has %d epochs", o.Start, w.Len())
	}
	return nil
}

// Run simulates a migration in mode (any migrator mode: precopy,
// predictive, throttle, tsmc, mecom, MODE+mecom, MODE+postcopy).
func Run(ctx context.Context, o Options, mode string) Result {
	r := run(ctx, o, mode)
	if o.Done != nil {
		o.Done(r)
	}
	return r
}

// run is Run but for telling o.Done.
func run(ctx context.Context, o Options, mode string) Result {
	r := Result{Mode: mode, Start: o.Start, DowntimeLimit: downtimeLimit(o)}
	if r.Err = o.Check(); r.Err != nil {
		return r
	}
	if r.Err = CheckMemory(o.Workload.Pages(), mode); r.Err != nil {
		return r
	}
	if o.StateBytes == 0 {
		o.StateBytes = DefaultStateBytes
	}
	if o.Step <= 0 {
		o.Step = o.Workload.Epoch()
	}
	switch {
	case o.ChecksumRate == 0:
		o.ChecksumRate = DefaultChecksumRate
	case o.ChecksumRate < 0:
		o.ChecksumRate = 0
	}
	start := time.Unix(0, 0).UTC()
	clock := migrator.NewVirtualClock(start)
	g, err := NewGuest(o.Workload, clock, GuestOptions{Start: o.Start, Content: o.Content, Written: o.Written, Classes: o.Classes, Samples: o.Samples, WrittenSamples: o.WrittenSamples, StateBytes: o.StateBytes, VCPUs: o.VCPUs, Response: o.Response, Grow: o.Grow, Lead: o.Lead, Shift: o.Shift})
	if err != nil {
		r.Err = err
		return r
	}
	observe := func(i migrator.Info) {
		at := clock.Now().Sub(start)
		p := Point{At: at, Round: i.Pagecast.Round}
		if i.RAM != nil {
			p.Remaining, p.Transferred = i.RAM.Remaining, i.RAM.Transferred
		}
		r.Timeline = append(r.Timeline, p)
		if o.Progress != nil {
			o.Progress(mode, p)
		}
	}
	cfg := migrator.Config{Mode: mode, MaxBandwidth: o.Bandwidth, DowntimeLimit: o.DowntimeLimit,
		MaxRounds: o.MaxRounds, TargetRound: o.TargetRound, Clock: clock, Profile: o.Profile} // the predictive policy alone reads Profile
	t0 := time.Now()
	r.Info, r.Err = migrator.Simulate(ctx, g, cfg, migrator.SimConfig{Switchover: o.Switchover, ChecksumRate: o.ChecksumRate, PageRate: o.PageRate, PausedPageRate: o.PausedPageRate, PolicyTime: o.PolicyTime, CodingScale: o.CodingScale, Observe: observe, ObserveEvery: o.Step})
	r.Wall = time.Since(t0)
	if r.Info.RAM != nil {
		r.Timeline = append(r.Timeline, Point{At: clock.Now().Sub(start), Transferred: r.Info.RAM.Transferred, Round: r.Info.Pagecast.Round})
		r.Events = r.Info.RAM.Normal + r.Info.RAM.Duplicate + r.Info.Pagecast.DeferredAll + g.written()
	}
	r.Replays = g.Replays()
	if g.once != nil {
		r.Moved, r.Once, r.Drift, r.Lead = g.moveShare, g.onceCount, g.drift, g.lead
	}
	runtime.GC() // a terabyte guest's bitmaps are large; free them before the next mode
	return r
}
