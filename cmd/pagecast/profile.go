package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"net"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/urfave/cli/v2"

	"github.com/pagecast/pagecast/bitmap"
	"github.com/pagecast/pagecast/bpf"
	"github.com/pagecast/pagecast/collector"
	"github.com/pagecast/pagecast/internal/units"
	"github.com/pagecast/pagecast/migrationmetrics"
	"github.com/pagecast/pagecast/migrator"
	"github.com/pagecast/pagecast/migrator/mecom"
	"github.com/pagecast/pagecast/predictor"
	"github.com/pagecast/pagecast/qemu"
	"github.com/pagecast/pagecast/qemuguest"
	"github.com/pagecast/pagecast/simulate"
	"github.com/pagecast/pagecast/tcg"
	"github.com/pagecast/pagecast/trace"
)

func profileCommand() *cli.Command {
	return &cli.Command{
		Name:  "profile",
		Usage: "record which guest pages a running VM dirties, epoch by epoch (eBPF on KVM, a plugin under QEMU's TCG)",
		Description: "Finds the VM through its QMP socket and picks the hook that sees its writes:\n" +
			"  - KVM (pagecast's own monitor, or QEMU with -accel kvm,dirty-ring-size=N): pagecast's eBPF\n" +
			"    programs on KVM's dirty tracking hooks, with KVM dirty logging kept on through QMP; needs root.\n" +
			"  - QEMU under TCG (no /dev/kvm): pagecast's TCG plugin, which QEMU must have been started with\n" +
			"    (`pagecast vm run --monitor qemu` does it; `pagecast plugin` prints the -plugin option to add).\n" +
			"Every --epoch it harvests the pages dirtied, writes them to a trace file as an epoch and updates\n" +
			"Prometheus metrics; every --interval it prints the distinct pages dirtied in its epochs, the rate\n" +
			"of dirtying (each epoch's pages, summed, as trace info and simulate count it), that of the distinct\n" +
			"pages, and the hottest regions. The default 100ms epochs are what pagecast simulate, migrate --profile\n" +
			"and the predictor's migrations use; a line a second is what a person reads. Runs for --duration\n" +
			"or until SIGINT, or until the VM exits (the trace keeps every epoch closed before). --list-hooks\n" +
			"shows which hooks work here.\n\n" +
			"Example: pagecast profile --qmp unix:/tmp/pc.sock --duration 60s --out vm.pct --metrics 127.0.0.1:9471",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "qmp", Usage: "the VM's QMP socket, unix:PATH (pagecast vm run --qmp, or QEMU -qmp)"},
			&cli.IntFlag{Name: "pid", DefaultText: "found from the VM's vCPU threads through QMP", Usage: "the VMM process (with --qmp it must be that process); without --qmp, also give --memory and keep dirty logging on yourself"},
			&cli.StringFlag{Name: "memory", Usage: "guest RAM, only without --qmp"},
			&cli.DurationFlag{Name: "duration", Usage: "how long to profile (a positive duration)", DefaultText: "until SIGINT"},
			&cli.DurationFlag{Name: "epoch", Value: migrator.DefaultEpoch, Usage: "epoch length: the time resolution of the write history (a trace for pagecast simulate or migrate --profile wants the migration's 100ms or less: a simulated round shorter than an epoch meets too few of its writes; 25ms lets predict eval and serve --parts 4 tell when in each 100 ms a page was written)"},
			&cli.DurationFlag{Name: "interval", Value: time.Second, Usage: "time between the printed lines, each of the epochs within it (at least one epoch: 0 prints every epoch)"},
			&cli.StringFlag{Name: "out", Aliases: []string{"o"}, Usage: "trace file to write (pagecast trace info/export read it)"},
			&cli.StringFlag{Name: "metrics", Usage: "serve Prometheus metrics on this address, e.g. 127.0.0.1:9471"},
			&cli.StringFlag{Name: "name", Action: checkName, Usage: "with --metrics, the VM's name in the metrics' vm label, as migrate --name and vm run --name (default: QEMU's -name, else the QMP socket's file name without its extension; without --qmp, pid N)"},
			&cli.DurationFlag{Name: "metrics-linger", Value: time.Minute, Usage: "with --metrics, once the profile has ended keep serving until Prometheus, if it has scraped them, has scraped the end twice, at most this long (its last epochs would be lost otherwise); 0 stops at once"},
			&cli.StringFlag{Name: "hook", Usage: "use this hook instead of the best available (see --list-hooks)"},
			&cli.BoolFlag{Name: "list-hooks", Usage: "list the hooks and whether each works here, then exit"},
			&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "no lines every --interval"},
		},
		Action: holdsOnClosedOutput(runProfile),
	}
}

