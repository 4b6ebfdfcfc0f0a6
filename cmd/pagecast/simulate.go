package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"math"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/pagecast/pagecast/internal/buildinfo"
	"github.com/pagecast/pagecast/internal/printable"
	"github.com/pagecast/pagecast/internal/units"
	"github.com/pagecast/pagecast/migrator"
	"github.com/pagecast/pagecast/migrator/mecom"
	"github.com/pagecast/pagecast/predictor"
	"github.com/pagecast/pagecast/simulate"
	"github.com/pagecast/pagecast/trace"
)

// allModes is what --mode all runs, pre-copy first: the others are
// compared with it.
var allModes = simulate.AutoModes

func simulateCommand() *cli.Command {
	var kinds []string
	for _, k := range simulate.SyntheticKinds {
		kinds = append(kinds, fmt.Sprintf("  %-8s %s", k.Name, k.Description))
	}
	return &cli.Command{
		Name:      "simulate",
		Usage:     "run the migration engine on a recorded or synthetic workload, on a virtual clock",
		UsageText: "pagecast simulate (--trace FILE | --synthetic SPEC --memory SIZE) [--bandwidth 1Gbit/s] [--mode all|MODE,...] [options]",
		Description: "Predicts what migrating a VM costs in every mode before it starts, for VMs of any size: the engine of\n" +
			"pagecast migrate (its policies, stop decision, throttle, TSMC stages and MECOM codec choice) runs\n" +
			"unchanged against a guest that writes the workload's pages each epoch, over a virtual link that\n" +
			"moves each record's bytes at the bandwidth. Page contents follow --content; compression is\n" +
			"measured on real sample pages of each class. A workload that ends before the migration does is\n" +
			"replayed from --start (its boot is not run again), and the table says so. Its last column, guest\n" +
			"slowed, is the share of the vCPUs' time the guest loses while it runs during the migration: what\n" +
			"the throttle withholds, and in post-copy what its vCPUs wait for pages they fault on (each of\n" +
			"--vcpus waits a push of 32 pages on the link per page it pulls). The modes run at once, one a\n" +
			"core, as memory allows; on stderr a line says, every 5 s, the round and the simulated time each has\n" +
			"reached, and another when each ends. See README.md, \"Simulating a migration\".\n\n" +
			"Columns: total, the migration's time; downtime, the guest's pause at the switch-over; bytes sent;\n" +
			"rounds, the live rounds and the last (stop-and-copy, or post-copy's switch); pages per round,\n" +
			"the pages each round sent (the first five and last two); deferred, the pages held back, summed\n" +
			"over the rounds (a page held back in two counts twice); throttle, the share of the vCPUs' time\n" +
			"the throttle withheld at its last level; pulled, the pages post-copy's destination faulted on.\n\n" +
			"Synthetic workloads (--synthetic NAME:key=val,...), generated epoch by epoch:\n" + strings.Join(kinds, "\n") + "\n\n" +
			"Examples:\n" +
			"  pagecast simulate --trace predictor/testdata/real/awk.pct --bandwidth 64MiB/s --mode all\n" +
			"  pagecast simulate --trace awk.csv --memory 256M --epoch 100ms --bandwidth 64MiB/s --mode precopy   # an epoch,page CSV\n" +
			"  pagecast simulate --synthetic hotset:hot=4G,p=0.9,rate=200k --memory 1T --bandwidth 10Gbit/s --mode precopy,tsmc",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "trace", Usage: "a trace (pagecast profile --out) of 4 KiB pages, or an epoch,page CSV (.csv, .csv.gz; needs --memory)"},
			&cli.StringFlag{Name: "synthetic", Usage: "a synthetic workload instead of a trace, e.g. hotset:hot=1G,p=0.9,rate=100k (needs --memory)"},
			&cli.StringFlag{Name: "memory", Usage: "guest memory for a CSV trace or a synthetic workload, e.g. 256M or 1T"},
			&cli.StringFlag{Name: "epoch", Value: "100ms", Usage: "epoch length for a CSV trace or a synthetic workload"},
			pageSizeFlag("", true), // csvGeometry reads it; the engine moves 4 KiB pages
			&cli.StringFlag{Name: "bandwidth", Value: "1Gbit/s", Usage: "the link, e.g. 64MiB/s or 10Gbit/s (K, M, G bytes are binary, KB, MB, GB too, as QEMU reads them; bits decimal)"},
			&cli.DurationFlag{Name: "downtime-limit", Value: migrator.DefaultDowntimeLimit, Usage: "how long the guest may stay paused"},
			&cli.StringFlag{Name: "mode", Value: "all", Usage: "all, auto (choose from what is observed before the start, then run the choice), or modes separated by commas: " + strings.Join(allModes, ", ")},
			&cli.StringFlag{Name: "prefer", Value: simulate.PreferTime, Usage: "auto: optimise total time, bytes or downtime, the downtime limit a hard bound"},
			&cli.IntFlag{Name: "observe", Value: 50, Usage: "auto: epochs of the workload observed before the start to predict from (without --start, the migration starts after them)"},
			&cli.BoolFlag{Name: "judge", Usage: "auto: also run every mode on the workload and say how far the choice was from the best in hindsight"},
			&cli.IntFlag{Name: "max-rounds", Value: migrator.DefaultMaxRounds, Usage: "pre-copy rounds before the stop-and-copy is forced"},
			&cli.Uint64Flag{Name: "start", DefaultText: "the trace's first epoch", Usage: "the epoch the migration starts at, numbered as trace info numbers a trace's (pagecast's recordings start at 1); a trace's first epochs may be its boot"},
			&cli.StringFlag{Name: "content", Value: simulate.DefaultMix.String(), Usage: "page contents: shares of zero, repeat, text and random pages"},
			&cli.StringFlag{Name: "written-content", Usage: "what a page holds once the workload writes it, in the same shares (default: --content's non-zero classes, in their proportions; text where it has none); a guest that writes zeros (dd if=/dev/zero, memory it frees cleared) sends far less than that, as migrate --mode auto, which measures it in the guest, finds"},
			&cli.StringFlag{Name: "state-size", Value: "300K", Usage: "vCPU and device state sent at the switch-over"},
			&cli.IntFlag{Name: "vcpus", Value: 1, Usage: "the guest's vCPUs: in post-copy each waits for one missing page at a time, and the guest slowed column is a share of their time"},
			&cli.StringFlag{Name: "throttle-response", DefaultText: "linear for pagecast's own guest (a synthetic workload; a trace of it, as trace info's guest row says), else linux", Usage: "what a throttled guest still writes: linear (in proportion to its CPU time, as pagecast's own guest), linux (measured on three programs in a Linux guest, 100 ms epochs: throttled 99%, they wrote 5-24% of their pages, not 1%; see README), or SHARE:SPAN pairs, the share of CPU time left and the share of the wall-clock time whose writes the guest still makes, e.g. 0.01:0.15,0.1:0.6 (what migrate --mode auto measures and prints)"},
			&cli.DurationFlag{Name: "switchover", Usage: "fixed cost of a switch-over besides moving memory (restoring the guest's state, the commit)"},
			&cli.StringFlag{Name: "checksum-rate", Value: units.FormatBytes(simulate.DefaultChecksumRate) + "/s", Usage: "how fast the paused source reads the memory its guest holds for the memory check after the switch-over, which lengthens the total time (0: not counted)"},
			&cli.StringFlag{Name: "page-rate", Value: "0", Usage: "the most pages a second pagecast's own path moves (reading, sending, receiving, writing) whatever the link, e.g. 40k: what bounds a migration where the CPU, not the link, is short; migrate --mode auto measures it where both ends share a host (0: no bound)"},
			&cli.StringFlag{Name: "paused-page-rate", Value: "0", Usage: "--page-rate while the guest is paused (the stop-and-copy), whose vCPUs then leave the host's cores to the migration; migrate --mode auto measures it beside the page rate (0: --page-rate)"},
			&cli.BoolFlag{Name: "policy-time", Usage: "charge the predictor's own time, measured as the simulation runs, on the migration's clock, as migrate --mode auto does: live, the engine waits for it at every harvest (the figures then vary with this machine's load)"},
			&cli.BoolFlag{Name: "json", Usage: "print the results as JSON (query-migrate's shape per mode: times in milliseconds, bytes in bytes, as QEMU's) instead of a table"},
			&cli.StringFlag{Name: "plot", Usage: "write DIR/timeline.png: pending and sent bytes over time, per mode"},
		},
		Action: runSimulate,
	}
}

// throttleResponse is --throttle-response's: by default Linear for
// pagecast's own guest (a synthetic workload, or a trace of it:
// trace.Meta.Guest), else LinuxResponse (a real VM's trace, a Linux
// guest's most likely).
func throttleResponse(s string, w simulate.Workload) (simulate.Response, error) {
	if s != "" {
		return simulate.ParseResponse(s)
	}
	if _, ok := w.(*simulate.Synthetic); ok {
		return simulate.Linear, nil
	}
	if t, ok := w.(*simulate.Trace); ok && t.Guest() == trace.GuestPagecast {
		return simulate.Linear, nil
	}
	return simulate.LinuxResponse, nil
}

