package main

import (
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/pagecast/pagecast/bitmap"
	"github.com/pagecast/pagecast/collector"
	"github.com/pagecast/pagecast/internal/units"
	"github.com/pagecast/pagecast/migrator"
	"github.com/pagecast/pagecast/predictor"
	"github.com/pagecast/pagecast/qemu"
	"github.com/pagecast/pagecast/qemuguest"
	"github.com/pagecast/pagecast/simulate"
)

// tcgDemoDelay slows the demo guest's writes under TCG, which runs it far
// faster than KVM's instruction emulation did, to a rate where the
// forecast and the migrations have something to tell apart.
const tcgDemoDelay = 25000

// runQEMUDemo is the demo on a QEMU VM: run the pagecast guest, profile it
// (TCG plugin or eBPF), forecast, and migrate it QEMU to QEMU.
func runQEMUDemo(c *cli.Context, out io.Writer, why string) error {
	o, err := qemuGuestFlags(c)
	if err != nil {
		return err
	}
	modes, err := demoModeList(c.String("modes"), true, o.memory)
	if err != nil {
		return err
	}
	epoch, err := demoEpoch(c)
	if err != nil {
		return err
	}
	accel, _, err := qemu.ResolveAccel(o.accel)
	if err != nil {
		return err
	}
	spec := c.String("workload")
	if accel == qemu.AccelTCG && !c.IsSet("workload") && o.workload.Delay == 0 {
		o.workload.Delay = tcgDemoDelay
		spec += fmt.Sprintf(",delay=%d", tcgDemoDelay)
	}
	vm, err := startQEMUVM(o)
	if err != nil {
		return err
	}
	defer vm.Close()
	fmt.Fprintf(out, "pagecast demo: %s guest, workload %s\n", units.FormatBytes(float64(o.memory)), spec)
	fmt.Fprintf(out, "runs on %s\n", vm.describe())
	if why != "" {
		fmt.Fprintf(out, "(%s)\n", why)
	}
	if _, err := vm.WaitBannerContext(c.Context, 60*time.Second); err != nil {
		return err
	}
	col, err := collector.New(collector.Config{QMP: vm.QMPPath, Epoch: epoch})
	if err != nil {
		return fmt.Errorf("profile the QEMU VM: %w", err)
	}
	defer col.Close()
	fmt.Fprintf(out, "dirty pages from: %s\n", col.Hook())
	alive := func() error {
		select {
		case <-vm.Done():
			return fmt.Errorf("qemu exited: %s", vm.Stderr())
		default:
			return nil
		}
	}
	epochs, err := demoWatch(c, out, vm, o.memory, collectorSource(c.Context, col, o.memory, epoch), alive)
	if err != nil {
		return err
	}
	st, _ := col.Stats()
	fmt.Fprintf(out, "the plugin recorded %d guest writes to RAM, dropped %d\n", st.Events, st.DroppedAll())
	col.Close() // frees QEMU's QMP socket for the migrations
	if c.Bool("no-migrate") {
		return nil
	}
	fmt.Fprintln(out)
	if len(epochs) == 0 {
		return fmt.Errorf("no epoch profiled in --duration %v", c.Duration("duration"))
	}
	tmp, err := os.MkdirTemp("", "pagecast-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	profile := filepath.Join(tmp, "profile.pct") // outlives the first QEMU
	if err := writeProfile(profile, epochs, o.memory, epoch, col.Hook()); err != nil {
		return err
	}
	return demoQEMUMigrations(c, out, vm, o, profile, modes)
}

// demoQEMUMigrations moves the QEMU VM to a fresh QEMU, first with QEMU's
// own pre-copy (the baseline), then with pagecast's engine in each mode
// (pages from the source's shared RAM, device state by QEMU with
// x-ignore-shared, memory checked against the source's as the destination runs), and tsmc
// as QEMU's post-copy; each migration starts where the last left the guest.
// It checks that the guest runs on at each destination and prints the
// figures side by side.
func demoQEMUMigrations(c *cli.Context, out io.Writer, src *qemuVM, o qemuVMOptions, profile string, modes []string) error {
	bw, err := linkBandwidth(c.String("bandwidth"))
	if err != nil {
		return err
	}
	// Both ends run on this host, whose CPU, shared with the guest, may
	// bound the migration before the link does: measured as migrate
	// --mode auto measures it.
	source, err := qemuguest.FromVM(src.VM)
	if err != nil {
		return err
	}
	rates, err := probePageRate(c.Context, source)
	source.Close()
	if err != nil {
		return fmt.Errorf("measure the engine's page rate: %w", err)
	}
	pred, err := demoPredict(c, profile, src.Memory(), nil, 1, bw, qemuSwitchover, rates, qemuAutoModes()) // the RAM file is written whole at start: no holes
	if err != nil {
		return err
	}
	modes = pred.withChoice(modes)
	fmt.Fprintf(out, "live migration QEMU to QEMU on loopback, link capped at %s/s, downtime limit %v:\n",
		units.FormatBytes(float64(bw)), migrator.DefaultDowntimeLimit)
	cur := src
	defer func() { cur.Close() }()
	var rows []qemuMigration
	var again *simulate.Result // auto's choice, simulated again as its live run began
	var againMix simulate.Mix
	next := func(engine, mode string) error {
		if engine == enginePagecast && mode == pred.choice.Mode {
			r, mix := pred.again(c, mode, cur.Memory())
			again, againMix = &r, mix
		}
		dst, r, err := demoQEMUMigrate(c, cur, o, engine, mode, bw, profile)
		if err != nil {
			return fmt.Errorf("%s migration (%s): %w", mode, engine, err)
		}
		rows = append(rows, r)
		cur.Close()
		cur = dst
		return nil
	}
	if err := next(engineQEMU, migrator.ModePrecopy); err != nil {
		return err
	}
	for _, mode := range modes {
		engine := enginePagecast
		if migrator.NeedsPostcopy(mode) {
			engine = engineQEMU // pagecast's stage 3 cannot pull pages into QEMU's memory
		}
		if err := next(engine, mode); err != nil {
			return err
		}
	}
	fmt.Fprintln(out)
	writeQEMUMigrationTable(out, rows)
	fmt.Fprintln(out, "\nagainst QEMU's own pre-copy:")
	pre := rows[0]
	for _, r := range rows[1:] {
		// The guest's pause where both are known; else the engines' own counts.
		pause, of := float64(r.info.Downtime)/float64(max(pre.info.Downtime, 1)), "downtime"
		if r.paused >= 0 && pre.paused >= 0 {
			pause, of = float64(r.paused)/float64(max(pre.paused, time.Microsecond)), "pause"
		}
		fmt.Fprintf(out, "  %-26s %4.0f%% of the bytes, %4.0f%% of the %s, %4.0f%% of the total time\n", r.label(),
			100*float64(r.info.RAM.Transferred)/float64(max(pre.info.RAM.Transferred, 1)), 100*pause, of,
			100*float64(r.info.TotalTime)/float64(max(pre.info.TotalTime, 1)))
	}
	fmt.Fprintf(out, "(every migration through one link of %s/s; downtime as each engine counts it: QEMU until its last bytes are in its socket, pagecast until the destination has verified its memory and says its guest runs; paused: the guest's own, from the source QEMU's STOP event to the destination's RESUME)\n",
		units.FormatBytes(float64(bw)))
	var notes []string
	for _, r := range rows {
		for _, n := range r.notes {
			if !slices.Contains(notes, n) {
				notes = append(notes, n)
				fmt.Fprintf(out, "note on QEMU's own migrations here: %s\n", n)
			}
		}
	}
	live := map[string]liveRun{}
	for _, r := range rows {
		if r.engine == enginePagecast {
			live[r.mode] = liveRun{info: r.info, paused: r.paused}
		}
	}
	if l, ok := live[pred.choice.Mode]; ok && again != nil {
		l.again, l.againMix = again, againMix
		live[pred.choice.Mode] = l
	}
	return demoSimulations(c, out, pred, live)
}

// realTraces are real programs' traces in the repository, as make demo
// runs it (../shared/traces' awk and tar, imported): a Linux guest of 256
// MiB, 100 ms epochs, booting for its first epochs.
var realTraces = []string{"predictor/testdata/real/awk.pct", "predictor/testdata/real/tar.pct"}

// demoPrediction is every mode simulated on the demo VM's profile, and
// the mode auto chooses from them.
type demoPrediction struct {
	w          simulate.Workload
	content    simulate.Mix // measured from the guest's memory
	switchover time.Duration
	rates      pageRates // the engine's pace on this host; zero: not measured
	results    []simulate.Result
	choice     simulate.Choice
	opts       simulate.Options // what the simulations ran on
	written    map[uint64]bool  // the pages the profile saw written
	among      []string         // the modes auto chose from, where not all the table's
}

// again simulates mode as p did, on the content of the guest's memory mem
// now: what migrate --mode auto, measuring the guest as it starts, would
// predict for a migration starting now. The demo's guest writes on through
// the live migrations before that mode's, and its writes change what its
// pages hold: on the 32 MiB test guest, 20 s on, mecom's first round coded
// its text-like pages to 0.64 of their size where they had coded to 0.46
// (and to 0.46 again when mecom ran first), 19.2 MiB sent against 13.6
// predicted from the content measured after profiling.
func (p demoPrediction) again(c *cli.Context, mode string, mem []byte) (simulate.Result, simulate.Mix) {
	o := p.opts
	measureContent(&o, mem, nil, p.written)
	return simulate.RunAll(c.Context, o, []string{mode})[0], o.Content
}

// demoPredict simulates every mode with pagecast simulate on the profile
// recorded (what the live migrations are predicted to cost) and the
// content of the guest's memory mem (holes: its pages never written, or
// nil), with switchover the switch-over's fixed cost besides moving
// bytes and rates the pages a second the engine moves at most, running and
// paused (zero: the link's pace), and chooses among autoModes, the modes this VM can take, as
// migrate --mode auto would: before the live migrations, so that they can
// include the choice.
func demoPredict(c *cli.Context, profile string, mem []byte, holes *bitmap.Bitmap, vcpus int, bw uint64, switchover time.Duration, rates pageRates, autoModes []string) (demoPrediction, error) {
	meta, epochs, _, err := predictor.ReadTrace(profile, predictor.CSVOptions{})
	if err != nil {
		return demoPrediction{}, err
	}
	w, err := simulate.NewTrace("this guest's profile", meta, epochs)
	if err != nil {
		return demoPrediction{}, err
	}
	written := map[uint64]bool{}
	for _, e := range epochs {
		for _, p := range e.Pages {
			written[p] = true
		}
	}
	// The live predictive modes learn from the profile before round 1;
	// so do their simulations.
	o := simulate.Options{Workload: w, Bandwidth: bw, Switchover: switchover, VCPUs: vcpus, Profile: profile,
		PolicyTime: true, PageRate: rates.pages, PausedPageRate: rates.paused, // the predictor's time holds up the live sender too, as migrate --mode auto takes it
		Grow: true} // the profile replayed as auto's watch is (simulate.ChooseAmong)
	measureContent(&o, mem, holes, written)
	p := demoPrediction{w: w, content: o.Content, switchover: switchover, rates: rates, results: simulateAll(c, o), opts: o, written: written}
	var predictions []simulate.Result
	for _, r := range p.results {
		if slices.Contains(autoModes, r.Mode) {
			predictions = append(predictions, r)
		}
	}
	if len(predictions) < len(p.results) {
		for _, r := range predictions {
			p.among = append(p.among, r.Mode)
		}
	}
	p.choice, err = simulate.ChooseFrom(predictions, o, simulate.PreferTime)
	return p, err
}

// withChoice is modes and, if not among them, the mode auto chose.
func (p demoPrediction) withChoice(modes []string) []string {
	if slices.Contains(modes, p.choice.Mode) {
		return modes
	}
	return append(slices.Clone(modes), p.choice.Mode)
}

// demoSimulations prints the simulations of p, and runs every mode on
// real programs' traces where they are at hand; it ends with the mode
// auto would choose for the VM, and why, and what the live migration in
// that mode took (live, by mode), if the demo ran one.
func demoSimulations(c *cli.Context, out io.Writer, p demoPrediction, live map[string]liveRun) error {
	cost := "no switch-over cost"
	if p.switchover > 0 {
		cost = fmt.Sprintf("a switch-over cost of %v, QEMU's as migrate --mode auto takes it", p.switchover)
	}
	if r := p.rates; r.pages > 0 {
		cost += fmt.Sprintf("; the engine's pace on this host's CPU %.1fk pages/s", r.pages/1e3)
		if r.paused > 0 {
			cost += fmt.Sprintf(", %.1fk with the guest paused", r.paused/1e3)
		}
		cost += ", measured as auto measures it"
	}
	fmt.Fprintf(out, "\nthe same migrations simulated on this guest's profile (pagecast simulate; content measured from its memory: %s; %s):\n", p.content, cost)
	writeSimulationTable(out, p.w, p.results)
	choice := p.choice
	for _, path := range realTraces {
		if _, err := os.Stat(path); err != nil {
			fmt.Fprintf(out, "\n(%s is not here, as the demo runs outside the repository: no simulation on real programs' traces)\n", path)
			break
		}
		meta, epochs, _, err := predictor.ReadTrace(path, predictor.CSVOptions{})
		if err != nil {
			return err
		}
		w, err := simulate.NewTrace(filepath.Base(path), meta, epochs)
		if err != nil {
			return err
		}
		const realBW = 8 << 20
		fmt.Fprintf(out, "\nevery mode on a real program's memory behaviour: %s (Linux guest, 256 MiB), simulated at %s/s from epoch 50:\n",
			filepath.Base(path), units.FormatBytes(realBW))
		writeSimulationTable(out, w, simulateAll(c, simulate.Options{Workload: w, Bandwidth: realBW, Start: 50}))
	}
	fmt.Fprintf(out, "\nmode auto would migrate this VM with %s: %s", choice.Mode, choice.Why)
	if len(p.among) > 0 {
		// Under a table of every mode, the choice is among fewer
		// (walk 86).
		fmt.Fprintf(out, ", among the %d modes pagecast's engine runs on a QEMU source (%s; the others need post-copy, which on QEMU only QEMU's own migration does, and that runs %s alone)", len(p.among), strings.Join(p.among, ", "), qemuPostcopyModes())
	}
	if l, ok := live[choice.Mode]; ok {
		fmt.Fprintf(out, "; live above, %s took %s", choice.Mode, l.outcome())
		for _, r := range choice.Predictions {
			if r.Mode == choice.Mode && r.Err == nil && l.info.TotalTime > 0 {
				off := float64(r.Info.TotalTime)/float64(l.info.TotalTime) - 1
				fmt.Fprintf(out, " (its total time predicted %+.0f%%", 100*off)
				if a := l.again; a != nil && a.Err == nil && a.Info.RAM != nil {
					againOff := float64(a.Info.TotalTime)/float64(l.info.TotalTime) - 1
					fmt.Fprintf(out, "; %+.0f%% simulated again on the guest's memory as that migration began, as migrate --mode auto measures it when it starts (%s: %v in all, %s)",
						100*againOff, l.againMix, time.Duration(a.Info.TotalTime)*time.Millisecond, units.FormatBytes(float64(a.Info.RAM.Transferred)))
					off = againOff
				}
				if math.Abs(off) > 0.3 {
					// Past auto's goal: say what else the machine did.
					if load, err := loadAverage(); err == nil {
						fmt.Fprintf(out, "; this machine's load average was %.1f on %d cores", load, runtime.NumCPU())
					}
				}
				fmt.Fprint(out, ")")
			}
		}
	}
	fmt.Fprintln(out)
	return nil
}

// liveRun is a live migration of the demo, for auto's line: its info and
// the guest's own pause (-1 where not known).
type liveRun struct {
	info   migrator.Info
	paused time.Duration
	// again is its mode simulated on the guest's memory as it began
	// (demoPrediction.again), if measured; againMix is that content.
	again    *simulate.Result
	againMix simulate.Mix
}

// outcome says what the migration took: its total time, bytes and the
// guest's pause (paused, where known; else the engine's downtime).
func (l liveRun) outcome() string {
	i := l.info
	var sent uint64
	if i.RAM != nil {
		sent = i.RAM.Transferred
	}
	pause := fmt.Sprintf("downtime %v", time.Duration(i.Downtime)*time.Millisecond)
	if l.paused >= 0 {
		pause = fmt.Sprintf("the guest paused %v", l.paused.Round(time.Millisecond))
	}
	return fmt.Sprintf("%v in all, %s, %s", time.Duration(i.TotalTime)*time.Millisecond, units.FormatBytes(float64(sent)), pause)
}

// loadAverage is the machine's load average over the last minute.
func loadAverage() (float64, error) {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0, fmt.Errorf("/proc/loadavg: empty")
	}
	return strconv.ParseFloat(f[0], 64)
}