func runProfile(c *cli.Context) error {
	out := c.App.Writer
	if c.Bool("list-hooks") {
		return listHooks(out)
	}
	qemu.RemoveStale() // RAM files of vm runs killed before they could remove theirs
	cfg := collector.Config{PID: c.Int("pid"), Epoch: c.Duration("epoch"), Hook: c.String("hook"), Log: slog.Default()}
	if cfg.Epoch < collector.MinEpoch || cfg.Epoch > trace.MaxEpoch {
		return fmt.Errorf("--epoch %v: want %v to %v", cfg.Epoch, collector.MinEpoch, trace.MaxEpoch)
	}
	if d := c.Duration("duration"); c.IsSet("duration") && d <= 0 {
		return fmt.Errorf("--duration %v: want a positive duration, or leave it out to profile until SIGINT", d)
	}
	if d := c.Duration("duration"); c.IsSet("duration") && d < cfg.Epoch {
		return fmt.Errorf("--duration %v is shorter than one --epoch of %v: no epoch would end", d, cfg.Epoch)
	}
	if c.Duration("interval") < 0 {
		return fmt.Errorf("--interval %v: want 0 or more", c.Duration("interval"))
	}
	if d := c.Duration("metrics-linger"); d < 0 {
		return fmt.Errorf("--metrics-linger %v: want 0 (stop serving at once) or more", d)
	}
	if c.IsSet("metrics-linger") && !c.IsSet("metrics") {
		// As migrate says (walk 52: it was taken and did nothing).
		return errors.New("--metrics-linger is how long --metrics serves after the end: give --metrics too, or leave it out")
	}
	if c.IsSet("name") && !c.IsSet("metrics") {
		return errors.New("--name is the VM's name in the metrics' vm label: give --metrics too, or leave it out")
	}
	perLine := max(1, int(c.Duration("interval")/cfg.Epoch)) // epochs a printed line sums
	if spec := c.String("qmp"); spec != "" {
		path, ok := strings.CutPrefix(spec, "unix:")
		if !ok {
			return fmt.Errorf("--qmp %q: want unix:PATH", spec)
		}
		cfg.QMP = path
	} else if cfg.PID == 0 {
		return errors.New("give --qmp unix:PATH (or --pid and --memory)")
	}
	if c.IsSet("memory") && c.IsSet("qmp") {
		return errors.New("--memory is for --pid: through --qmp the VM says its own size")
	}
	if m := c.String("memory"); m != "" {
		mem, err := units.ParseBytes(m)
		if err != nil {
			return fmt.Errorf("--memory: %w", err)
		}
		cfg.MemoryBytes = mem
	}
	// Everything a start can fail on is done before the trace file is
	// created, which truncates it: a failed start leaves an existing trace
	// as it was (a busy --metrics port left a 142-byte trace of no epoch).
	// -o and --metrics are checked before the VM is attached to.
	if path := c.String("out"); path != "" {
		if err := checkOutput("--out", path); err != nil {
			return err
		}
	}
	var metrics net.Listener
	if addr := c.String("metrics"); addr != "" {
		l, err := listenMetrics(addr)
		if err != nil {
			return err
		}
		defer l.Close() // for a failure before it is served; then a no-op
		metrics = l
	}
	ctx, cancel := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer cancel()
	signalled := ctx // done once a signal has come

	col, err := attachCollector(ctx, cfg, "profiled")
	if err != nil {
		return err
	}
	defer col.Close()
	// --duration is profiling time: it starts once the programs are attached.
	if d := c.Duration("duration"); d > 0 {
		ctx, cancel = context.WithTimeout(ctx, d)
		defer cancel()
	}
	t := col.Target()
	if cfg.Hook == "" && t.DirtyMode == bpf.ModeBitmap && qemu.KVMEmulates() {
		// Chosen for the user, the one bitmap hook would record an empty
		// trace and exit 0 (walk 128); given by name, it is tried, and
		// noPagesWarning says why it sees nothing.
		return fmt.Errorf("this VM tracks dirty pages with a bitmap, whose one hook, %s, never fires under this host's KVM, kvm-pvm's: "+
			"profile a VM with a dirty ring (vm run --dirty ring, the default; QEMU -accel kvm,dirty-ring-size=65536), or give --hook %s to try it all the same",
			bitmapHook, bitmapHook)
	}
	// The trace is created last, once the start can no longer fail, and
	// before profile says it profiles (it said so, then failed to create
	// --out /nonexistent/x.pct).
	var w *trace.Writer
	if path := c.String("out"); path != "" {
		extra := map[string]string{"guest-memory-bytes": fmt.Sprint(t.MemoryBytes), "dirty-mode": t.DirtyMode}
		if t.Guest != "" {
			extra[trace.ExtraGuest] = t.Guest
		}
		w, err = trace.Create(path, trace.Meta{
			MemoryBytes: t.MaxPages() * 4096,
			PageSize:    4096,
			Epoch:       cfg.Epoch,
			Hook:        col.Hook(),
			Source:      fmt.Sprintf("%s pid %d", t.Kind, t.PID),
			Start:       col.Began(),
			Extra:       extra,
		})
		if err != nil {
			return err
		}
		defer w.Close()
	}
	for _, f := range col.Fallbacks() {
		fmt.Fprintf(c.App.ErrWriter, "note: hook %s cannot load here (%v); using the next one (--list-hooks lists them)\n", f.Hook.Name, f.Err)
	}
	fmt.Fprintf(out, "profiling %s VM (pid %d, %s, dirty %s) with %s, epoch %s\n",
		t.Kind, t.PID, units.FormatBytes(float64(t.MemoryBytes)), t.DirtyMode, col.Hook(), cfg.Epoch)

	if t.DirtyMode == collector.DirtyTCG {
		// From the layout QEMU gave where it was read (QEMU 8.2 and
		// later, whose plugin names frames): a q35 moves RAM up past 2
		// GiB, not 3 (walk 111: a 3 GiB q35 said nothing).
		for _, r := range t.RAMLayout().Ranges() {
			if r.GPA >= 1<<32 && r.GPA > r.Offset {
				fmt.Fprintf(c.App.ErrWriter, "note: the trace names pages by their offset in guest RAM, as it does any TCG guest's: past %s, %s below their guest-physical address\n",
					units.FormatBytes(float64(r.Offset)), units.FormatBytes(float64(r.GPA-r.Offset)))
				break
			}
		}
	}
	if t.Kind == "qemu" && t.DirtyMode == bpf.ModeRing && qemu.KVMEmulates() {
		// Measured on 2026-12-03 with QEMU 7.2 (calc-dirty-rate by hand
		// as well as profile): a zipf guest dirtying 627 MB/s stopped
		// within a second of dirty logging starting, and ran no more.
		fmt.Fprintln(c.App.ErrWriter, "pagecast: warning: under this host's kvm-pvm, QEMU's KVM dirty ring stops a guest for good once the ring fills "+
			"(65536 entries a vCPU: a guest writing fast stops within a second of profiling); profile it under TCG instead (vm run --monitor qemu --accel tcg, or QEMU -accel tcg with pagecast plugin's -plugin)")
	}
	if t.Kind == "qemu" {
		switch lifted, err := qemuguest.LiftLeftThrottle(t.PID); {
		case err != nil:
			fmt.Fprintf(c.App.ErrWriter, "pagecast: warning: looking for, or lifting, a throttle a killed pagecast migrate may have left on this QEMU's vCPUs: %v\n", err)
		case lifted:
			fmt.Fprintln(c.App.ErrWriter, "pagecast: a killed pagecast migrate had left this QEMU's vCPUs throttled: the throttle is lifted")
		}
	}
	if t.Kind == "qemu" && !t.SharedRAM {
		fmt.Fprintln(c.App.ErrWriter, "note: this QEMU's guest RAM is not shared memory; profiling does not need it, but pagecast's own migration engine will (-object memory-backend-file,id=ram,size=SIZE,mem-path=/dev/shm/FILE,share=on -machine memory-backend=ram)")
	}
	if metrics != nil {
		// A vm label, as migrate's and predict serve's metrics have: a
		// fleet told its VMs apart by scrape target only (walk 52).
		name := vmName(c, cfg.QMP, col.Monitor())
		if cfg.QMP == "" && !c.IsSet("name") {
			name = fmt.Sprintf("pid %d", t.PID)
		}
		stop, scrapes := serveMetricsCounted(metrics, labelled{prometheus.Labels{"vm": name}, col.Metrics()})
		defer func() {
			// Prometheus scrapes every few seconds: the last epochs
			// reach it only if the end is served a while.
			if linger := c.Duration("metrics-linger"); linger > 0 && scrapes() > 0 {
				lctx, lstop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
				fmt.Fprintf(c.App.ErrWriter, "pagecast: serving the metrics on %s until Prometheus has scraped the end twice, at most %v (--metrics-linger; Ctrl-C stops the wait)\n", metrics.Addr(), linger)
				migrationmetrics.LingerScrapes(lctx, scrapes, linger)
				lstop()
			}
			stop()
		}()
	}

	var epochs, pages uint64
	var long longEpochs
	var written *bitmap.Bitmap // every page the profile saw written, for what they hold at the end (heldContent)
	if t.Kind == "qemu" && t.SharedRAM {
		written = bitmap.New(t.MaxPages())
	}
	var line []collector.Epoch // the epochs of the line being made
	printLine := func() {
		if len(line) > 0 && !c.Bool("quiet") {
			printEpochs(out, line)
			if len(line) < perLine {
				// Over fewer epochs fewer pages repeat: its distinct
				// rate is higher than a whole line's would be.
				fmt.Fprintf(out, "  (a short last line: %d of %d epochs; its distinct rate is not comparable with the others')\n", len(line), perLine)
			}
		}
		line = line[:0]
	}
	quiet := max(1, uint64(2*time.Second/cfg.Epoch)) // epochs without a page that warrant a warning
	watch := runStateWatch{mon: col.Monitor(), out: c.App.ErrWriter}
	var trailing uint64 // epochs without a page since the last with one
	err = col.Run(ctx, func(e collector.Epoch) error {
		trailing++
		if len(e.Pages) > 0 {
			trailing = 0
		}
		if len(e.Pages) == 0 {
			if err := watch.check(); err != nil {
				return err
			}
		}
		epochs++
		pages += uint64(len(e.Pages))
		if epochs > 1 { // the first holds profile's own start besides (review walk 161)
			long.add(e.Duration, cfg.Epoch)
		}
		for _, p := range e.Pages {
			if written != nil && p < written.Pages() {
				written.Set(p)
			}
		}
		if epochs == quiet && pages == 0 {
			fmt.Fprintln(c.App.ErrWriter, noPagesWarning(t, col.Hook(), time.Duration(quiet)*cfg.Epoch))
		}
		if w != nil {
			if err := w.Append(trace.Epoch{Index: e.Index, Offset: e.Start.Sub(col.Began()), Pages: e.Pages}); err != nil {
				return err
			}
		}
		if line = append(line, e); len(line) == perLine {
			printLine()
		}
		return nil
	})
	printLine() // what --duration or SIGINT cut short
	// A signal before --duration ran out; one during what follows (the
	// memory's scan) does not cut the profile short (review 60).
	cutShort := c.Duration("duration") > 0 && signalled.Err() != nil && time.Since(col.Began()) < c.Duration("duration")
	if errors.Is(err, errMigratedAway) {
		fmt.Fprintln(c.App.ErrWriter, "pagecast: the VM has migrated away (run state postmigrate): its guest runs elsewhere now, and the profile ends")
		err = nil
	}
	if w != nil {
		// The trace is synced and closed before it is said kept: an
		// fsync or close that fails (EIO, or a quota an NFS server
		// reports then) was dropped by the deferred Close, and profile
		// said the trace was written (found by a review walk).
		if cerr := w.Close(); cerr != nil && (err == nil || errors.Is(err, collector.ErrVMGone)) {
			return errors.Join(err, fmt.Errorf("trace %s may lack its last epochs: %w", c.String("out"), cerr))
		}
	}
	if errors.Is(err, collector.ErrVMGone) && w != nil {
		return fmt.Errorf("%w after %d epochs; trace %s keeps them", err, epochs, c.String("out"))
	}
	if err != nil {
		return err
	}
	// Only QEMU's dirty ring stalls so (not a VM paused, and said so by
	// the watch; not pagecast's own monitor's: review 77).
	ring := t.Kind == "qemu" && t.DirtyMode == bpf.ModeRing && (watch.state == "" || watch.state == "running")
	if warn := stoppedWarning(pages, trailing, quiet, cfg.Epoch, col.Hook(), ring && qemu.KVMEmulates()); warn != "" {
		fmt.Fprintln(c.App.ErrWriter, warn)
	}
	st, _ := col.Stats()
	fmt.Fprintf(out, "%d epochs, %d dirty pages in all; %d writes recorded, %d dropped%s", epochs, pages, st.Events, st.DroppedAll(), droppedWhy(st))
	fmt.Fprint(out, long.String())
	if st.Late > 0 {
		fmt.Fprintf(out, "; %d pages recorded an epoch late (their writes were marked after their epoch was read: this host took the CPU away mid-mark)", st.Late)
	}
	if w != nil {
		fmt.Fprintf(out, "; trace %s (%s)", c.String("out"), units.FormatBytes(float64(w.Size())))
	}
	fmt.Fprintln(out)
	if written != nil {
		// A trace says which pages were written, not what with: what
		// the simulation of a migration needs besides.
		if held, err := heldContent(col, t, written, w != nil); err != nil {
			slog.Info("what the guest's memory holds is not known", "err", err)
		} else {
			fmt.Fprintln(out, held)
		}
	}
	if d := c.Duration("duration"); cutShort {
		// Cut short: a job runner's timeout (SIGTERM) looked like a
		// profile run to its end, exit status 0 (walk 59). Without
		// --duration a signal is how a profile ends.
		what := "the epochs closed before"
		if w != nil {
			what = fmt.Sprintf("trace %s keeps the %d epochs closed before", c.String("out"), epochs)
		}
		return fmt.Errorf("stopped by a signal after %v of the %v --duration: %s", time.Since(col.Began()).Round(time.Millisecond), d, what)
	}
	return nil
}