// writeResponseNote says, where a mode in results throttles, what the
// throttled guest was taken to write.
func writeResponseNote(out io.Writer, r simulate.Response, results []simulate.Result) {
	if !slices.ContainsFunc(results, func(r simulate.Result) bool { return migrator.Throttles(r.Mode) }) {
		return
	}
	// What was taken, not what happened: the table's throttle is its
	// own (walk 119 read "throttled 99%" against a row's 88%).
	fmt.Fprintf(out, "the throttle's response taken: a guest throttled 99%% writes in a second what it writes in %v unthrottled (--throttle-response %s)\n",
		(time.Duration(r.At(0.01) * float64(time.Second))).Round(time.Millisecond), r)
}

// simulation is one mode's result as --json prints it.
type simulation struct {
	Mode        string         `json:"mode"`
	Info        *migrator.Info `json:"query-migrate,omitempty"`
	Replays     uint64         `json:"trace-replays"`
	WallSeconds float64        `json:"wall-seconds"`
	Error       string         `json:"error,omitempty"`
	// LostEpochs are the epochs a trace lacks (lost with damage, or
	// never recorded), replayed as idle, that this mode's migration ran
	// through (the trace's epoch
	// indices): its figures may be better than the program's.
	LostEpochs []lostJSON `json:"lost-epochs-run-through,omitempty"`
	// Inputs are what the simulation was run with, so that a figure
	// can be made again (walk 119: the JSON recorded none of them).
	Inputs *simInputs `json:"inputs,omitempty"`
}

// simInputs is what simulate --json says it ran on: the workload and the
// options, in query-migrate's units (bytes, bytes a second, ms).
type simInputs struct {
	Workload         string  `json:"workload"` // the trace's file name, or the synthetic spec
	Start            uint64  `json:"start"`    // the epoch the migration began at, numbered as trace info numbers them
	Bandwidth        uint64  `json:"bandwidth"`
	DowntimeLimit    int64   `json:"downtime-limit"`
	MaxRounds        int     `json:"max-rounds"`
	Content          string  `json:"content"`
	Written          string  `json:"written-content"` // --written-content, or what it defaults to: content's non-zero classes
	ThrottleResponse string  `json:"throttle-response"`
	StateSize        int     `json:"state-size"`
	Switchover       int64   `json:"switchover"`
	ChecksumRate     float64 `json:"checksum-rate"`    // 0: not counted
	PageRate         float64 `json:"page-rate"`        // pages a second; 0: no bound
	PausedPageRate   float64 `json:"paused-page-rate"` // pages a second; 0: page-rate
	VCPUs            int     `json:"vcpus"`
	PolicyTime       bool    `json:"policy-time"`
	Version          string  `json:"pagecast-version"`
}