// simulateAll simulates o in every mode.
func simulateAll(c *cli.Context, o simulate.Options) []simulate.Result {
	return simulate.RunAll(c.Context, o, allModes)
}

// demoQEMUMigrate moves cur's guest to a new QEMU with engine in mode and
// returns that QEMU, running the guest.
func demoQEMUMigrate(c *cli.Context, cur *qemuVM, o qemuVMOptions, engine, mode string, bw uint64, profile string) (_ *qemuVM, _ qemuMigration, err error) {
	row := qemuMigration{mode: mode, engine: engine}
	do := o
	do.qmp, do.incoming = "", "defer"
	if engine == engineQEMU {
		port, err := freePort()
		if err != nil {
			return nil, row, err
		}
		do.incoming = fmt.Sprintf("tcp:127.0.0.1:%d", port)
	}
	dst, err := startQEMUVM(do)
	if err != nil {
		return nil, row, fmt.Errorf("destination QEMU: %w", err)
	}
	defer func() {
		if err != nil {
			dst.Close()
		}
	}()
	pause, err := migrator.WatchPause(cur.Monitor, dst.Monitor)
	if err != nil {
		return nil, row, err
	}
	defer pause.Close()
	if engine == engineQEMU {
		// Through a link of the rate, as pagecast's engine goes: QEMU's
		// max-bandwidth leaves its stop-and-copy uncapped.
		relay, err := migrator.NewRelay(do.incoming, bw)
		if err != nil {
			return nil, row, err
		}
		defer relay.Close()
		bar := newProgressBar(c.App.ErrWriter, false)
		bar.label = row.label()
		plan, err := migrator.SetupQEMU(cur.Monitor, dst.Monitor, migrator.Params{Mode: mode, MaxBandwidth: bw,
			DowntimeLimit: migrator.DefaultDowntimeLimit, MaxRounds: migrator.DefaultMaxRounds})
		if err == nil {
			err = migrator.Migrate(cur.Monitor, relay.URI())
		}
		if err != nil {
			return nil, row, err
		}
		row.info, err = migrator.WaitQEMU(c.Context, cur.Monitor, &plan, 200*time.Millisecond, bar.update)
		bar.done()
		if err != nil {
			return nil, row, err
		}
		qemuFaultTime(&plan, dst.Monitor)
		row.forced, row.slowdown, row.notes = plan.Forced, plan.Slowdown, plan.Notes
	} else {
		source, err := qemuguest.FromVM(cur.VM)
		if err != nil {
			return nil, row, err
		}
		defer source.Close()
		dest, err := qemuguest.DestFromVM(dst.VM)
		if err != nil {
			return nil, row, err
		}
		defer dest.Close()
		cfg := migrator.Config{Mode: mode, MaxBandwidth: bw, Epoch: c.Duration("epoch"), Log: slog.Default()}
		if strings.HasPrefix(mode, migrator.ModePredictive) {
			cfg.Profile = profile
		}
		if row.info, err = migrateLoopback(c.Context, c.App.ErrWriter, source, dest, cfg); err != nil {
			return nil, row, err
		}
	}
	before, _ := cur.GuestStatus()
	after, err := waitProgress(dst, before.TotalProgress(), 10*time.Second)
	if err != nil {
		return nil, row, err
	}
	if row.paused, err = pause.Paused(5 * time.Second); err != nil {
		slog.Warn("the guest's pause is not known", "migration", row.label(), "err", err)
		row.paused, err = -1, nil
	}
	verified := ""
	if row.info.Pagecast != nil && row.info.Pagecast.Verified {
		verified = ", memory verified"
	}
	fmt.Fprintf(c.App.Writer, "  %-26s done: guest running on the destination QEMU (progress %d -> %d)%s\n",
		row.label(), before.TotalProgress(), after, verified)
	return dst, row, nil
}