// heldContent says what the memory of t, a QEMU whose guest RAM is shared,
// holds now, in mecom's classes: all of it, and the pages written (at most
// 65 536 of each, evenly spread), with the simulate flags that take them.
// The flags are said only where a trace was written (traced): without
// --out there is no trace to simulate on (walk 67).
func heldContent(col *collector.Collector, t collector.Target, written *bitmap.Bitmap, traced bool) (string, error) {
	mon := col.Monitor()
	if mon == nil {
		return "", errors.New("the VM's monitor is closed")
	}
	mem, unmap, err := qemuguest.ReadRAM(mon, t.PID)
	if err != nil {
		return "", err
	}
	defer unmap()
	ramPages := uint64(len(mem)) / migrator.PageSize
	all := simulate.MeasureMix(mem, int(max(1, ramPages/65536)), nil)
	n := written.Count()
	if n == 0 && !traced {
		return fmt.Sprintf("what the guest's memory holds now: %s", all), nil
	}
	if n == 0 {
		return fmt.Sprintf("what the guest's memory holds now: %s (for pagecast simulate on this trace: --content %s)", all, all), nil
	}
	step, i := max(1, n/65536), uint64(0)
	layout := t.RAMLayout()
	classes := map[uint64]mecom.Class{}
	written.ForEach(func(p uint64) {
		if i++; (i-1)%step != 0 {
			return
		}
		f, ok := p, true
		if t.DirtyMode != collector.DirtyTCG { // an eBPF hook's pages are guest frames
			f, ok = layout.Page(p)
		}
		if ok && f < ramPages {
			classes[f] = mecom.Classify(mem[f*migrator.PageSize : (f+1)*migrator.PageSize])
		}
	})
	held := simulate.ClassMix(classes)
	if !traced {
		return fmt.Sprintf("what the guest's memory holds now: %s; the %d pages written: %s", all, n, held), nil
	}
	return fmt.Sprintf("what the guest's memory holds now: %s; the %d pages written: %s (for pagecast simulate on this trace: --content %s --written-content %s)",
		all, n, held, all, held), nil
}