func runSimulate(c *cli.Context) error {
	w, lost, err := simulationWorkload(c)
	if err != nil {
		return err
	}
	bw, err := linkBandwidth(c.String("bandwidth"))
	if err != nil {
		return err
	}
	auto := c.String("mode") == "auto"
	var modes []string
	if !auto {
		if modes, err = simulationModes(c.String("mode")); err != nil {
			return err
		}
	}
	mix, err := simulate.ParseMix(c.String("content"))
	if err != nil {
		return fmt.Errorf("--content: %w", err)
	}
	if sum := contentSum(c.String("content")); math.Abs(sum-1) > 0.01 {
		// ParseMix scales weights to 1: zero=0.5 alone would be a guest
		// of zero pages only, not half of them.
		return fmt.Errorf("--content %q: the shares sum to %g; give every class's share, summing to 1 (the default is %s)", c.String("content"), sum, simulate.DefaultMix)
	}
	var written simulate.Mix // zero: the default
	if v := c.String("written-content"); v != "" {
		if written, err = simulate.ParseMix(v); err != nil {
			return fmt.Errorf("--written-content: %w", err)
		}
		if sum := contentSum(v); math.Abs(sum-1) > 0.01 {
			return fmt.Errorf("--written-content %q: the shares sum to %g; give every class's share, summing to 1", v, sum)
		}
	}
	state, err := units.ParseBytes(c.String("state-size"))
	if err != nil || state > migrator.MaxState {
		return fmt.Errorf("--state-size %q: want a size up to %s", c.String("state-size"), units.FormatBytes(migrator.MaxState))
	}
	sumRate := -1.0 // not counted
	if r := c.String("checksum-rate"); strings.TrimSpace(r) != "0" {
		// At least 1 MiB/s: memory is summed at GiB/s, and at 1 B/s a
		// 256 MiB guest's sums took years of its total time (walk 129).
		n, err := units.ParseRate(r)
		if err != nil || n < 1<<20 {
			return fmt.Errorf("--checksum-rate %q: want a rate of 1MiB/s or more, such as 2GiB/s, or 0 not to count the checksums", r)
		}
		sumRate = float64(n)
	}
	pageRate, err := simulate.ParsePageRate(c.String("page-rate"))
	if err != nil {
		return fmt.Errorf("--page-rate %q: %w", c.String("page-rate"), err)
	}
	pausedRate, err := simulate.ParsePageRate(c.String("paused-page-rate"))
	if err != nil {
		return fmt.Errorf("--paused-page-rate %q: %w", c.String("paused-page-rate"), err)
	}
	if pausedRate > 0 && pageRate == 0 {
		return errors.New("--paused-page-rate is --page-rate while the guest is paused: give --page-rate too")
	}
	if pausedRate > 0 && pausedRate < pageRate {
		return fmt.Errorf("--paused-page-rate %s: below --page-rate %s; a paused guest leaves the migration its cores, it takes none", c.String("paused-page-rate"), c.String("page-rate"))
	}
	if n := c.Int("vcpus"); n < 1 || n > 4096 {
		return fmt.Errorf("--vcpus %d: want 1 to 4096", n)
	}
	if n := c.Int("max-rounds"); n > migrator.MaxRoundsLimit {
		return fmt.Errorf("--max-rounds %d: want at most %d", n, migrator.MaxRoundsLimit)
	}
	if c.Int("max-rounds") < 1 {
		return fmt.Errorf("--max-rounds %d: want at least 1 (a simulation needs a round cap: a workload that never converges would be replayed for ever; live, QEMU's own migration with migrate --max-rounds 0 leaves it to the guest)", c.Int("max-rounds"))
	}
	// --start, and every epoch said, as trace info numbers a trace's
	// epochs: pagecast's recordings start at 1.
	first := firstIndex(w)
	start := c.Uint64("start")
	if c.IsSet("start") && (start < first || start-first >= w.Len() && w.Len() > 0) {
		return fmt.Errorf("--start %d: the workload's epochs run from %d to %d", start, first, first+w.Len()-1)
	}
	start = max(start, first) - first
	o := simulate.Options{Workload: w, Bandwidth: bw, DowntimeLimit: c.Duration("downtime-limit"), MaxRounds: c.Int("max-rounds"),
		Start: start, Content: mix, Written: written, StateBytes: max(1, int(state)), Switchover: c.Duration("switchover"), ChecksumRate: sumRate, PageRate: pageRate,
		PausedPageRate: pausedRate, PolicyTime: c.Bool("policy-time"), VCPUs: c.Int("vcpus")}
	if o.Response, err = throttleResponse(c.String("throttle-response"), w); err != nil {
		return fmt.Errorf("--throttle-response: %w", err)
	}
	if c.Duration("downtime-limit") <= 0 {
		return fmt.Errorf("--downtime-limit %v: want a positive duration", c.Duration("downtime-limit"))
	}
	if err := o.Check(); err != nil {
		return errors.New(strings.TrimPrefix(err.Error(), "simulate: "))
	}
	if c.Duration("switchover") < 0 {
		return fmt.Errorf("--switchover %v: want 0 or more", c.Duration("switchover"))
	}
	if o.Switchover >= o.DowntimeLimit {
		return fmt.Errorf("--switchover %v: the switch-over's fixed cost alone is the downtime limit of %v or more, so no migration can meet it", o.Switchover, o.DowntimeLimit)
	}
	if limit, took := o.DowntimeLimit, time.Duration(float64(o.StateBytes)/float64(bw)*float64(time.Second))+o.Switchover; took > limit {
		return fmt.Errorf("--state-size %s: the state alone takes %v at %s/s (with --switchover %v), more than the downtime limit of %v, so no migration can meet it",
			units.FormatBytes(float64(o.StateBytes)), took.Round(time.Millisecond), units.FormatBytes(float64(bw)), o.Switchover, limit)
	}
	if pr, flag := o.PageRate, "page-rate"; pr > 0 {
		if o.PausedPageRate > 0 {
			pr, flag = o.PausedPageRate, "paused-page-rate" // the state goes in the pause
		}
		// The engine's own path as a link of pr pages a second: the
		// state's pages too go through it.
		if took := time.Duration(math.Ceil(float64(o.StateBytes)/migrator.PageSize)/pr*float64(time.Second)) + o.Switchover; took > o.DowntimeLimit {
			return fmt.Errorf("--%s %s: the state alone takes %v at %s pages a second (with --switchover %v), more than the downtime limit of %v, so no migration can meet it",
				flag, c.String(flag), took.Round(time.Millisecond), pace(pr), o.Switchover, o.DowntimeLimit)
		}
	}
	if auto {
		if _, err := simulate.CheckPrefer(c.String("prefer")); err != nil {
			return fmt.Errorf("--prefer: %w", err)
		}
		if n := c.Int("observe"); n < 1 {
			return fmt.Errorf("--observe %d: auto needs at least one epoch observed", n)
		}
		if c.IsSet("plot") {
			return errors.New("--plot is for a run of given modes, not --mode auto (plot the mode auto chose with --mode MODE --plot DIR)")
		}
	} else {
		for _, f := range []string{"prefer", "observe", "judge"} {
			if c.IsSet(f) {
				return fmt.Errorf("--%s is for --mode auto", f)
			}
		}
	}
	if dir := c.String("plot"); dir != "" {
		// Made before a run that may take long, so that a folder that
		// cannot be made fails first; removed again if the run ends
		// without a plot and the folder was new.
		if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
			defer os.Remove(dir) // only if still empty
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("--plot: %w", err)
		}
	}
	ctx, cancel := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer cancel()
	if auto {
		return simulateAuto(c, ctx, o, lost)
	}

	// A mode refused for memory is refused at once, saying why: not slow.
	runnable := slices.DeleteFunc(slices.Clone(modes), func(m string) bool { return simulate.CheckMemory(w.Pages(), m) != nil })
	if len(runnable) == 0 {
		// None runs: one error, before any table or JSON (walk 104: an
		// empty table, and JSON of nothing but the error, exit 1).
		slices.SortStableFunc(modes, func(a, b string) int {
			return cmp.Compare(simulate.RunBytes(w.Pages(), a), simulate.RunBytes(w.Pages(), b))
		})
		err := simulate.CheckMemory(w.Pages(), modes[0]) // the least it needs
		if len(modes) > 1 {
			err = fmt.Errorf("%w; the other modes asked (%s) need as much or more", err, strings.Join(modes[1:], ", "))
		}
		return err
	}
	if note := slowModesNote(w.Pages(), runnable); note != "" {
		fmt.Fprintln(c.App.ErrWriter, note)
	}
	fmt.Fprintf(c.App.ErrWriter, "simulating %s%s …\n", strings.Join(modes, ", "), atOnce(o, modes))
	watchSims(&o, c.App.ErrWriter, "  ", progressEvery)
	results := simulate.RunAll(ctx, o, modes)
	if ctx.Err() != nil {
		return errors.New("interrupted while simulating")
	}
	warnLost(c.App.ErrWriter, w, o.Start, lost, results)
	if c.Bool("json") {
		in := &simInputs{Workload: w.Name(), Start: o.Start + first, Bandwidth: o.Bandwidth, DowntimeLimit: c.Duration("downtime-limit").Milliseconds(),
			MaxRounds: o.MaxRounds, Content: o.Content.String(), ThrottleResponse: o.Response.String(), StateSize: o.StateBytes,
			Switchover: o.Switchover.Milliseconds(), ChecksumRate: max(sumRate, 0), PageRate: o.PageRate, PausedPageRate: o.PausedPageRate,
			VCPUs: o.VCPUs, PolicyTime: o.PolicyTime, Version: buildinfo.Version()}
		// Every input, defaults too (walk 129: written-content, page-rate
		// and paused-page-rate were left out at theirs).
		in.Written = writtenMix(o)
		out := make([]simulation, len(results))
		for i, r := range results {
			out[i] = simulation{Mode: r.Mode, Replays: r.Replays, WallSeconds: r.Wall.Seconds(), Inputs: in}
			for _, l := range ranThrough(w, o.Start, lost, r) {
				out[i].LostEpochs = append(out[i].LostEpochs, lostJSON{l.from, l.to, !l.unrecorded})
			}
			if r.Err != nil {
				out[i].Error = r.Err.Error()
			} else {
				out[i].Info = &r.Info
			}
		}
		enc := json.NewEncoder(c.App.Writer)
		enc.SetIndent("", "  ")
		if err := enc.Encode(out); err != nil {
			return err
		}
		writeShortRounds(c.App.ErrWriter, w, results, fmt.Sprintf("record the trace in shorter epochs (pagecast profile --epoch %v) or give a synthetic workload a shorter --epoch",
			max(w.Epoch()/4, time.Millisecond).Round(time.Millisecond))) // what the table would say below it
	} else {
		rate := simulate.DirtyRate(w, o.Start)
		// A trace records which pages were written, not what they
		// hold: the bytes turn on the mix (walk 119: a CSV trace's
		// precopy sent 39.5 MiB at the default, 74.3 MiB at random=1).
		assumed := ""
		if !c.IsSet("content") {
			assumed = " (--content's default: a trace does not record it; pagecast profile prints a guest's)"
			if _, ok := w.(*simulate.Synthetic); ok {
				assumed = " (--content's default)"
			}
		}
		if o.Written != (simulate.Mix{}) || o.Content[mecom.Zero] == 1 {
			// Said where it is not the content's own data classes
			// (walk 157: zero=1 said nothing of what written pages hold).
			assumed += ", written pages " + writtenMix(o)
		}
		fmt.Fprintf(c.App.Writer, "%s: %s guest, %s/s link, downtime limit %v, content %s%s\n", w.Name(),
			units.FormatBytes(float64(w.Pages()*migrator.PageSize)), units.FormatBytes(float64(bw)), o.DowntimeLimit, mix, assumed)
		// What moves pages: the link, or the engine's own path where
		// --page-rate makes it slower.
		pace, mover := float64(bw), "the link moves"
		if pr := o.PageRate * migrator.PageSize; pr > 0 && pr < pace {
			pace, mover = pr, fmt.Sprintf("the engine, at --page-rate %s pages a second (%s/s, slower than the link), moves", c.String("page-rate"), units.FormatBytes(pr))
		}
		if rate > 0 {
			fmt.Fprintf(c.App.Writer, "the workload writes %s/s from epoch %d on; %s %.2f times that\n",
				units.FormatBytes(rate), o.Start+first, mover, pace/rate)
		}
		writeSimulationTable(c.App.Writer, w, results)
		writeResponseNote(c.App.Writer, o.Response, results)
	}
	if dir := c.String("plot"); dir != "" {
		path := filepath.Join(dir, "timeline.png")
		if err := writeOutput(path, func(f io.Writer) error {
			return simulate.PlotTimeline(f, w.Name(), results)
		}); err != nil {
			return fmt.Errorf("--plot: %w", err)
		}
		fmt.Fprintf(c.App.ErrWriter, "wrote %s\n", printable.Line(path))
	}
	for _, r := range results {
		if r.Err != nil {
			err := fmt.Errorf("%s: %w", r.Mode, r.Err)
			if !c.Bool("json") {
				err = reported{err} // the table's notes said it
			}
			return err
		}
	}
	return nil
}

// contentSum is the sum of a --content's shares, which ParseMix has read.
func contentSum(s string) float64 {
	sum := 0.0
	for kv := range strings.SplitSeq(s, ",") {
		_, v, _ := strings.Cut(kv, "=")
		f, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
		sum += f
	}
	return sum
}

