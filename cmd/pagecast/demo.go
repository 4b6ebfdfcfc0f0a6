package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/pagecast/pagecast/collector"
	"github.com/pagecast/pagecast/guest"
	"github.com/pagecast/pagecast/internal/units"
	"github.com/pagecast/pagecast/migrator"
	"github.com/pagecast/pagecast/predictor"
	"github.com/pagecast/pagecast/qemu"
	"github.com/pagecast/pagecast/qmpserver"
	"github.com/pagecast/pagecast/simulate"
	"github.com/pagecast/pagecast/trace"
	"github.com/pagecast/pagecast/vmm"
)

func demoCommand() *cli.Command {
	flags := vmFlags()
	for _, f := range flags {
		if sf, ok := f.(*cli.StringFlag); ok && sf.Name == "memory" {
			sf.Value = "64M"
		}
		if sf, ok := f.(*cli.StringFlag); ok && sf.Name == "workload" {
			sf.Value = "hotset:hot=2048,p=0.95"
			sf.DefaultText = fmt.Sprintf("%q; under TCG with delay=%d added", sf.Value, tcgDemoDelay)
		}
		if vf, ok := f.(*cli.IntFlag); ok && vf.Name == "vcpus" {
			vf.Usage = fmt.Sprintf("virtual CPUs (1..%d), each running a share of the workload, under pagecast's own monitor (under --monitor qemu the guest has one)", guest.MaxCPUs)
		}
	}
	return &cli.Command{
		Name:  "demo",
		Usage: "the main job end to end on a local VM: profile its dirtying live, forecast it, migrate it",
		Description: "Boots a small pagecast VM that writes an 8 MiB hot set and, 5% of the time, anywhere, profiles it\n" +
			"and prints every interval how many distinct pages it dirtied, their bytes a second (what a pre-copy\n" +
			"round of that length would send again; profile's \"dirtied\" rate sums each epoch's pages instead),\n" +
			"a strip showing where in guest memory the writes land, and the hottest regions. Then scores the\n" +
			"predictor's forecasts of those epochs against simple baselines, and live-migrates the VM on loopback once in each mode (each\n" +
			"of pagecast's engine's checked against the source's memory; QEMU's own migrations have no such\n" +
			"check, and their verified column shows -), and prints them side by side.\n\n" +
			"Where /dev/kvm works (--monitor auto): pagecast's own KVM monitor, profiled by its eBPF programs\n" +
			"(without root, KVM's dirty log, and it says so), migrated from monitor to monitor in this process\n" +
			"(precopy, predictive warmed by the profile just taken, throttle, tsmc, mecom, predictive+mecom, and the\n" +
			"mode auto chooses from that profile where it is none of them).\n" +
			"Elsewhere: QEMU under TCG, profiled by pagecast's TCG plugin, the guest slowed to delay=25000\n" +
			"unless --workload is given (TCG writes some 100 times faster than the KVM the figures were made\n" +
			"on); its migrations are pagecast's engine between QEMUs in the modes it runs there and QEMU's own\n" +
			"pre-copy beside them, then simulations of every mode on the profile, and mode auto choosing for\n" +
			"this VM and saying why.\n",
		Flags: append(flags,
			&cli.DurationFlag{Name: "duration", Value: 8 * time.Second, Usage: "how long to watch"},
			&cli.DurationFlag{Name: "interval", Value: 500 * time.Millisecond, Usage: "time between lines; the forecasts are scored in epochs this long"},
			&cli.DurationFlag{Name: "epoch", Value: migrator.DefaultEpoch, Usage: "how often the dirty pages are harvested: the profile's epoch, which the migrations' predictor and the simulations use (a simulation in epochs longer than a pre-copy round sees too few of a hot page's writes); each line sums --interval of them"},
			&cli.StringFlag{Name: "bandwidth", Value: "32MiB/s", Usage: "link cap for the loopback migrations"},
			&cli.StringFlag{Name: "modes", Value: strings.Join(demoModes, ","), Usage: "migration modes to run, in turn, comma-separated (see pagecast migrate --help)"},
			&cli.BoolFlag{Name: "no-migrate", Usage: "stop after profiling and forecasting"},
			&cli.StringFlag{Name: "monitor", Value: monitorAuto, Usage: "what runs the guest: pagecast (its own KVM monitor), qemu (QEMU with --accel), or auto: pagecast where /dev/kvm works, else QEMU under TCG"},
			&cli.StringFlag{Name: "accel", Value: "auto", Usage: "with QEMU: auto, kvm or tcg"},
		),
		Action: holdsOnClosedOutput(func(c *cli.Context) error {
			// SIGINT, SIGTERM or SIGHUP ends the demo with its VMs and
			// files cleaned up; a second one kills it at once.
			ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
			defer stop()
			context.AfterFunc(ctx, stop)
			c.Context = ctx
			err := runDemo(c, c.App.Writer)
			if err != nil && ctx.Err() != nil {
				return errors.New("interrupted: the demo's VMs are stopped and its files removed")
			}
			return err
		}),
	}
}