// noPagesWarning says that hook saw no page dirtied in the first d of
// profiling, which a guest that runs at all does not do, and why that may
// be.
func noPagesWarning(t collector.Target, hook string, d time.Duration) string {
	why := "is the guest paused, or idle?"
	if t.DirtyMode == bpf.ModeBitmap && qemu.KVMEmulates() {
		// Measured on 2026-12-02: a zipf guest dirtying 35 MiB/s by
		// calc-dirty-rate, 0 pages in 29 epochs, 0 tracepoint hits.
		why = "this host's KVM is kvm-pvm's, whose kvm_page_fault tracepoint never fires: profile a VM with a dirty ring (vm run --dirty ring, the default; QEMU -accel kvm,dirty-ring-size=65536)"
	}
	return fmt.Sprintf("pagecast: warning: %s saw no page dirtied in the first %v: %s", hook, d, why)
}

// stoppedWarning warns, at a profile's end, of a guest that wrote pages
// and then none for its last trailing epochs (at least quiet of them),
// profiled by a KVM hook on kvm-pvm (emulates), whose dirty ring stops a
// guest writing fast while QMP still calls it running: the summary said
// nothing of it, the epochs' lines only 0 pages (walk 74). "" otherwise.
func stoppedWarning(pages, trailing, quiet uint64, epoch time.Duration, hook string, emulates bool) string {
	if pages == 0 || trailing < quiet || hook == collector.HookTCG || !emulates {
		return ""
	}
	return fmt.Sprintf("pagecast: warning: the guest wrote nothing in the last %v, having written %d pages before: under kvm-pvm the KVM dirty ring stops a guest writing fast, which QMP still calls running, so it may be stopped rather than idle (see the README)",
		time.Duration(trailing)*epoch, pages)
}