// simulationWorkload reads --trace or makes --synthetic, and says which
// epochs a damaged trace lost.
func simulationWorkload(c *cli.Context) (simulate.Workload, []lostSpan, error) {
	path, spec := c.String("trace"), c.String("synthetic")
	switch {
	case path == "" && spec == "":
		return nil, nil, errors.New("no workload: give --trace FILE or --synthetic SPEC (see pagecast simulate --help)")
	case path != "" && spec != "":
		return nil, nil, errors.New("--trace and --synthetic: give one workload, not both")
	case spec != "":
		if !c.IsSet("memory") {
			return nil, nil, errors.New("--synthetic needs --memory, the guest's size (e.g. 1T)")
		}
		g, err := csvGeometry(c)
		if err != nil {
			return nil, nil, err
		}
		w, err := simulate.ParseSynthetic(spec, g.MemoryBytes/migrator.PageSize, g.Epoch)
		return w, nil, err
	}
	var g predictor.CSVOptions
	if !predictor.IsCSV(path) && (c.IsSet("memory") || c.IsSet("epoch")) {
		return nil, nil, fmt.Errorf("%s is not named .csv or .csv.gz, so it is read as a pagecast trace file, which gives the guest's memory and epoch: --memory and --epoch are for CSV traces and synthetic workloads", path)
	}
	if predictor.IsCSV(path) {
		if !c.IsSet("memory") {
			return nil, nil, fmt.Errorf("%s is a CSV trace: give the guest's size with --memory (and --epoch if not 100ms)", path)
		}
		var err error
		if g, err = csvGeometry(c); err != nil {
			return nil, nil, err
		}
	}
	meta, epochs, damage, err := predictor.ReadTrace(path, g)
	if err != nil {
		return nil, nil, err
	}
	// A pagecast trace records idle epochs too: those missing went with
	// the damage, or were never recorded (walk 157: a trace of epochs
	// 1000 apart was replayed as 3 million idle ones without a word).
	lost := lostEpochs(epochs, damage)
	switch {
	case len(epochs) == 0 && len(damage) > 0:
		// Not "simulating the intact epochs" of none (review walk 161).
		return nil, nil, fmt.Errorf("%s: no intact epoch: %s skipped (pagecast trace info lists them)", printable.Line(path), stretches(len(damage)))
	case len(damage) > 0 && len(lost) > 0:
		fmt.Fprintf(c.App.ErrWriter, "pagecast: warning: %s: %s skipped; simulating the intact epochs, and those %s (%s) as idle%s\n", printable.Line(path), stretches(len(damage)), lostHow(lost), spanList(lost), lostAtEnds(damage))
	case len(damage) > 0:
		fmt.Fprintf(c.App.ErrWriter, "pagecast: warning: %s: %s skipped; simulating the intact epochs (none is missing between them)%s\n", printable.Line(path), stretches(len(damage)), lostAtEnds(damage))
	case len(lost) > 0:
		fmt.Fprintf(c.App.ErrWriter, "pagecast: warning: %s lacks %d epoch indices between its first and last (%s), not damaged but never recorded: simulating them as idle\n", printable.Line(path), lostCount(lost), spanList(lost))
	}
	w, err := simulate.NewTrace(printable.Line(filepath.Base(path)), meta, epochs)
	return w, lost, err
}

// writtenMix is what o's written pages hold, as --written-content gives
// it: the content's non-zero classes where it was not given.
func writtenMix(o simulate.Options) string {
	if o.Written != (simulate.Mix{}) {
		return o.Written.String()
	}
	data, sum := o.Content, 1-o.Content[mecom.Zero]
	if sum == 0 {
		return "text=1" // written pages of an all-zero mix hold text (simulate.GuestOptions)
	}
	data[mecom.Zero] = 0
	for i := range data {
		data[i] /= sum // as --written-content takes it: summing to 1
	}
	return data.String()
}

// lostAtEnds says where damage took the records before the first intact
// epoch or after the last, whose epochs cannot be counted (walk 157: a
// trace whose first record was damaged was said to have lost "no whole
// epoch").
func lostAtEnds(damage []trace.Damage) string {
	var s string
	if d := damage[0]; !d.HasPrev && d.HasNext {
		s += fmt.Sprintf("; what came before epoch %d went with the damage (how many epochs, if any, cannot be told): the trace begins there", d.Next)
	}
	switch d := damage[len(damage)-1]; {
	case d.HasPrev && !d.HasNext && d.Disordered > 0:
		// A trace followed by a copy of itself lost nothing (review
		// walk 161).
		s += fmt.Sprintf("; after epoch %d, the trace ends in damage or records that do not follow it (written again, or out of order: trace info says which)", d.Prev)
	case d.HasPrev && !d.HasNext:
		s += fmt.Sprintf("; what came after epoch %d went with the damage (how many epochs, if any, cannot be told): the trace ends there", d.Prev)
	}
	return s
}

// lostSpan is a stretch of epochs a trace lacks, from and to numbered as
// trace info numbers them; unrecorded where no damage lies between the
// intact epochs either side of it, to have taken them.
type lostSpan struct {
	from, to   uint64
	unrecorded bool
}

// lostEpochs lists the indices missing between the first and the last of
// epochs, each said lost with damage where a damaged stretch lies between
// the epochs either side of it (review walk 161: with any damage, every
// gap was).
func lostEpochs(epochs []trace.Epoch, damage []trace.Damage) []lostSpan {
	// The intact epochs either side of each stretch: a set, as a hostile
	// trace may hold hundreds of thousands of stretches and of gaps.
	between := make(map[[2]uint64]bool)
	for _, d := range damage {
		if d.HasPrev && d.HasNext {
			between[[2]uint64{d.Prev, d.Next}] = true
		}
	}
	idx := make([]uint64, len(epochs))
	for i, e := range epochs {
		idx[i] = e.Index
	}
	slices.Sort(idx)
	idx = slices.Compact(idx)
	var lost []lostSpan
	for i := 1; i < len(idx); i++ {
		if idx[i] > idx[i-1]+1 {
			lost = append(lost, lostSpan{idx[i-1] + 1, idx[i] - 1, !between[[2]uint64{idx[i-1], idx[i]}]})
		}
	}
	return lost
}

// lostCount is how many epochs spans hold.
func lostCount(spans []lostSpan) uint64 {
	var n uint64
	for _, s := range spans {
		n += s.to - s.from + 1
	}
	return n
}

// lostHow says how spans came to be missing.
func lostHow(spans []lostSpan) string {
	n := 0
	for _, s := range spans {
		if s.unrecorded {
			n++
		}
	}
	switch n {
	case 0:
		return "lost with the damage"
	case len(spans):
		return "missing from the trace"
	}
	return "lost with the damage or never recorded"
}

// spanList says spans as "epochs 3-5, 9": "none" for none.
func spanList(spans []lostSpan) string {
	if len(spans) == 0 {
		return "no whole epoch"
	}
	var parts []string
	for _, s := range spans[:min(len(spans), spansListed)] {
		part := strconv.FormatUint(s.from, 10)
		if s.to > s.from {
			part += "-" + strconv.FormatUint(s.to, 10)
		}
		parts = append(parts, part)
	}
	if len(spans) > spansListed {
		// Not a line of thousands (walk 157: a trace of epochs 1000
		// apart has 2998 gaps).
		parts = append(parts, fmt.Sprintf("… (%d stretches, %d epochs in all)", len(spans), lostCount(spans)))
	}
	word := "epochs "
	if len(spans) == 1 && spans[0].from == spans[0].to {
		word = "epoch "
	}
	return word + strings.Join(parts, ", ")
}

// spansListed is how many stretches spanList names.
const spansListed = 8

// lostWithin is those of lost that overlap epochs from to to.
func lostWithin(lost []lostSpan, from, to uint64) []lostSpan {
	var in []lostSpan
	for _, l := range lost {
		if l.to >= from && l.from <= to {
			in = append(in, l)
		}
	}
	return in
}

// warnLost says which modes' migrations ran through epochs the trace lost,
// replayed as idle: a program's quiet there is made up, and a pre-copy
// that converged in it converged on nothing the program did (walk 107: 3
// lost epochs took precopy from 15.5 s and 1.81 GiB to 824 ms and 94.7
// MiB, said only as a stretch skipped). start is the workload's epoch
// the migrations began at.
func warnLost(w io.Writer, wl simulate.Workload, start uint64, lost []lostSpan, results []simulate.Result) {
	if len(lost) == 0 {
		return
	}
	var modes []string
	var hit []lostSpan
	seen := make(map[lostSpan]bool) // a set: a trace may lack a million stretches
	for _, r := range results {
		in := ranThrough(wl, start, lost, r)
		for _, l := range in {
			if !seen[l] {
				seen[l] = true
				hit = append(hit, l)
			}
		}
		if len(in) > 0 {
			modes = append(modes, r.Mode)
		}
	}
	if len(modes) == 0 {
		return
	}
	slices.SortFunc(hit, func(a, b lostSpan) int { return cmp.Compare(a.from, b.from) })
	fmt.Fprintf(w, "pagecast: warning: %s ran through %s, %s and replayed as idle: "+
		"their figures may be better than the program's (a migration may have converged in that made-up quiet); --start after them avoids it\n",
		strings.Join(modes, ", "), spanList(hit), lostHow(hit))
}

// ranThrough is those of lost that mode r's migration, begun at the
// workload's epoch start, ran through; none for a mode that failed.
func ranThrough(wl simulate.Workload, start uint64, lost []lostSpan, r simulate.Result) []lostSpan {
	if len(lost) == 0 {
		return nil
	}
	took := time.Duration(r.Info.TotalTime) * time.Millisecond
	var cut *simulate.CutShort
	switch {
	case errors.As(r.Err, &cut):
		took = cut.At // as far as it came (walk 108: left out)
	case r.Err != nil:
		return nil
	}
	// The epochs it ran through, at most: a throttled guest goes
	// slower, and one replayed went through all from the start.
	epochs := max(1, uint64(math.Ceil(float64(took)/float64(wl.Epoch()))))
	if r.Replays > 0 {
		epochs = wl.Len()
	}
	first := firstIndex(wl) + start
	return lostWithin(lost, first, first+epochs-1) // walk 108: one past its last
}

// lostJSON is a stretch of lost epochs as --json prints it.
type lostJSON struct {
	From uint64 `json:"from"`
	To   uint64 `json:"to"`
	// Damaged: lost with a damaged stretch of the trace; else never
	// recorded.
	Damaged bool `json:"damaged"`
}