func runDemo(c *cli.Context, out io.Writer) error {
	// Read before the VM starts: a bad link fails at once.
	if _, err := linkBandwidth(c.String("bandwidth")); err != nil {
		return err
	}
	switch m := c.String("monitor"); m {
	case monitorAuto:
		// As vm run's auto (resolveMonitor): pagecast's own monitor's
		// flags take it (review 88: --kvm PATH was refused under QEMU).
		if c.IsSet("kvm") || c.IsSet("dirty") {
			break
		}
		if err := qemu.KVMUsable(); err != nil {
			return runQEMUDemo(c, out, "")
		}
	case monitorQEMU:
		return runQEMUDemo(c, out, "--monitor qemu")
	case monitorPagecast:
	default:
		return fmt.Errorf("--monitor %q: want auto, pagecast or qemu", m)
	}
	modes, err := demoModeList(c.String("modes"), false, 0)
	if err != nil {
		return err
	}
	epoch, err := demoEpoch(c)
	if err != nil {
		return err
	}
	log := slog.Default()
	vm, err := newVM(c, log, true)
	if err != nil {
		return noKVMHint(c, err)
	}
	defer vm.Close()

	// Serve QMP, as `pagecast vm run --qmp` does, for the profiler.
	dir, err := os.MkdirTemp("", "pagecast-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "qmp.sock")
	l, err := qmpserver.Listen(sock)
	if err != nil {
		return err
	}
	srv := qmpserver.New(log, "pagecast")
	vm.RegisterQMP(srv, func() {})
	ctx, cancel := context.WithCancel(c.Context)
	defer cancel()
	go srv.Serve(ctx, l)
	if err := vm.Start(); err != nil {
		return err
	}

	fmt.Fprintf(out, "pagecast demo: %s guest, %d vCPU, workload %s, dirty tracking: %s\n",
		units.FormatBytes(float64(vm.MemoryBytes())), vm.VCPUs(), c.String("workload"), vm.DirtyMode())
	// Said as the QEMU demo says its accelerator: the monitor, and why
	// (make demo's --log-level warn hid the log line; a new-user walk).
	why := "--monitor pagecast"
	if c.String("monitor") == monitorAuto {
		why = "/dev/kvm works here"
		if qemu.KVMEmulates() {
			why += " (kvm-pvm's, which emulates the guest's instructions: slower than hardware, far faster than QEMU's TCG)"
		}
	}
	fmt.Fprintf(out, "running on pagecast's own KVM monitor: %s; --monitor qemu runs it under QEMU instead\n", why)
	next, source, closeSource, err := demoSource(c.Context, vm, sock, epoch)
	if err != nil {
		return err
	}
	var closeOnce sync.Once
	defer closeOnce.Do(closeSource)
	fmt.Fprintf(out, "dirty pages from: %s\n", source)
	alive := func() error {
		if state, err := vm.State(); err != nil {
			return fmt.Errorf("guest stopped (%s): %w", state, err)
		}
		return nil
	}
	epochs, err := demoWatch(c, out, vm, vm.MemoryBytes(), next, alive)
	if err != nil {
		return err
	}
	closeOnce.Do(closeSource) // the profiler would count the migration's destinations, in this process too
	if c.Bool("no-migrate") {
		return nil
	}
	profile := filepath.Join(dir, "profile.pct")
	if err := writeProfile(profile, epochs, vm.MemoryBytes(), epoch, source); err != nil {
		return err
	}
	bw, err := linkBandwidth(c.String("bandwidth"))
	if err != nil {
		return err
	}
	holes, err := migrator.Holes(vm.Migratable())
	if err != nil {
		return err
	}
	pred, err := demoPredict(c, profile, vm.Memory(), holes, vm.VCPUs(), bw, 0, pageRates{}, simulate.AutoModes) // pagecast's monitor runs every mode
	if err != nil {
		return err
	}
	live, err := demoMigrations(c, out, vm, log, pred, pred.withChoice(modes), migrator.Config{MaxBandwidth: bw, Epoch: epoch, Profile: profile})
	if err != nil {
		return err
	}
	return demoSimulations(c, out, pred, live)
}

// demoGuest is what the demo's watch reads of a running pagecast guest.
type demoGuest interface {
	GuestStatus() (guest.Status, error)
}

// demoEpoch returns --epoch, checked against --interval.
func demoEpoch(c *cli.Context) (time.Duration, error) {
	epoch, interval := c.Duration("epoch"), c.Duration("interval")
	if epoch < time.Millisecond || interval < epoch {
		if interval < time.Millisecond {
			return 0, fmt.Errorf("--interval %v: want a line every 1ms or more (and an --epoch within it)", interval)
		}
		return 0, fmt.Errorf("--epoch %v: want 1ms or more, and no more than --interval (%v)", epoch, interval)
	}
	return epoch, nil
}

// demoWatch prints every interval how many pages the guest dirtied and
// where, for --duration, then scores the forecasts of those intervals,
// and returns the epochs next gave, --interval/--epoch to a line.
func demoWatch(c *cli.Context, out io.Writer, g demoGuest, memory uint64, next func() (*vmm.Bitmap, time.Duration, error), alive func() error) ([]trace.Epoch, error) {
	parts := max(1, int(c.Duration("interval")/c.Duration("epoch")))
	pages := memory / vmm.PageSize
	fmt.Fprintf(out, "each strip cell is %s of guest memory, from address 0 on the left; darker = more pages dirtied\n\n",
		units.FormatBytes(float64(pages/stripWidth*vmm.PageSize)))
	fmt.Fprintf(out, "pages: distinct pages dirtied in the interval; distinct/s: their bytes a second\n")
	fmt.Fprintf(out, "%7s %7s %11s %12s  %-66s %s\n", "time", "pages", "distinct/s", "guest writes", "where", "hottest 1 MiB regions")

	start := time.Now()
	lastProgress := uint64(0)
	total := vmm.NewBitmap(pages) // every page dirtied in the demo
	var epochs []trace.Epoch
	for time.Since(start) < c.Duration("duration") {
		if err := c.Context.Err(); err != nil {
			return nil, err // a signal: it watched on for --duration (found by a review walk)
		}
		set := vmm.NewBitmap(pages) // the line's
		var dt time.Duration
		for range parts {
			part, d, err := next()
			if err != nil {
				return nil, err
			}
			set.Or(part)
			dt += d
			// From 1, as profile numbers its recordings' epochs.
			epochs = append(epochs, trace.Epoch{Index: uint64(len(epochs)) + 1, Pages: part.List()})
		}
		if err := alive(); err != nil {
			return nil, err
		}
		st, err := g.GuestStatus()
		if err != nil {
			return nil, err
		}
		list := set.List()
		total.Or(set)
		var hot []string
		for _, r := range collector.Hottest(list, 1<<20, 2) {
			hot = append(hot, fmt.Sprintf("%#x:%d", r.Start, r.Pages))
		}
		progress := st.TotalProgress()
		fmt.Fprintf(out, "%6.1fs %7d %9s/s %12d  |%s| %s\n", time.Since(start).Seconds(), set.Count(),
			units.FormatBytes(float64(set.Count()*vmm.PageSize)/dt.Seconds()), progress-lastProgress, strip(set), strings.Join(hot, " "))
		lastProgress = progress
	}
	printForecastScores(out, epochs, parts, pages, c.Duration("epoch")*time.Duration(parts))
	st, _ := g.GuestStatus()
	fmt.Fprintf(out, "\n%d distinct pages dirtied (%s of %s) in %.1fs; guest: %s\n",
		total.Count(), units.FormatBytes(float64(total.Count()*vmm.PageSize)), units.FormatBytes(float64(memory)),
		time.Since(start).Seconds(), st)
	return epochs, nil
}

// collectorSource turns a collector's epochs into the demo's bitmaps.
func collectorSource(ctx context.Context, col *collector.Collector, memory uint64, epoch time.Duration) func() (*vmm.Bitmap, time.Duration, error) {
	return func() (*vmm.Bitmap, time.Duration, error) {
		select {
		case <-ctx.Done():
			return nil, 0, context.Cause(ctx)
		case <-time.After(epoch):
		}
		e, err := col.CloseEpoch()
		if err != nil {
			return nil, 0, err
		}
		set := vmm.NewBitmap(memory / vmm.PageSize)
		for _, p := range e.Pages {
			set.Set(p)
		}
		return set, e.Duration, nil
	}
}

func writeProfile(path string, epochs []trace.Epoch, memory uint64, epoch time.Duration, source string) error {
	w, err := trace.Create(path, trace.Meta{MemoryBytes: memory, PageSize: vmm.PageSize, Epoch: epoch, Source: "pagecast demo", Hook: source,
		Extra: map[string]string{trace.ExtraGuest: trace.GuestPagecast}})
	if err != nil {
		return err
	}
	for _, e := range epochs {
		if err := w.Append(e); err != nil {
			w.Close()
			return err
		}
	}
	return w.Close()
}

// demoModes are the modes the demo migrates with, in turn.
var demoModes = []string{migrator.ModePrecopy, migrator.ModePredictive, migrator.ModeThrottle, migrator.ModeTSMC,
	migrator.MECOM, migrator.ModePredictive + "+" + migrator.MECOM}

// demoModeList reads --modes before the demo boots anything: each mode
// known, each once. On QEMU (memory the guest's bytes) a mode that runs
// the guest on the destination early is QEMU's post-copy, so it must be
// one QEMU's engine plans.
func demoModeList(flag string, onQEMU bool, memory uint64) ([]string, error) {
	var modes []string
	for m := range strings.SplitSeq(flag, ",") {
		m = strings.TrimSpace(m)
		if m == "" || slices.Contains(modes, m) {
			continue
		}
		if err := migrator.CheckMode(m); err != nil {
			return nil, fmt.Errorf("--modes: %w", err)
		}
		if onQEMU && migrator.NeedsPostcopy(m) {
			if _, err := migrator.PlanQEMU(migrator.Params{Mode: m}, memory); err != nil {
				// Not PlanQEMU's advice, which is migrate's (--engine
				// pagecast, vm run): neither applies here (walk 99).
				return nil, fmt.Errorf("--modes: %s cannot run on QEMU: post-copy on QEMU is QEMU's own (pagecast's stage 3 cannot pull pages into QEMU's memory), which runs %s only; %s needs pagecast's own monitor, under KVM (demo --monitor pagecast)", m, qemuPostcopyModes(), m)
			}
		}
		modes = append(modes, m)
	}
	if len(modes) == 0 {
		return nil, fmt.Errorf("--modes %q: want at least one mode", flag)
	}
	return modes, nil
}

// baselineFirst is modes with precopy, the comparison's baseline, first
// and once.
func baselineFirst(modes []string) []string {
	rest := slices.DeleteFunc(slices.Clone(modes), func(m string) bool { return m == migrator.ModePrecopy })
	return append([]string{migrator.ModePrecopy}, rest...)
}

// demoMigrations moves the running VM to a fresh monitor with each mode in
// turn (the second migration starts from where the first one put it) and
// prints the figures side by side. Auto's choice (pred's) is simulated
// again on the guest's memory as its live run begins, as the QEMU demo
// does (walk 147: docs/demo.md said both demos did).
func demoMigrations(c *cli.Context, out io.Writer, vm *vmm.VM, log *slog.Logger, pred demoPrediction, modes []string, cfg migrator.Config) (map[string]liveRun, error) {
	fmt.Fprintf(out, "\nlive migration on loopback, link capped at %s/s, downtime limit %v:\n",
		units.FormatBytes(float64(cfg.MaxBandwidth)), migrator.DefaultDowntimeLimit)
	cur := vm
	var infos []migrator.Info
	var again *simulate.Result
	var againMix simulate.Mix
	for _, mode := range baselineFirst(modes) {
		if mode == pred.choice.Mode {
			r, mix := pred.again(c, mode, cur.Memory())
			again, againMix = &r, mix
		}
		dst, err := newVM(c, log, false)
		if err != nil {
			return nil, err
		}
		defer dst.Close()
		mc := cfg
		mc.Mode = mode
		if !strings.HasPrefix(mode, migrator.ModePredictive) {
			mc.Profile = ""
		}
		mc.Log = log
		info, err := migrateLoopback(c.Context, c.App.ErrWriter, cur.Migratable(), dst.Migratable(), mc)
		if err != nil {
			return nil, fmt.Errorf("%s migration: %w", mode, err)
		}
		before, _ := cur.GuestStatus()
		time.Sleep(300 * time.Millisecond)
		after, _ := dst.GuestStatus()
		if after.TotalProgress() <= before.TotalProgress() {
			return nil, fmt.Errorf("%s migration: the guest makes no progress on the destination", mode)
		}
		fmt.Fprintf(out, "  %-25s done: guest running on the destination (progress %d -> %d), memory verified\n",
			mode, before.TotalProgress(), after.TotalProgress())
		infos = append(infos, info)
		cur.Close()
		cur = dst
	}
	fmt.Fprintln(out)
	writeMigrationTable(out, infos)
	var done []modeOutcome
	for _, i := range infos {
		done = append(done, modeOutcome{i.Pagecast.Mode, i, migrator.DefaultDowntimeLimit})
	}
	writeStops(out, done)
	fmt.Fprintln(out, "\nagainst precopy:")
	pre := infos[0]
	for _, i := range infos[1:] {
		fmt.Fprintf(out, "  %-25s %4.0f%% of the bytes, %4.0f%% of the downtime, %4.0f%% of the total time\n", i.Pagecast.Mode,
			100*float64(i.RAM.Transferred)/float64(pre.RAM.Transferred),
			100*float64(i.Downtime)/float64(max(pre.Downtime, 1)),
			100*float64(i.TotalTime)/float64(max(pre.TotalTime, 1)))
	}
	live := map[string]liveRun{}
	for _, i := range infos {
		l := liveRun{info: i, paused: -1}
		if i.Pagecast.Mode == pred.choice.Mode {
			l.again, l.againMix = again, againMix
		}
		live[i.Pagecast.Mode] = l
	}
	return live, nil
}

// migrateLoopback migrates g into d over loopback, both ends in this
// process, with a progress bar on w, and returns the source's Info once
// both ends are done.
func migrateLoopback(ctx context.Context, w io.Writer, g migrator.Guest, d migrator.Destination, cfg migrator.Config) (migrator.Info, error) {
	l, err := migrator.Listen("tcp:127.0.0.1:0", nil)
	if err != nil {
		return migrator.Info{}, err
	}
	received := make(chan error, 1)
	go func() {
		conn, err := l.Accept()
		l.Close()
		if err != nil {
			received <- err
			return
		}
		defer conn.Close()
		_, err = migrator.Receive(ctx, conn, d, migrator.ReceiveConfig{Log: cfg.Log})
		received <- err
	}()
	m, err := migrator.Outgoing(g, "tcp:"+l.Addr().String(), cfg)
	if err != nil {
		l.Close()
		<-received
		return migrator.Info{}, err
	}
	bar := newProgressBar(w, false)
	bar.label = cfg.Mode // the demo runs one migration after another: which this is
	info, err := followMigration(ctx, m, bar)
	if rerr := <-received; err == nil && rerr != nil {
		err = rerr
	}
	return info, err
}

// followMigration draws m's progress until it ends (cancelling it if ctx
// ends first) and returns its outcome.
func followMigration(ctx context.Context, m *migrator.Migration, bar *progressBar) (migrator.Info, error) {
	for done := false; !done; {
		select {
		case <-m.Done():
			done = true
		case <-ctx.Done():
			if err := m.Cancel(); err != nil {
				fmt.Fprintf(bar.w, "\npagecast: %v: waiting for its end\n", err)
			}
			<-m.Done()
			done = true
		case <-time.After(200 * time.Millisecond):
		}
		bar.update(m.Info())
	}
	bar.done()
	return m.Wait()
}

// demoSource returns a function giving each epoch's dirty pages: from the
// eBPF profiler when it loads, else from the monitor's own dirty log.
func demoSource(ctx context.Context, vm *vmm.VM, sock string, epoch time.Duration) (next func() (*vmm.Bitmap, time.Duration, error), source string, closeFn func(), err error) {
	col, err := collector.New(collector.Config{QMP: sock, Epoch: epoch})
	if err == nil {
		return collectorSource(ctx, col, vm.MemoryBytes(), epoch), "eBPF on " + col.Hook(), func() { col.Close() }, nil
	}
	why := err
	dl, err := vm.StartDirtyLog()
	if err != nil {
		return nil, "", nil, err
	}
	last := time.Now()
	next = func() (*vmm.Bitmap, time.Duration, error) {
		time.Sleep(epoch)
		set, err := dl.Harvest()
		now := time.Now()
		dt := now.Sub(last)
		last = now
		return set, dt, err
	}
	return next, fmt.Sprintf("KVM's dirty log (the eBPF profiler is unavailable: %v)", why), func() { dl.Close() }, nil
}

// printForecastScores replays the demo's epochs, joined parts to one (a
// line's), through the predictor and the baselines it must beat, each
// predicting every epoch from the ones before, the model told in which
// part of it a page was written, and prints how each scored.
func printForecastScores(out io.Writer, epochs []trace.Epoch, parts int, pages uint64, joined time.Duration) {
	const warmup = 4
	epochs, byParts := predictor.GroupEpochs(epochs, parts)
	if len(epochs) <= warmup+1 {
		return
	}
	results := predictor.Evaluate(epochs, pages, predictor.Contenders(pages, predictor.Options{}), predictor.EvalOptions{Warmup: warmup, Parts: byParts})
	// The joined epochs' length: a new-user walk could not tell it.
	fmt.Fprintf(out, "\nnext-epoch forecasts over the last %d epochs of %v (threshold 0.5", len(epochs)-warmup, joined)
	if parts > 1 {
		fmt.Fprintf(out, "; the model told in which of %d parts of each a page was written", parts)
	}
	fmt.Fprintln(out, "):")
	writeEvalTable(out, results)
}

const stripWidth = 64

// strip draws the share of dirtied pages in each of stripWidth equal
// slices of guest memory.
func strip(set *vmm.Bitmap) string {
	const shades = " .:-=+*#%@"
	per := (set.Pages() + stripWidth - 1) / stripWidth
	counts := make([]uint64, stripWidth)
	set.ForEach(func(gfn uint64) { counts[gfn/per]++ })
	var b strings.Builder
	for _, n := range counts {
		i := 0
		if n > 0 {
			i = 1 + int(float64(n)/float64(per)*float64(len(shades)-2)+0.5)
			i = min(i, len(shades)-1)
		}
		b.WriteByte(shades[i])
	}
	return b.String()
}