// printEpochs prints a line of consecutive epochs: the distinct pages
// they dirtied, the rate at which they dirtied pages (each epoch's pages,
// summed, over the epochs' time: the rate trace info, simulate and the
// pagecast_dirty_bytes_per_second metric give, which a migration's rounds
// meet), that of the distinct pages, and the 1 MiB regions where most of
// them are.
func printEpochs(out io.Writer, es []collector.Epoch) {
	parts := make([][]uint64, len(es))
	var d time.Duration
	var dirtied int
	for i, e := range es {
		parts[i] = e.Pages
		d += e.Duration
		dirtied += len(e.Pages)
	}
	pages := predictor.Union(parts)
	var hot []string
	for _, r := range collector.Hottest(pages, 1<<20, 3) {
		hot = append(hot, fmt.Sprintf("%#x+1MiB:%d", r.Start, r.Pages))
	}
	which := fmt.Sprintf("epoch %4d", es[0].Index)
	if len(es) > 1 {
		which = fmt.Sprintf("epochs %4d-%-4d", es[0].Index, es[len(es)-1].Index)
	}
	rate := func(pages int) string { return units.FormatBytes(float64(pages)*4096/d.Seconds()) + "/s" }
	fmt.Fprintf(out, "%s %8d pages %12s dirtied (%s distinct)  hottest %s\n", which, len(pages),
		rate(dirtied), rate(len(pages)), strings.Join(hot, " "))
}