// linkBandwidth reads --bandwidth for simulate and migrate alike; zero is
// refused with a reason.
func linkBandwidth(s string) (uint64, error) {
	var f float64
	if _, err := fmt.Sscanf(strings.TrimSpace(s), "%g", &f); err == nil && f == 0 {
		return 0, fmt.Errorf("--bandwidth %s: a migration needs a link that moves bytes (e.g. 1Gbit/s)", s)
	}
	bw, err := units.ParseRate(s)
	if err != nil {
		return 0, fmt.Errorf("--bandwidth: %w", err)
	}
	return bw, nil
}

// simulationModes reads --mode.
func simulationModes(s string) ([]string, error) {
	if s == "all" {
		return allModes, nil
	}
	var modes []string
	for m := range strings.SplitSeq(s, ",") {
		m = strings.TrimSpace(m)
		if m == "auto" || m == "all" {
			return nil, fmt.Errorf("--mode %q: %s stands alone, not in a list of modes", s, m)
		}
		if err := migrator.CheckMode(m); err != nil {
			return nil, fmt.Errorf("--mode: %w; or all, or auto", err)
		}
		if !slices.Contains(modes, m) {
			modes = append(modes, m)
		}
	}
	return modes, nil
}

// writeSimulationTable prints one row per mode, a comparison with
// pre-copy, and what the rows cannot say.
func writeSimulationTable(out io.Writer, w simulate.Workload, results []simulate.Result) {
	writeSimulationTableWith(out, w, results, "", fmt.Sprintf("record the trace in shorter epochs (pagecast profile --epoch %v) or give a synthetic workload a shorter --epoch",
		max(w.Epoch()/4, time.Millisecond).Round(time.Millisecond)), "at --checksum-rate (0 leaves it out)")
}

// writeSimulationTableWith is writeSimulationTable with the mode chosen,
// whose replays the replay line tells of ("" for the first that moved
// pages), advice for rounds shorter than the workload's epochs ("" for
// none), and how fast the memory check reads, for its note
// (writeCheckTime).
func writeSimulationTableWith(out io.Writer, w simulate.Workload, results []simulate.Result, chosen, advice, checkRate string) {
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "mode\ttotal\tdowntime\tbytes\trounds\tpages per round\tdeferred\tthrottle\tpulled\tguest slowed\t")
	ms := tableMS
	var notes []string
	cutShort := false
	var budget time.Duration // where auto's predictions ran past Options.Budget
	for _, r := range results {
		var cut *simulate.CutShort
		switch {
		case errors.As(r.Err, &cut) && cut.Budget > 0 && cut.At == 0 && cut.Sent == 0:
			// Not ">>0s" (walk 131): never begun.
			fmt.Fprintf(tw, "%s\tnot simulated\t\t\t\t\t\t\t\t\t\n", r.Mode)
			budget = cut.Budget
			continue
		case errors.As(r.Err, &cut) && cut.Budget > 0:
			fmt.Fprintf(tw, "%s\t>>%v\t\t>>%s\t\t\t\t\t\t\t\n", r.Mode, cut.At.Truncate(time.Millisecond), units.FormatBytes(float64(cut.Sent)))
			budget = cut.Budget
			continue
		case errors.As(r.Err, &cut):
			// How far it came: lower bounds of its total time and bytes.
			fmt.Fprintf(tw, "%s\t>%v\t\t>%s\t\t\t\t\t\t\t\n", r.Mode, cut.At.Truncate(time.Millisecond), units.FormatBytes(float64(cut.Sent))) // a lower bound, as the JSON's
			cutShort = true
			continue
		case r.Err != nil:
			fmt.Fprintf(tw, "%s\tfailed\t\t\t\t\t\t\t\t\t\n", r.Mode)
			notes = append(notes, fmt.Sprintf("%s failed: %v", r.Mode, r.Err))
			continue
		}
		i := r.Info
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%v\t%d\t%d%%\t%d\t%s\t\n", r.Mode, ms(i.TotalTime), ms(i.Downtime),
			units.FormatBytes(float64(i.RAM.Transferred)), i.Pagecast.Round, roundList(i.Pagecast.RoundPages),
			i.Pagecast.DeferredAll, i.CPUThrottlePercentage, i.RAM.PostcopyRequests, slowdownString(i))
	}
	tw.Flush()
	for _, n := range notes {
		fmt.Fprintln(out, n)
	}
	writeUnconverged(out, results)
	if cutShort {
		fmt.Fprintf(out, "> a mode stopped short once it could no longer be the best: more than %.0f%% past a mode finished within the downtime limit\n", 100*simulate.CutMargin)
	}
	if budget > 0 {
		fmt.Fprintf(out, ">> a mode stopped short, or not simulated, where auto's predictions had taken %v of real time, their most: not chosen\n", budget)
	}
	writeCheckTime(out, results, checkRate)
	writeAgainstPrecopy(out, results)
	var replayed []string
	var from uint64
	for _, r := range results {
		if r.Replays > 0 && r.Err == nil {
			from = r.Start
			replayed = append(replayed, replayedTimes(r.Mode, r.Replays))
		}
	}
	if len(replayed) > 0 && w.Name() == watchedName {
		// Not "1000 epochs of 10ms", where --observe counts 100 ms
		// epochs (walk 125).
		writeWatchReplayed(out, time.Duration(w.Len())*w.Epoch(), replayed)
	} else if len(replayed) > 0 {
		of := "" // the epoch's length where it is not the usual 100 ms
		if w.Epoch() != 100*time.Millisecond {
			of = " of " + w.Epoch().String()
		}
		fmt.Fprintf(out, "the workload (%d epochs%s, %v) ended before the migration did and was replayed from epoch %d: %s\n",
			w.Len(), of, time.Duration(w.Len())*w.Epoch(), from+firstIndex(w), strings.Join(replayed, ", "))
	}
	if len(replayed) > 0 {
		// Not where no mode replayed (walk 135: "on each replay, …"
		// under a migration shorter than the watch).
		moving := simulate.ReplayOf(results, chosen)
		writeMoves(out, moving.Once, moving.Moved, moving.Drift, moving.Lead)
	}
	writeShortRounds(out, w, results, advice)
}

// replayedTimes is how often mode's simulation replayed the workload, for
// the replay line: "tsmc once", "tsmc 3 times".
func replayedTimes(mode string, n uint64) string {
	if n == 1 {
		return mode + " once"
	}
	return fmt.Sprintf("%s %d times", mode, n)
}

// writeWatchReplayed says that the guest was watched for watched and what
// it wrote then replayed by the modes in replayed ("tsmc 3 times").
func writeWatchReplayed(out io.Writer, watched time.Duration, replayed []string) {
	fmt.Fprintf(out, "the guest was watched for %v, less than the migration takes, and what it wrote then was replayed: %s\n",
		watched, strings.Join(replayed, ", "))
}

// writeMoves says what each replay did with the once pages written only
// once: moved the share moved of them, on as one front by drift pages
// (the first time lead further) where drift is not 0. Nothing where
// moved is 0.
func writeMoves(out io.Writer, once uint64, moved, drift, lead float64) {
	// "On each replay", and what the count is of (walk 131: "each time"
	// was missed, and the count read as the last fifth's).
	which := fmt.Sprintf("the %d pages it wrote only once in the watch", once)
	rest := ""
	if n := math.Round(moved * float64(once)); moved < 1 {
		which = fmt.Sprintf("%.0f of the %d pages it wrote only once in the watch (%.0f%%)", n, once, 100*moved)
		rest = fmt.Sprintf(", the other %.0f where they were", float64(once)-n)
	}
	if moved > 0 && drift != 0 {
		dir := "up"
		if drift < 0 {
			dir = "down"
		}
		// A live auto's: how far the front went on between the watch
		// and the predictions; not "2 pages further still" after a
		// second watch (walk 131).
		further := ""
		if math.Abs(lead) >= max(0.5, 0.01*math.Abs(drift)) {
			further = fmt.Sprintf(" (the first replay %.0f pages further still: as far as the guest went on from the watch's end until the migration was to start, through the probes and the predictions, at its pace while watched)", math.Abs(lead))
		}
		fmt.Fprintf(out, "  on each replay, %s went on %.0f pages further %s memory than on the one before%s%s: they move as one front, as a sweep of memory does\n",
			which, math.Abs(drift), dir, further, rest)
	} else if moved > 0 {
		fmt.Fprintf(out, "  on each replay, %s were written elsewhere instead%s, so that each replay takes new pages at the pace the guest did in the watch's last fifth, as a guest still taking memory does\n",
			which, rest)
	}
}

// writeUnconverged says which modes' pre-copy did not converge (the round
// cap forced their stop-and-copy) and whose downtime passed the limit,
// which the rows alone left to be inferred from a round count of the cap
// plus one (walk 119: precopy's 305 ms against a 300 ms limit, unsaid).
func writeUnconverged(out io.Writer, results []simulate.Result) {
	var done []modeOutcome
	for _, r := range results {
		if r.Err == nil {
			done = append(done, modeOutcome{r.Mode, r.Info, r.DowntimeLimit})
		}
	}
	writeStops(out, done)
}