// waitProgress waits until the guest's progress counter passes from,
// which shows it running, and returns the counter.
func waitProgress(vm *qemuVM, from uint64, timeout time.Duration) (uint64, error) {
	deadline := time.Now().Add(timeout)
	for {
		st, err := vm.GuestStatus()
		if err == nil && st.TotalProgress() > from {
			return st.TotalProgress(), nil
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("the guest makes no progress on the destination in %v (status %v, %v)", timeout, st, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

type qemuMigration struct {
	mode, engine string
	info         migrator.Info
	forced       bool              // QEMU's switch-over forced at the round cap
	slowdown     migrator.Slowdown // what QEMU's own migration cost the guest (pagecast's engine: info's)
	paused       time.Duration     // the guest's pause, STOP to RESUME (see migrator.PauseWatch); -1: not known
	notes        []string          // QEMU's own migration: what its plan said (migrator.QEMUPlan.Notes)
}

// label names the migration as the table shows it.
func (r qemuMigration) label() string {
	if r.engine == engineQEMU {
		if r.mode == migrator.ModeTSMC {
			return "tsmc (QEMU post-copy)"
		}
		return "QEMU " + r.mode
	}
	return r.mode
}

// writeQEMUMigrationTable prints the QEMU VM's migrations side by side,
// marking a guest's pause (its downtime where that is not known) over the
// downtime limit, as migrate says of one (walk 86: the demo did not).
func writeQEMUMigrationTable(w io.Writer, rows []qemuMigration) {
	limit := migrator.DefaultDowntimeLimit
	over := 0
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "migration\ttotal\tdowntime\tpaused\tbytes\trounds\tdeferred\tthrottle\tpulled\tguest slowed\tverified\tstopped because\t")
	ms := tableMS
	for _, r := range rows {
		i := r.info
		rounds, deferred, verified, why := int(i.RAM.DirtySyncCount), uint64(0), "-", "fit the limit"
		switch {
		case i.Pagecast != nil:
			rounds, deferred, verified = i.Pagecast.Round, i.Pagecast.DeferredAll, fmt.Sprint(i.Pagecast.Verified)
			if capped, _ := i.Pagecast.RoundCapped(); capped {
				why = "round cap"
			} else {
				why = "fit the limit"
			}
		case r.forced:
			why = "round cap"
		case i.RAM.PostcopyRequests > 0 || i.RAM.PostcopyBytes > 0:
			why = "post-copy"
		}
		slowed := shareString(r.slowdown, i)
		if i.Pagecast != nil {
			slowed = slowdownString(i)
		}
		paused := "-"
		if r.paused >= 0 {
			paused = r.paused.Round(time.Millisecond).String()
		}
		if pause := r.paused; pause > limit || pause < 0 && time.Duration(i.Downtime)*time.Millisecond > limit {
			why += " (over)"
			over++
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d%%\t%d\t%s\t%s\t%s\t\n", r.label(), ms(i.TotalTime), ms(i.Downtime), paused,
			units.FormatBytes(float64(i.RAM.Transferred)), rounds, deferred, i.CPUThrottlePercentage, i.RAM.PostcopyRequests, slowed, verified, why)
	}
	tw.Flush()
	if over > 0 {
		fmt.Fprintf(w, "(over: the guest paused longer than the %v downtime limit; a stop forced at the round cap is over it by design, a switch-over slower than its estimate by chance)\n", limit)
	}
}