func listHooks(out io.Writer) error {
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "HOOK\tMODES\tSTATUS\tWHAT IT SEES")
	seen := map[string]bool{}
	noKVM := errors.Is(qemu.KVMUsable(), fs.ErrNotExist)
	for _, mode := range []string{bpf.ModeRing, bpf.ModeBitmap} {
		for _, s := range bpf.Probe(mode) {
			if seen[s.Hook.Name] {
				continue
			}
			seen[s.Hook.Name] = true
			status := "ok"
			switch {
			case s.Err != nil:
				status = "unavailable: " + s.Err.Error()
			case noKVM:
				// Loaded, but no VM here runs under KVM for it to see
				// (walk 121: "ok" on a host without /dev/kvm).
				status = "loads, but no /dev/kvm here: no KVM VM for it to watch"
			case s.Hook.Name == bitmapHook && qemu.KVMEmulates():
				// It loads, but kvm-pvm never fires it (see noPagesWarning).
				status = "loads, but never fires under this host's kvm-pvm"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", s.Hook.Name, strings.Join(s.Hook.Modes, ","), status, s.Hook.About)
		}
	}
	fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", collector.HookTCG, collector.DirtyTCG, tcgPluginStatus(),
		"every guest store, resolved inside QEMU to its page of guest RAM (QEMU started with -plugin)")
	return tw.Flush()
}

// tcgPluginStatus says whether this machine's QEMU loads the plugin.
func tcgPluginStatus() string {
	if err := tcg.Probe(""); err != nil {
		return "unavailable: " + err.Error()
	}
	return "ok (QEMU loads it)"
}