// modeOutcome is a mode's migration, simulated or live, and the downtime
// limit it ran under.
type modeOutcome struct {
	mode  string
	info  migrator.Info
	limit time.Duration
}

// writeStops says which of the migrations did not converge and which went
// over their downtime limit, for simulate's table and the demo's live one
// (walk 147: the live table showed precopy's 321 ms against 300 unsaid).
func writeStops(out io.Writer, done []modeOutcome) {
	var capped, over []string
	var limit time.Duration
	for _, r := range done {
		if r.info.Pagecast == nil {
			continue
		}
		if stopped, postcopy := r.info.Pagecast.RoundCapped(); stopped && !postcopy {
			capped = append(capped, r.mode)
		}
		if d := time.Duration(r.info.Downtime) * time.Millisecond; r.limit > 0 && d > r.limit {
			over = append(over, fmt.Sprintf("%s %v", r.mode, d))
			limit = r.limit
		}
	}
	if len(capped) > 0 {
		fmt.Fprintf(out, "did not converge: %s (the round cap, --max-rounds, forced the stop-and-copy with what was still pending)\n", strings.Join(capped, ", "))
	}
	if len(over) > 0 {
		fmt.Fprintf(out, "over the %v downtime limit: %s\n", limit, strings.Join(over, ", "))
	}
}

// firstIndex is the trace's index of a workload's epoch 0 (pagecast's
// recordings start at 1), by which simulate names epochs as trace info
// does; 0 for a synthetic workload.
func firstIndex(w simulate.Workload) uint64 {
	if t, ok := w.(interface{ First() uint64 }); ok {
		return t.First()
	}
	return 0
}

// writeShortRounds says which modes' rounds were shorter than the
// workload's epochs, which such a simulation understates the dirtying of.
func writeShortRounds(out io.Writer, w simulate.Workload, results []simulate.Result, advice string) {
	var short []string
	for _, r := range results {
		if d := r.LaterRounds(); d > 0 && d < w.Epoch() {
			short = append(short, fmt.Sprintf("%s %v", r.Mode, d.Round(time.Millisecond)))
		}
	}
	if advice != "" {
		advice = "; " + advice
	}
	if len(short) > 0 {
		fmt.Fprintf(out, "pre-copy rounds shorter than the workload's %v epochs (%s: the rounds after the first on average, or the first where it was the only one): each page of an epoch is written at one instant in it, "+
			"so a page written all through an epoch counts once and such rounds meet less dirtying than a live migration's would%s\n", w.Epoch(), strings.Join(short, ", "),
			advice)
	}
}

// writeCheckTime says how much of the modes' total time is the memory
// check after the switch-over (x-pagecast check-time), where it is 10%
// or more of a mode's: a 1 TiB guest's 12m23s held 4m of it, which no column
// said (walk 104). rate says how fast the check was taken to read
// (migrate has no --checksum-rate: walk 106).
func writeCheckTime(out io.Writer, results []simulate.Result, rate string) {
	var parts []string
	much := false
	for _, r := range results {
		if r.Err != nil || r.Info.Pagecast == nil || r.Info.Pagecast.CheckTime <= 0 || r.Info.TotalTime <= 0 {
			continue
		}
		share := float64(r.Info.Pagecast.CheckTime) / float64(r.Info.TotalTime)
		much = much || share >= 0.1
		parts = append(parts, fmt.Sprintf("%s %v (%.0f%%)", r.Mode, time.Duration(r.Info.Pagecast.CheckTime)*time.Millisecond, 100*share))
	}
	if much {
		fmt.Fprintf(out, "total includes the memory check after the switch-over, the paused source reading the memory its guest holds %s "+
			"while the guest runs on the destination: %s\n", rate, strings.Join(parts, ", "))
	}
}

// writeAgainstPrecopy writes every mode's bytes, total time and downtime
// as multiples of pre-copy's, a row a mode, when pre-copy was run.
func writeAgainstPrecopy(out io.Writer, results []simulate.Result) {
	var base *migrator.Info
	var others []simulate.Result
	for _, r := range results {
		switch {
		case r.Err != nil:
		case r.Mode == migrator.ModePrecopy:
			base = &r.Info
		default:
			others = append(others, r)
		}
	}
	if base == nil || len(others) == 0 {
		return
	}
	ratio := func(a, b int64) string {
		if b == 0 {
			return "–"
		}
		return ratioString(float64(a) / float64(b))
	}
	fmt.Fprintln(out)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "against precopy\tbytes\ttotal\tdowntime\t")
	for _, r := range others {
		i := r.Info
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t\n", r.Mode, ratio(int64(i.RAM.Transferred), int64(base.RAM.Transferred)),
			ratio(i.TotalTime, base.TotalTime), ratio(i.Downtime, base.Downtime))
	}
	tw.Flush()
}

// ratioString writes x to two decimals, or below 0.095 to its first
// non-zero one (tsmc's downtime read 0.00×; walk 119), with no exponent;
// under a millionth, "<0.000001×".
func ratioString(x float64) string {
	switch {
	case x >= 0.095 || x <= 0:
		return fmt.Sprintf("%.2f×", x)
	case x < 1e-6:
		return "<0.000001×"
	}
	return fmt.Sprintf("%.*f×", int(math.Ceil(-math.Log10(x))), x)
}

// pace writes simulated time over wall time to two figures, or whole
// where it is 100 or more.
func pace(x float64) string {
	if x >= 100 {
		return fmt.Sprintf("%.0f", x)
	}
	return fmt.Sprintf("%.2g", x)
}

// slowModesNote warns, for a guest of more than 64 GiB, that the
// predictive modes among modes take long: the predictor learns every page
// every epoch (a 1 TiB guest's ran at 0.08 times real time on two cores,
// some hours for each, where the others take minutes).
func slowModesNote(pages uint64, modes []string) string {
	if pages*migrator.PageSize <= 64<<30 {
		return ""
	}
	var slow, fast []string
	for _, m := range modes {
		if strings.Contains(m, migrator.ModePredictive) {
			slow = append(slow, m)
		} else {
			fast = append(fast, m)
		}
	}
	if len(slow) == 0 {
		return ""
	}
	leave := "a mode without predictive"
	if len(fast) > 0 {
		leave = "--mode " + strings.Join(fast, ",")
	}
	return fmt.Sprintf("pagecast: note: the predictive modes (%s) model every page of this %s guest every epoch, and may take hours here (a 1 TiB guest's ran at 0.08 times real time on two cores); "+
		"the others take minutes (%s); the line every 5 s gives each mode's pace",
		strings.Join(slow, ", "), units.FormatBytes(float64(pages*migrator.PageSize)), leave)
}

// atOnce says how many of modes simulate.RunAll runs at once on o, if
// more than one: ", 2 at a time".
func atOnce(o simulate.Options, modes []string) string {
	if n := simulate.Parallel(o, modes); n > 1 {
		return fmt.Sprintf(", %d at a time", n)
	}
	return ""
}