// droppedGloss says what each of the hooks' drop reasons means.
var droppedGloss = map[string]string{
	"out_of_range": "stores past the pages the hook records: under TCG, the firmware's own memory, written while the guest boots",
	"beyond_ram":   "pages past the guest's RAM",
	"slot_unknown": "writes to memory slots the VM had not told of",
	"contended":    "writes lost to a busy per-CPU map",
	"ringbuf_full": "events lost to a full ring buffer",
}

// longEpochs counts the epochs that ran half as long again as --epoch or
// more: the collector, behind by half an epoch (a busy host, a slow
// disk), goes on from then, the epoch closing late the longer (walk 157:
// --duration 10s made 99 epochs of 100ms, and nothing said why).
type longEpochs struct {
	n       int
	longest time.Duration
	epoch   time.Duration
}

func (l *longEpochs) add(d, epoch time.Duration) {
	if d >= epoch+epoch/2 {
		l.n++
		l.longest, l.epoch = max(l.longest, d), epoch
	}
}

func (l longEpochs) String() string {
	switch l.n {
	case 0:
		return ""
	case 1:
		return fmt.Sprintf("; 1 epoch ran %v against --epoch %v (profile fell behind: a busy host, a slow disk or a blocked output; the trace keeps it as one epoch, at its true start)", l.longest.Round(time.Millisecond), l.epoch)
	}
	return fmt.Sprintf("; %d epochs ran long, the longest %v against --epoch %v (profile fell behind: a busy host, a slow disk or a blocked output; the trace keeps each as one epoch, at its true start)", l.n, l.longest.Round(time.Millisecond), l.epoch)
}

// droppedWhy is " (reason: n, what it means; ...)" for the writes st
// says were dropped, "" for none (a count alone left a user to guess).
func droppedWhy(st collector.Stats) string {
	var parts []string
	for _, reason := range slices.Sorted(maps.Keys(st.Dropped)) {
		if n := st.Dropped[reason]; n > 0 {
			part := fmt.Sprintf("%s: %d", reason, n)
			if g := droppedGloss[reason]; g != "" {
				part += ", " + g
			}
			parts = append(parts, part)
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return " (" + strings.Join(parts, "; ") + ")"
}

// errMigratedAway ends a profile whose VM has migrated away.
var errMigratedAway = errors.New("the VM has migrated away")

// runStateWatch asks the VM's run state, at most once a second, while its
// epochs are empty: a profile of a VM that had migrated away went on
// recording empty epochs until stopped, and one of a paused VM said
// nothing of why its epochs were empty (found by a new-user walk).
type runStateWatch struct {
	mon   qemu.Runner
	out   io.Writer
	last  time.Time
	state string // the last state said
}

// check returns errMigratedAway once the VM is postmigrate, and says once
// of each other state but running that the guest is not running in it.
func (w *runStateWatch) check() error {
	if w.mon == nil || time.Since(w.last) < time.Second {
		return nil
	}
	w.last = time.Now()
	st, err := qemu.RunState(w.mon)
	if err != nil {
		slog.Debug("run state", "err", err)
		return nil
	}
	switch {
	case st == "postmigrate":
		return errMigratedAway
	case st != "running" && st != w.state:
		fmt.Fprintf(w.out, "pagecast: the VM's run state is %s: its guest does not run, and its epochs record nothing until it does\n", st)
	}
	w.state = st
	return nil
}

// bitmapHook is the eBPF hook of a VM whose KVM dirty tracking is a
// bitmap: its write faults, which kvm-pvm never reports.
const bitmapHook = "tracepoint/kvm/kvm_page_fault"

// attachCollector is collector.New, given up once ctx is done (a signal):
// it waited out QMP's 5 s greeting on a busy socket (walk 59), and predict
// serve --collector a monitor's 10 s of silence (walk 136). done says what
// was not, for the error: "profiled", "served".
func attachCollector(ctx context.Context, cfg collector.Config, done string) (*collector.Collector, error) {
	col, ok, err := unlessDone(ctx, func() (*collector.Collector, error) { return collector.New(cfg) }, (*collector.Collector).Close)
	if !ok {
		return nil, errors.New("stopped by a signal while attaching to the VM: nothing was " + done)
	}
	return col, err
}