// simulateAuto runs mode auto: it predicts every mode from the epochs
// observed before the start, chooses, runs the choice on the workload from
// the start, and prints prediction against outcome.
func simulateAuto(c *cli.Context, ctx context.Context, o simulate.Options, lost []lostSpan) error {
	w, n := o.Workload, uint64(c.Int("observe")) // at least 1, checked in simulate's action
	first := firstIndex(w)
	// The epochs observed come before the migration's start, a synthetic
	// workload's too (it predicted from the epochs it then migrated
	// through, which flattered auto).
	if o.Start == 0 && c.IsSet("start") {
		// Taken for not given, it migrated from after the epochs it then
		// observed (review 100).
		return fmt.Errorf("--start %d is the workload's first epoch: auto predicts from the epochs before the start; give a later --start, or leave it out to observe the first epochs and migrate from after them", c.Uint64("start"))
	}
	if o.Start == 0 {
		if w.Len() == 1 {
			// No --observe or --start helps (review 100: the advice
			// looped).
			return errors.New("auto: the workload has one epoch: auto observes epochs before those it migrates, and needs two at least")
		}
		if w.Len() > 1 && n >= w.Len() && !c.IsSet("observe") {
			// The README's 5 s profile has 50 epochs, as many as the
			// default observes: it was refused (walk 99).
			n = w.Len() / 2
			fmt.Fprintf(c.App.ErrWriter, "auto: the workload has only %d epochs, not more than --observe's default %d: observing the first half\n", w.Len(), c.Int("observe"))
		}
		if w.Len() > 0 && n >= w.Len() {
			flag := fmt.Sprintf("--observe %d", n)
			if !c.IsSet("observe") {
				flag = fmt.Sprintf("auto observes %d epochs (--observe's default)", n)
			}
			return fmt.Errorf("%s: the workload has only %d epochs, and auto migrates from the epochs after those it observes: "+
				"give --observe fewer (--observe %d leaves half to migrate), or --start an epoch to observe those before it", flag, w.Len(), max(w.Len()/2, 1))
		}
		o.Start = n // observe the first epochs, start after them
		fmt.Fprintf(c.App.ErrWriter, "auto: observing epochs %d-%d, migrating from epoch %d\n", first, first+n-1, first+n)
	}
	if n > o.Start {
		some := fmt.Sprintf("only %d epochs come before the start; observing those", o.Start)
		if o.Start == 1 {
			some = "only 1 epoch comes before the start; observing it" // walk 129: "1 epochs"
		}
		fmt.Fprintf(c.App.ErrWriter, "auto: --observe %d: %s\n", n, some)
	}
	n = min(n, o.Start)
	from := o.Start - n
	observed := simulate.Window(w, from, n)
	if in := lostWithin(lost, first+from, first+o.Start-1); len(in) > 0 {
		fmt.Fprintf(c.App.ErrWriter, "pagecast: warning: auto observes %s, %s and replayed as idle: its predictions may be of a quieter guest than the program\n", spanList(in), lostHow(in))
	}
	fmt.Fprintf(c.App.ErrWriter, "auto: predicting every mode from %s%s …\n", observed.Name(), atOnce(o, simulate.AutoModes))
	settled := watchSims(&o, c.App.ErrWriter, "  ", progressEvery)
	choice, err := simulate.Choose(ctx, o, observed, c.String("prefer"))
	if err != nil {
		return fmt.Errorf("auto: %w", err)
	}
	settled(choice.Predictions)
	// among chooses again among modes alone, simulating them anew: the
	// choice's own runs stop those that could not beat it.
	among := func(modes []string) (simulate.Choice, error) {
		// Said, as its progress lines follow the choice (walk 109).
		fmt.Fprintf(c.App.ErrWriter, "auto: the trace is of a QEMU VM: choosing again among the modes pagecast migrate runs there (%s) …\n", strings.Join(modes, ", "))
		return simulate.ChooseAmong(ctx, o, observed, c.String("prefer"), modes)
	}
	var outcome simulate.Result
	var hindsight *simulate.Hindsight
	if c.Bool("judge") {
		fmt.Fprintf(c.App.ErrWriter, "auto: simulating every mode on the workload from epoch %d%s …\n", o.Start+first, atOnce(o, simulate.AutoModes))
		h, err := simulate.Judge(ctx, o, choice)
		if err != nil {
			return err
		}
		settled(h.Outcomes)
		outcome, hindsight = h.Chosen, &h
	} else {
		fmt.Fprintf(c.App.ErrWriter, "auto: simulating %s on the workload from epoch %d …\n", choice.Mode, o.Start+first)
		outcome = simulate.Run(ctx, o, choice.Mode)
		if outcome.Err != nil {
			return fmt.Errorf("auto chose %s, which failed: %w", choice.Mode, outcome.Err)
		}
	}
	outcome.Mode = "auto: " + choice.Mode
	note, alt := qemuTraceNote(w, choice, among)
	var qemuHindsight *simulate.Hindsight // among the modes migrate can run on the trace's QEMU, where the choice is not one
	if alt != nil && hindsight != nil {
		// Judged too (walk 135: the verdict weighed only modes the note
		// had just said migrate cannot run there).
		fmt.Fprintf(c.App.ErrWriter, "auto: simulating the modes pagecast migrate runs on the trace's QEMU on the workload from epoch %d …\n", o.Start+first)
		h, err := simulate.Judge(ctx, o, *alt)
		if err != nil {
			return fmt.Errorf("judge %s, the best of the modes migrate runs on the trace's QEMU: %w", alt.Mode, err)
		}
		qemuHindsight = &h
	}
	if hindsight != nil {
		warnLost(c.App.ErrWriter, w, o.Start, lost, hindsight.Outcomes)
	} else {
		warnLost(c.App.ErrWriter, w, o.Start, lost, []simulate.Result{outcome})
	}
	if outcome.Info.Pagecast != nil {
		outcome.Info.Pagecast.Auto = choice.Report() // as query-migrate reports it
	}
	if c.Bool("json") {
		enc := json.NewEncoder(c.App.Writer)
		enc.SetIndent("", "  ")
		type prediction struct {
			Mode string         `json:"mode"`
			Info *migrator.Info `json:"query-migrate,omitempty"`
			// Why there is no Info: the simulation failed, or stopped
			// once the mode could no longer be the best (stopped-short
			// true, as in query-migrate's x-pagecast.auto, and why).
			// A mode stopped short has, as there, the time simulated
			// and the bytes sent when it stopped (walk 104: only why).
			Error        string  `json:"error,omitempty"`
			StoppedShort bool    `json:"stopped-short,omitempty"`
			TotalTime    *int64  `json:"total-time,omitempty"`
			Transferred  *uint64 `json:"transferred,omitempty"`
			Why          string  `json:"why,omitempty"`
		}
		predicted := func(r simulate.Result) prediction {
			p := prediction{Mode: r.Mode}
			var cut *simulate.CutShort
			switch {
			case errors.As(r.Err, &cut):
				at := cut.At.Milliseconds()
				p.StoppedShort, p.Why, p.TotalTime, p.Transferred = true, r.Err.Error(), &at, &cut.Sent
			case errors.Is(r.Err, simulate.ErrCannotWin):
				p.StoppedShort, p.Why = true, r.Err.Error()
			case r.Err != nil:
				p.Error = r.Err.Error()
			default:
				p.Info = &r.Info
			}
			return p
		}
		type judged struct {
			Mode     string       `json:"mode,omitempty"` // qemu-hindsight's: the mode migrate would run there, judged
			Best     string       `json:"best"`
			Regret   *float64     `json:"regret,omitempty"` // chosen over best by the preference, less 1; absent: the choice broke the downtime limit
			Outcomes []prediction `json:"outcomes"`
		}
		out := struct {
			Mode        string         `json:"mode"`
			Prefer      string         `json:"prefer"`
			Why         string         `json:"why"`
			Predictions []prediction   `json:"predictions"`
			Outcome     *migrator.Info `json:"outcome"`
			Hindsight   *judged        `json:"hindsight,omitempty"`
			// Where the trace is of a QEMU VM and the choice a mode
			// migrate cannot run there: the best of those it can, judged
			// among them.
			QEMUHindsight *judged `json:"qemu-hindsight,omitempty"`
		}{Mode: choice.Mode, Prefer: choice.Prefer, Why: choice.Why, Outcome: &outcome.Info}
		if h := hindsight; h != nil {
			out.Hindsight = &judged{Best: h.Best.Mode}
			if r := h.Regret(choice.Prefer); !math.IsInf(r, 1) {
				out.Hindsight.Regret = &r
			}
			for _, r := range h.Outcomes {
				out.Hindsight.Outcomes = append(out.Hindsight.Outcomes, predicted(r))
			}
		}
		for _, r := range choice.Predictions {
			out.Predictions = append(out.Predictions, predicted(r))
		}
		if h := qemuHindsight; h != nil {
			out.QEMUHindsight = &judged{Mode: alt.Mode, Best: h.Best.Mode}
			if r := h.Regret(alt.Prefer); !math.IsInf(r, 1) {
				out.QEMUHindsight.Regret = &r
			}
			for _, r := range h.Outcomes {
				out.QEMUHindsight.Outcomes = append(out.QEMUHindsight.Outcomes, predicted(r))
			}
		}
		if note != "" {
			fmt.Fprintln(c.App.ErrWriter, note)
		}
		return enc.Encode(out)
	}
	fmt.Fprintf(c.App.Writer, "%s: %s guest, %s/s link, downtime limit %v; predicted from %s:\n", w.Name(),
		units.FormatBytes(float64(w.Pages()*migrator.PageSize)), units.FormatBytes(float64(o.Bandwidth)), o.DowntimeLimit, observed.Name())
	writeSimulationTable(c.App.Writer, observed, choice.Predictions)
	writeResponseNote(c.App.Writer, o.Response, choice.Predictions)
	fmt.Fprintf(c.App.Writer, "auto chose %s: %s\n", choice.Mode, choice.Why)
	if note != "" {
		fmt.Fprintln(c.App.Writer, note)
	}
	fmt.Fprintf(c.App.Writer, "\noutcome, on the workload from epoch %d:\n", o.Start+first)
	writeSimulationTable(c.App.Writer, w, []simulate.Result{outcome})
	if p, ok := choice.Report().Predicted(); ok {
		writePredictedAgainst(c.App.Writer, p, outcome.Info, -1)
	}
	if h := hindsight; h != nil {
		fmt.Fprintf(c.App.Writer, "\nin hindsight, every mode on the workload from epoch %d:\n", o.Start+first)
		writeSimulationTable(c.App.Writer, w, h.Outcomes)
		fmt.Fprintln(c.App.Writer, h.Verdict(choice))
	}
	if h := qemuHindsight; h != nil {
		var modes []string
		for _, r := range h.Outcomes {
			modes = append(modes, r.Mode)
		}
		fmt.Fprintf(c.App.Writer, "on the trace's QEMU VM, among the modes pagecast migrate runs there (%s), where it would run %s: %s\n",
			strings.Join(modes, ", "), alt.Mode, h.Verdict(*alt))
	}
	return nil
}

// qemuTraceNote says, for a workload traced from a QEMU VM (its header:
// source "qemu pid N") where auto chose a mode that pagecast migrate
// cannot run on a QEMU source, so, and which mode it would take among
// those it can run there; "" otherwise. simulate weighs every mode, as for
// pagecast's own monitor: a walk took its choice to migrate, which refused
// it (walk 86).
func qemuTraceNote(w simulate.Workload, choice simulate.Choice, among func([]string) (simulate.Choice, error)) (string, *simulate.Choice) {
	t, ok := w.(*simulate.Trace)
	if !ok || !strings.HasPrefix(t.Source(), "qemu pid ") {
		return "", nil
	}
	src := printable.Line(t.Source()) // the trace's header: anyone's text (walk 124)
	qemus := qemuRuns(true)
	runnable := func(mode string) bool {
		return !migrator.NeedsPostcopy(mode) || slices.Contains(qemus, mode) // pagecast's engine, or QEMU's own
	}
	// QEMU's own migration under TCG before 9.0 loses writes, which
	// migrate warns of there: said here too (walk 116: the note named
	// tsmc, QEMU's post-copy, for a TCG trace, without a word of it).
	tcg := ""
	if t.Hook() == "tcg-plugin" {
		tcg = "; this trace's QEMU ran under TCG, where QEMU's own migration before QEMU 9.0 loses some of the guest's writes (migrate warns of it)"
	}
	if runnable(choice.Mode) {
		if migrator.NeedsPostcopy(choice.Mode) {
			return fmt.Sprintf("note: the trace is of a QEMU VM (%s): pagecast migrate runs %s there with QEMU's own migration (--engine qemu, --dest-qmp), and its --mode auto, which runs pagecast's engine, does not weigh it%s", src, choice.Mode, tcg), nil
		}
		return "", nil
	}
	var can []string
	for _, p := range choice.Predictions {
		if runnable(p.Mode) {
			can = append(can, p.Mode)
		}
	}
	note := fmt.Sprintf("note: the trace is of a QEMU VM (%s), on which pagecast migrate cannot run %s with either engine", src, choice.Mode)
	// Chosen anew among them: those the choice stopped short had no
	// figures to choose by, and the note ended there (review 88).
	alt, err := among(can)
	if err != nil {
		return note + fmt.Sprintf("; choosing among the modes it can run there failed: %v", err), nil
	}
	note += fmt.Sprintf("; the best of the modes it can run there is %s: %s", alt.Mode, alt.Why)
	if migrator.NeedsPostcopy(alt.Mode) {
		note += " (QEMU's own migration runs it: --engine qemu, --dest-qmp; migrate --mode auto, which runs pagecast's engine, does not weigh it)" + tcg
	}
	return note, &alt
}

// writePredictedAgainst prints auto's prediction of a migration against
// its outcome, on one line, with the guest's own pause where it is known
// (paused >= 0; see migrator.PauseWatch).
func writePredictedAgainst(w io.Writer, p migrator.Prediction, a migrator.Info, paused time.Duration) {
	off := func(p, a int64) string {
		if a == 0 {
			return "–"
		}
		d := 100 * (float64(p) - float64(a)) / float64(a)
		if math.Abs(d) < 0.5 {
			return "0%"
		}
		return fmt.Sprintf("%+.0f%%", d)
	}
	ms := func(v int64) time.Duration { return time.Duration(v) * time.Millisecond }
	var sent uint64
	if a.RAM != nil {
		sent = a.RAM.Transferred
	}
	fmt.Fprintf(w, "predicted against outcome: total time %s against %s (%s), bytes %s against %s (%s), ",
		tableMS(p.TotalTime), tableMS(a.TotalTime), off(p.TotalTime, a.TotalTime),
		units.FormatBytes(float64(p.Transferred)), units.FormatBytes(float64(sent)), off(int64(p.Transferred), int64(sent)))
	if a.Pagecast != nil && a.Pagecast.VCPUs > 0 {
		fmt.Fprintf(w, "guest slowed %s against %s, ", percent(p.GuestSlowdown), slowdownString(a))
	}
	fmt.Fprintf(w, "downtime %v against %v", ms(p.Downtime), downtimeString(a))
	if paused >= 0 {
		fmt.Fprintf(w, " (the guest paused %v)", paused.Round(time.Millisecond))
	}
	fmt.Fprintln(w)
}

// wallTime says how long a simulation took: in tenths of a second, or in
// milliseconds below one (mode auto's simulations of a live guest take a
// few; walk 78 read "in 0.0 s").
func wallTime(d time.Duration) string {
	if d < time.Second {
		return fmt.Sprintf("%d ms", max(d.Milliseconds(), 1))
	}
	return fmt.Sprintf("%.1f s", d.Seconds())
}

// watchSims sets o.Progress and o.Done to say on w how simulations are
// going: each mode's result as it ends, and every interval of wall time
// a line with the round, the simulated time and what the destination
// still lacks of each mode still running, and its pace (simulated time
// over wall time), so that a long simulation can be judged as it runs.
// Lines begin with indent. The function it returns says, of results, the
// modes said to have ended whose results were since cut short (auto's
// cuts are settled once every mode has ended: see simulate.Choose); it
// starts the account of modes ended afresh.
func watchSims(o *simulate.Options, w io.Writer, indent string, interval time.Duration) (settled func([]simulate.Result)) {
	return watchSimsClock(o, w, indent, interval, time.Now)
}

// watchSimsClock is watchSims on the clock now.
func watchSimsClock(o *simulate.Options, w io.Writer, indent string, interval time.Duration, now func() time.Time) (settled func([]simulate.Result)) {
	type running struct {
		start time.Time     // when the first point was heard
		first time.Duration // its simulated time
		last  simulate.Point
	}
	modes := map[string]*running{}
	last := now()
	o.Progress = func(mode string, p simulate.Point) {
		t := now()
		r := modes[mode]
		if r == nil {
			r = &running{start: t, first: p.At}
			modes[mode] = r
		}
		r.last = p
		if t.Sub(last) < interval {
			return
		}
		last = t
		var parts []string
		for _, mode := range slices.Sorted(maps.Keys(modes)) {
			r := modes[mode]
			part := fmt.Sprintf("%s round %d at %v", mode, r.last.Round, r.last.At.Round(time.Millisecond))
			if r.last.Remaining > 0 {
				part += fmt.Sprintf(", %s left", units.FormatBytes(float64(r.last.Remaining)))
			}
			if wall := t.Sub(r.start); wall > 0 {
				part += fmt.Sprintf(" (%s× real time)", pace((r.last.At-r.first).Seconds()/wall.Seconds()))
			}
			parts = append(parts, part)
		}
		fmt.Fprintf(w, "%s… %s\n", indent, strings.Join(parts, "; "))
	}
	var mu sync.Mutex
	ended := map[string]bool{}     // said to have ended, not cut short
	saidCut := map[string]string{} // said to be cut short, where
	o.Done = func(r simulate.Result) {
		delete(modes, r.Mode)
		if r.Err != nil {
			if cut := (*simulate.CutShort)(nil); errors.As(r.Err, &cut) {
				mu.Lock()
				saidCut[r.Mode] = cut.Where()
				mu.Unlock()
			}
			fmt.Fprintf(w, "%s%s %s\n", indent, r.Mode, failure(r.Err))
			return
		}
		mu.Lock()
		ended[r.Mode] = true
		mu.Unlock()
		fmt.Fprintf(w, "%s%s: %s of migration in %s\n", indent, r.Mode, tableMS(r.Info.TotalTime), wallTime(r.Wall))
	}
	return func(results []simulate.Result) {
		mu.Lock()
		defer mu.Unlock()
		for _, r := range results {
			var cut *simulate.CutShort
			if errors.As(r.Err, &cut) && (ended[r.Mode] || saidCut[r.Mode] != "" && saidCut[r.Mode] != cut.Where()) {
				// A line above said it ended, or stopped elsewhere: the
				// tables would say otherwise without a word (walk 67:
				// "stopped after 4.347s", then ">877ms" in the table).
				fmt.Fprintf(w, "%s%s: counted as stopped %s (where a mode is stopped does not depend on the order the modes end in)\n", indent, r.Mode, cut.Where())
			}
		}
		clear(ended)
		clear(saidCut)
	}
}

// failure says why a simulation has no result: it failed, or mode auto
// stopped it once it could not win.
func failure(err error) string {
	if errors.Is(err, simulate.ErrCannotWin) || errors.Is(err, simulate.ErrOverBudget) {
		return err.Error()
	}
	return "failed: " + err.Error()
}
