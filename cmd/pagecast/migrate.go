package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/digitalocean/go-qemu/qmp"
	"github.com/urfave/cli/v2"

	"github.com/pagecast/pagecast/internal/printable"
	"github.com/pagecast/pagecast/internal/proc"
	"github.com/pagecast/pagecast/internal/units"
	"github.com/pagecast/pagecast/migrationmetrics"
	"github.com/pagecast/pagecast/migrator"
	"github.com/pagecast/pagecast/qemu"
	"github.com/pagecast/pagecast/qemuguest"
	"github.com/pagecast/pagecast/qmpclient"
	"github.com/pagecast/pagecast/simulate"
	"github.com/pagecast/pagecast/trace"
)

func migrateCommand() *cli.Command {
	var modes strings.Builder
	width := len("auto")
	for _, m := range migrator.Modes {
		width = max(width, len(m.Name))
	}
	for _, m := range migrator.Modes {
		fmt.Fprintf(&modes, "\n\t  %-*s %s", width, m.Name, m.Description)
	}
	fmt.Fprintf(&modes, "\n\t  %-*s %s", width, "auto", "watch the VM for --observe epochs, simulate every mode on what was seen (pagecast simulate), take the best by --prefer, and print the prediction against the outcome (pagecast's engine on a QEMU source; on pagecast's own monitor the VM watches itself and weighs every mode)")
	return &cli.Command{
		Name:  "migrate",
		Usage: "live-migrate a running VM to another monitor, with a progress bar and a summary",
		Description: "Drives a migration through the source's QMP socket (migrate-set-parameters, migrate,\n" +
			"query-migrate), as QEMU's tools would: the source monitor sends the guest to --to, where\n" +
			"`pagecast vm run --incoming` or `pagecast receive` waits. If anything fails before the guest\n" +
			"runs there, it keeps running on the source; once it runs there, the destination checks the\n" +
			"memory it started with against the stopped source's checksums, and on a difference stops and\n" +
			"the source runs on.\n" +
			"SIGINT or SIGTERM cancels the migration (migrate_cancel), the guest running on at the source, until\n" +
			"post-copy begins; from then on the guest runs on the destination and a cancel would lose it, so\n" +
			"the first signal only says so and a second stops following (no cancel: the migration goes on).\n" +
			"--timeout cancels it so too once it has run that long without completing (as KubeVirt's\n" +
			"completionTimeoutPerGiB does), --progress-timeout once it has made no progress that long (as its\n" +
			"progressTimeout does), each counted failed, and never in post-copy; in QEMU's post-copy modes\n" +
			"--timeout starts post-copy instead (KubeVirt's allowPostCopy).\n\n" +
			"The source may also be QEMU as shipped (query-version tells). --engine auto (the default) runs\n" +
			"pagecast's engine where it can: the guest RAM in shared memory (a file, share=on; a memfd before QEMU 8.1) and\n" +
			"pagecast's dirty hook (the TCG plugin, or eBPF on KVM), the destination a pagecast receiver\n" +
			"(vm run --monitor qemu --incoming, or pagecast receive beside a QEMU waiting with -incoming\n" +
			"defer); every mode without post-copy runs so. Otherwise, or with --engine qemu, QEMU moves the\n" +
			"RAM with its own migration to a QEMU started with -incoming, and each mode becomes QEMU's\n" +
			"capabilities and parameters (no x-pagecast-* member is sent):\n" +
			"\t  precopy    plain pre-copy, no capability\n" +
			"\t  mecom      xbzrle, its cache a quarter of guest RAM (a power of two, 64 MiB to 1 GiB, at most RAM)\n" +
			"\t  throttle   auto-converge, cpu-throttle-initial/-increment set to reach 99% by round 4\n" +
			"\t             (the throttle policy's target round), cpu-throttle-tailslow off\n" +
			"\t  tsmc       postcopy-ram on both ends, migrate-start-postcopy after the first full pass\n" +
			"\t             (dirty-sync-count 2); needs --dest-qmp. Once switched, the guest runs on the\n" +
			"\t             destination: a failure then cannot fall back to the source\n" +
			"\t  precopy+postcopy  postcopy-ram on both ends, migrate-start-postcopy once a pass leaves more\n" +
			"\t             than half of what the pass before it left, or past --max-rounds; needs --dest-qmp\n" +
			"On QEMU's migration predictive, MODE+mecom and MODE+postcopy other than precopy+postcopy are refused.\n" +
			"QEMU has no round cap, so --max-rounds forces the switch-over there as pagecast's engine does:\n" +
			"past that many dirty syncs QEMU's downtime-limit is raised to its largest and QEMU stops the\n" +
			"guest and sends the rest (the summary says so; precopy+postcopy switches to post-copy instead).\n" +
			"The round shown is QEMU's dirty-sync-count.\n\n" +
			"Example: pagecast migrate --qmp unix:/tmp/src.sock --to tcp:127.0.0.1:4444 --mode predictive --bandwidth 32MiB/s\n" +
			"Example: pagecast migrate --qmp unix:/tmp/qemu-src.sock --dest-qmp unix:/tmp/qemu-dst.sock --to tcp:127.0.0.1:4444 --mode tsmc",
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "qmp", Required: true, Usage: "the source's QMP socket, unix:PATH"},
			&cli.StringFlag{Name: "to", Required: true, Usage: "destination, tcp:HOST:PORT (pagecast vm run --incoming or pagecast receive for pagecast's engine; QEMU -incoming for QEMU's)"},
			&cli.StringFlag{Name: "dest-qmp", Usage: "the destination's QMP socket, unix:PATH: needed for tsmc and precopy+postcopy from QEMU (post-copy is enabled on both ends); with it, the summary also has the guest's own pause (STOP to RESUME), from either monitor, and from QEMU a destination unlike the source (memory, vCPUs, memory backends, PCI devices, disk files on this host) is refused before anything is sent"},
			&cli.StringFlag{Name: "mode", Value: migrator.ModePrecopy, Usage: "migration mode, one of:" + modes.String() + "\n\t ", DefaultText: migrator.ModePrecopy}, // the default on a line of its own, not at the end of auto's (walk 106)
			&cli.StringFlag{Name: "prefer", Value: "time", Usage: "--mode auto: optimise total time, bytes or downtime, the downtime limit a hard bound"},
			&cli.IntFlag{Name: "observe", Value: migrator.DefaultObserve, Usage: "--mode auto: 100 ms epochs to watch the VM before choosing (1 to 600); left to its default, a guest still writing new pages as the watch ends (its prediction would fall short) is watched again, five times as long, on either monitor; on a QEMU source it then throttles the guest 50%, 90% and 99% for 0.5 s each, to measure what it still writes throttled (a Linux guest writes far more than its CPU share), unless throttle cannot run here"},
			&cli.StringFlag{Name: "bandwidth", Usage: "link cap, e.g. 100MiB/s or 1Gbit/s (K, M, G bytes are binary, KB, MB, GB too, as QEMU reads them; bits decimal) (default: none); --mode auto needs it, except from a QEMU source to a destination on this host"},
			&cli.DurationFlag{Name: "downtime-limit", Value: migrator.DefaultDowntimeLimit, Usage: "longest pause of the guest at switch-over"},
			&cli.IntFlag{Name: "max-rounds", Value: migrator.DefaultMaxRounds, Usage: "live rounds before the stop-and-copy is forced (on QEMU: by raising its downtime-limit; 0: never, QEMU's migration only: pagecast's engine always has a cap)"},
			&cli.DurationFlag{Name: "timeout", Usage: "cancel the migration (migrate_cancel: the guest runs on at the source, exit 1) if it has not completed this long after it began, e.g. 10m (KubeVirt's completionTimeoutPerGiB times the guest's GiB; libvirt's virsh migrate --timeout forces the switch-over instead, as --max-rounds does); never once post-copy has begun or the destination runs the guest; in QEMU's post-copy modes (tsmc, precopy+postcopy), and MODE+postcopy on pagecast's own monitor, reached in pre-copy, it starts post-copy instead (migrate-start-postcopy), as KubeVirt does with allowPostCopy", DefaultText: "none"},
			&cli.DurationFlag{Name: "progress-timeout", Usage: "cancel the migration, counted failed, if it has made no progress this long: the data left to send has not fallen from one poll to the next (KubeVirt's progressTimeout: a stalled migration, not one that does not converge, which --timeout and --max-rounds bound), e.g. 2m; as --timeout, never once post-copy has begun or the destination runs the guest", DefaultText: "none"},
			&cli.StringFlag{Name: "profile", Usage: "predictive: a trace of this VM (pagecast profile --out) to warm the predictor"},
			&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "no progress bar"},
			&cli.BoolFlag{Name: "json", Usage: "print how the migration ended as one JSON object on stdout, whether it completed or not (status, error, guest: where the guest is now, engine, mode, downtime-limit, guest-paused, qemu, query-migrate's last reply; see README, \"For scripts\"), instead of the summary; the rest goes to stderr"},
			&cli.StringFlag{Name: "engine", Value: "auto", Usage: "for a QEMU source: pagecast (pagecast's engine: every mode without post-copy, so not tsmc, predictive+tsmc or MODE+postcopy; needs the guest RAM in shared memory and pagecast's dirty hook), qemu (QEMU's own migration), or auto: pagecast where it can, else QEMU's (for want of pagecast's, not under TCG before QEMU 9.0, whose own migration loses writes there: refused; the post-copy modes, QEMU's only on QEMU, go there with a warning)"},
			&cli.StringFlag{Name: "control", Usage: "serve QMP on unix:PATH while the migration runs, to change its link cap or downtime limit midway (migrate-set-parameters max-bandwidth, downtime-limit: what virsh migrate-setspeed and migrate-setmaxdowntime send) and for query-migrate, query-migrate-parameters and migrate_cancel; migrate holds --qmp's socket, QEMU's one client, until it ends"},
			&cli.StringFlag{Name: "tls-cert", Usage: "pagecast's engine on a QEMU source: mutual TLS, this end's certificate (PEM)"},
			&cli.StringFlag{Name: "tls-key", Usage: "pagecast's engine on a QEMU source: mutual TLS, this end's private key (PEM)"},
			&cli.StringFlag{Name: "tls-ca", Usage: "pagecast's engine on a QEMU source: mutual TLS, the CA that signed the destination's certificate (PEM)"},
		}, migrationMetricsFlags()...),
		Action: holdsOnClosedOutput(runMigrate),
	}
}

func runMigrate(c *cli.Context) error {
	out := migrationOutcome{Source: c.String("qmp"), Destination: c.String("to")}
	err := migrate(c, &out)
	if err != nil && out.linger != nil && c.Duration("metrics-linger") > 0 && c.Context.Err() == nil {
		// A failure is said before the metrics linger (a minute by
		// default): it looked like a hang.
		fmt.Fprintf(c.App.ErrWriter, "pagecast: %s\n", oneLine(err))
		err = reported{err}
	}
	if c.Bool("json") {
		if werr := out.write(c.App.Writer, err); werr != nil && err == nil && !errors.Is(werr, syscall.EPIPE) {
			// Where the guest went is said all the same: a script
			// told only of the write took the migration for failed
			// (walk 72, stdout on a full disk).
			err = fmt.Errorf("--json: %w; the migration's status is %s, the guest on the %s", werr, out.Status, out.Guest)
		}
	} else {
		out.settle(err)
		sayOutcome(c, fmt.Sprintf("the migration's status is %s, the guest on the %s", out.Status, out.Guest))
	}
	if out.linger != nil {
		// A signal ends the wait, not the command: it killed a migrate
		// whose guest had moved, exit 143 after "completed" (walk 65).
		ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
		out.linger(ctx)
		stop()
	}
	return err
}

// migrate runs the migration and records in out what --json prints.
func migrate(c *cli.Context, out *migrationOutcome) (err error) {
	if d := c.Duration("downtime-limit"); d <= 0 {
		return fmt.Errorf("--downtime-limit %v: want a positive duration, e.g. 300ms", d)
	}
	// query-migrate's downtime-limit is whole milliseconds, at most
	// 2000 s (QEMU's bound, which pagecast's monitor keeps too).
	if d := c.Duration("downtime-limit"); d < time.Millisecond || d > 2000*time.Second {
		return fmt.Errorf("--downtime-limit %v: want 1ms to 2000s (migrate-set-parameters' downtime-limit is whole milliseconds, at most 2 000 000)", d)
	}
	if n := c.Int("max-rounds"); n < 0 || n > migrator.MaxRoundsLimit {
		return fmt.Errorf("--max-rounds %d: want 0 (no cap, QEMU's migration only) to %d", n, migrator.MaxRoundsLimit)
	}
	if d := c.Duration("metrics-linger"); d < 0 {
		return fmt.Errorf("--metrics-linger %v: want 0 (stop serving at once) or more", d)
	}
	for _, f := range []string{"timeout", "progress-timeout"} {
		if d := c.Duration(f); d < 0 || c.IsSet(f) && d == 0 {
			return fmt.Errorf("--%s %v: want a positive duration, e.g. 10m (left out: none)", f, d)
		}
	}
	if c.String("mode") != modeAuto {
		for _, f := range []string{"prefer", "observe"} {
			if c.IsSet(f) {
				return fmt.Errorf("--%s is for --mode auto", f)
			}
		}
	}
	path, ok := strings.CutPrefix(c.String("qmp"), "unix:")
	if !ok {
		return fmt.Errorf("--qmp %q: want unix:PATH", c.String("qmp"))
	}
	destPath, ok := strings.CutPrefix(c.String("dest-qmp"), "unix:")
	if !ok && c.String("dest-qmp") != "" {
		return fmt.Errorf("--dest-qmp %q: want unix:PATH", c.String("dest-qmp"))
	}
	if destPath != "" && filepath.Clean(destPath) == filepath.Clean(path) {
		return fmt.Errorf("--dest-qmp %s is --qmp's socket, the source's: give the destination's", c.String("dest-qmp"))
	}
	if _, err := migrator.ParseURI(c.String("to")); err != nil {
		return fmt.Errorf("--to: %w", err)
	}
	p := migrator.Params{DowntimeLimit: c.Duration("downtime-limit"), Mode: c.String("mode"),
		MaxRounds: c.Int("max-rounds"), Profile: c.String("profile")}
	if s := c.String("bandwidth"); s != "" {
		bw, err := linkBandwidth(s)
		if err != nil {
			return err
		}
		p.MaxBandwidth = bw
	}
	if err := migrator.CheckLink(p.MaxBandwidth, p.DowntimeLimit); err != nil {
		if _, perr := strconv.ParseFloat(c.String("bandwidth"), 64); perr == nil {
			return fmt.Errorf("--bandwidth %s: %w (a rate without a unit is in bytes a second: say 32MiB/s or 1Gbit/s)", c.String("bandwidth"), err)
		}
		return fmt.Errorf("--bandwidth, --downtime-limit: %w", err)
	}
	switch e := c.String("engine"); e {
	case "auto", enginePagecast, engineQEMU:
	default:
		return fmt.Errorf("--engine %q: want auto, pagecast or qemu", e)
	}
	if c.IsSet("metrics-linger") && !c.IsSet("metrics") {
		return errors.New("--metrics-linger is how long --metrics serves after the end: give --metrics too, or leave it out")
	}
	if p.Mode == modeAuto && c.String("engine") == engineQEMU {
		return errors.New("--mode auto weighs the modes of pagecast's engine and runs it; --engine qemu asks for QEMU's own migration: give one or the other")
	}
	if p.Mode == modeAuto {
		// What auto is told is checked before it watches the guest.
		if _, err := simulate.CheckPrefer(c.String("prefer")); err != nil {
			return fmt.Errorf("--prefer: %w", err)
		}
		if n := c.Int("observe"); n < 1 {
			return fmt.Errorf("--observe %d: auto needs at least one epoch", n)
		} else if n > migrator.MaxObserve {
			// Walk 128: "watches its guest for 2777h46m40s", then the
			// VM's refusal of x-pagecast-observe.
			return fmt.Errorf("--observe %d: auto watches at most %d epochs of 100 ms (%v)", n, migrator.MaxObserve, time.Duration(migrator.MaxObserve)*autoEpoch)
		}
	} else if err := migrator.CheckMode(p.Mode); err != nil {
		return fmt.Errorf("--mode: %w; or auto", err)
	}
	// What the command line asks, for --json's object should the source be
	// refused before its engine is known (walk 154: a --qmp socket that
	// was not there gave none of them); the engine's setup says them again.
	out.DowntimeLimit = p.DowntimeLimit.Milliseconds()
	if p.Mode != modeAuto {
		out.Mode = p.Mode
	}
	if e := c.String("engine"); e != "auto" {
		out.Engine = e
	}
	if p.Profile != "" && p.Mode != modeAuto && !strings.Contains(p.Mode, migrator.ModePredictive) {
		return fmt.Errorf("--profile warms the predictor, which --mode %s does not use: give a predictive mode, or leave --profile out", p.Mode)
	}
	if p.Profile != "" {
		// The VM's engine warns in its own log; say it here too.
		meta, epochs, damage, err := trace.ReadFile(p.Profile)
		switch {
		case err != nil:
			// The VM reads it and refuses it with its reason; say it first.
			return fmt.Errorf("--profile: %w", err)
		case len(epochs) == 0:
			return fmt.Errorf("--profile %s: no intact epoch to learn from (%s; see pagecast trace info)", p.Profile, stretches(len(damage)))
		case len(damage) > 0:
			fmt.Fprintf(c.App.ErrWriter, "pagecast: warning: --profile %s is damaged: the predictor learns from its %d intact epochs only (%s, the first %s; see pagecast trace info)\n",
				p.Profile, len(epochs), stretches(len(damage)), damage[0])
		}
		if !migrator.ProfileFits(meta.Epoch, migrator.DefaultEpoch) {
			fmt.Fprintf(c.App.ErrWriter, "pagecast: warning: --profile %s is in epochs of %v, the migration in %v: %s\n",
				p.Profile, meta.Epoch, migrator.DefaultEpoch, migrator.ProfileMisfit)
		}
		if !c.Bool("quiet") {
			// Said, with what it was recorded from and when (walk 135: a
			// profile of another QEMU, 20 minutes old, was taken
			// without a word).
			of := ""
			if meta.Source != "" {
				of = " of " + printable.Line(meta.Source)
			}
			if !meta.Start.IsZero() {
				of += ", recorded " + meta.Start.UTC().Format("2006-01-02 15:04:05 UTC")
			}
			n := fmt.Sprintf("%d epochs", len(epochs))
			if len(epochs) == 1 {
				n = "1 epoch"
			}
			fmt.Fprintf(c.App.ErrWriter, "pagecast: --profile %s%s: the predictor learns first from its %s of %v\n",
				p.Profile, of, n, meta.Epoch)
		}
	}
	if p.Mode == modeAuto && p.MaxBandwidth == 0 && !localDestination(c.String("to")) {
		return errors.New("--mode auto needs --bandwidth, the link's rate, to predict each mode (without one only where the destination is this host, whose pace auto measures)")
	}
	// A signal before the migration starts ends migrate with a word,
	// having set back what it set (setupSignals). Deferred first, so
	// that it runs last.
	early := catchSetup()
	defer early.stop()
	defer func() {
		if sig := early.caught(); sig != nil && !out.began {
			err = interruptedSetup(sig)
		}
	}()
	var dstEarly qmp.Monitor // the destination's QMP, dialled for auto's check and kept for a QEMU source's
	defer func() {
		if dstEarly != nil {
			dstEarly.Disconnect()
		}
	}()
	if p.Mode == modeAuto {
		// The probe below would end a QEMU that listens with its own
		// -incoming: it exits on a stream that is not QEMU's. One of
		// this host's is seen without --dest-qmp too (walk 86).
		at := ""
		if destPath == "" && localListener(c.String("to")) != 0 {
			at = c.String("to")
		} else if d, err := dialQMP(destPath); destPath != "" && err == nil {
			dstEarly = d
			early.closes(d)
			at = destListening(d)
		}
		if at != "" {
			// Not "give a mode": from pagecast's own monitor no mode
			// goes there (review 88).
			return fmt.Errorf("--mode auto runs pagecast's engine, and the destination QEMU listens on %s with its own -incoming, which takes QEMU's migration only: "+
				"have the destination wait for pagecast's engine (vm run --incoming without --engine qemu, or pagecast receive), or, from a QEMU source, give a mode QEMU's migration runs (%s)", at, qemuModes())
		}
	}
	if p.Mode == modeAuto {
		// Auto watches the guest for seconds before it dials: a
		// destination nobody listens on is found first. A receiver takes
		// a connection closed unsaid for the probe it is.
		addr, _ := migrator.ParseURI(c.String("to"))
		conn, derr := net.DialTimeout("tcp", addr, 5*time.Second)
		if derr != nil {
			// A source migrated away already is the first thing to say:
			// its destination is often gone too (walk 141: "nothing to
			// migrate to" after the source's guest had left).
			if mon, err := dialQMP(path); err == nil {
				left := leftOrComing(mon)
				mon.Disconnect()
				if left != nil {
					return left
				}
			}
			return fmt.Errorf("--to %s: %w (nothing to migrate to: start the destination first)", c.String("to"), derr)
		}
		conn.Close()
		defer func() {
			// A QEMU listening with its own -incoming exits on that
			// connection, and then refuses the migration's own.
			if err == nil || !strings.Contains(err.Error(), "connect to the destination") || !strings.Contains(err.Error(), "connection refused") {
				return
			}
			gone := fmt.Sprintf("something listened on %s when auto checked, before it watched the guest, and is gone", c.String("to"))
			if c.IsSet("dest-qmp") {
				// Not the advice to give --dest-qmp, given (walk 130:
				// a destination killed during auto's watch).
				err = fmt.Errorf("%w (%s: the destination exited or stopped listening while auto watched the guest and weighed the modes)", err, gone)
				return
			}
			err = fmt.Errorf("%w (%s: the destination exited or stopped listening meanwhile, or it is a QEMU listening with its own -incoming, which exits on a connection that is not QEMU's migration; "+
				"from a QEMU source, give --dest-qmp, so that auto can tell such a destination and refuse before it connects, or a mode, which QEMU's engine runs there)", err, gone)
		}()
	}
	ctl, err := listenControl(c.String("control"))
	if err != nil {
		return err
	}
	if ctl != nil {
		defer ctl.Close() // the socket goes with migrate, served or not
	}
	mon, err := dialQMP(path)
	if err != nil {
		return fmt.Errorf("source: %w", err)
	}
	defer mon.Disconnect()
	early.closes(mon)
	metrics, lingerMetrics, err := migrationMetrics(c, path, mon)
	if err != nil {
		return err
	}
	if metrics != nil {
		out.linger = lingerMetrics // runMigrate lingers once it has said how it ended
	}
	kind, err := migrator.MonitorKind(mon)
	if err != nil {
		return fmt.Errorf("source: %w", err)
	}
	var plan *migrator.QEMUPlan
	srcPID := 0         // the source QEMU's process, where known
	destPID := 0        // the destination QEMU's process, where it is one of this host's
	waited := false     // WaitQEMU has the plan: it gives the source back its settings once the migration ends
	var dst qmp.Monitor // the destination's monitor, given --dest-qmp
	// takeDest takes the destination's monitor, where --dest-qmp gives
	// one: the one auto's check dialled, or a new one, closed with it by
	// dstEarly's deferred close.
	takeDest := func() error {
		if dstEarly == nil && destPath != "" {
			d, err := dialQMP(destPath)
			if err != nil {
				return fmt.Errorf("destination (--dest-qmp): %w", err)
			}
			early.closes(d)
			dstEarly = d
		}
		dst = dstEarly
		return nil
	}
	switch kind {
	case migrator.MonitorPagecast:
		if at := localListener(c.String("to")); at != 0 {
			// Sent, the QEMU exited on pagecast's stream (review 88).
			return fmt.Errorf("the destination QEMU (pid %d) listens on %s with its own -incoming, which takes QEMU's migration only, and pagecast's own monitor migrates with pagecast's engine: "+
				"have the destination wait for it (pagecast vm run --incoming, without --engine qemu)", at, c.String("to"))
		}
		out.Engine, out.Mode = enginePagecast, p.Mode
		out.DowntimeLimit = p.DowntimeLimit.Milliseconds()
		if tlsSet(c) {
			return errors.New("--tls-cert, --tls-key, --tls-ca: pagecast's own monitor makes the connection itself: give them to its pagecast vm run")
		}
		if p.Mode == modeAuto && p.MaxBandwidth == 0 {
			return errors.New("--mode auto on pagecast's own monitor needs --bandwidth, the link's rate, to predict each mode (only from a QEMU source does auto measure the pace of a destination on this host)")
		}
		if p.Mode == modeAuto {
			// vm run watches its guest and chooses when migrate comes.
			// --observe only where given: left out, the VM may watch a
			// guest still writing new pages again (rewatch).
			p.Prefer = c.String("prefer")
			again := fmt.Sprintf(" (%v more if it is still writing new pages then)", rewatchFactor*time.Duration(c.Int("observe"))*autoEpoch)
			if c.IsSet("observe") {
				p.Observe, again = c.Int("observe"), ""
			}
			fmt.Fprintf(c.App.ErrWriter, "pagecast: auto: the VM watches its guest for %v%s before it chooses …\n", time.Duration(c.Int("observe"))*autoEpoch, again)
		}
		if c.String("engine") == engineQEMU {
			return errors.New("--engine qemu is for a QEMU source: pagecast's own monitor migrates with pagecast's engine only")
		}
		// The destination's monitor, where given, is for the guest's
		// pause (STOP to RESUME) in the summary, as from QEMU: walk 139
		// had it ignored, and the pause seen nowhere but in events.
		if err := takeDest(); err != nil {
			return err
		}
		if p.MaxRounds == 0 {
			return errNoRoundCap
		}
		// Asked before the parameters go: a second migrate, refused by
		// the monitor only at migrate, had set the running migration's
		// cap to its own (none: the 2 MiB/s migration went on uncapped;
		// found by a review walk).
		if i, err := migrator.Query(mon); err == nil && i.Status != "" && i.Status != migrator.StatusNone && !migrationmetrics.Finished(i.Status) {
			return fmt.Errorf("migrate: this VM is migrating already (query-migrate: %s): one migration of a guest at a time; wait for it to end, or cancel it (migrate_cancel)", i.Status)
		}
		// Refused here too, as the VM would at migrate, before its
		// parameters are set, and typed, so that --json says where the
		// guest is (it said "source").
		if err := leftOrComing(mon); err != nil {
			return err
		}
		if err := unanswered(mon, nil); err != nil {
			return err
		}
		restore, err := migrator.SavePagecastParameters(mon)
		if err != nil {
			return err
		}
		if err := migrator.SetPagecastParameters(mon, p); err != nil {
			return err
		}
		// Put back once the migration has ended: those a QMP client had
		// set were left as this one's (walk 154). Not while it runs on
		// (followed no further): a cap put back would apply to it.
		defer func() {
			if i, err := migrator.Query(mon); err == nil && (i.Status == "" || migrationmetrics.Finished(i.Status)) {
				if err := restore(); err != nil {
					slog.Warn("could not put the VM's migration parameters back as they were", "err", err)
				}
			}
		}()
	default:
		// Marked from here to the end, with either engine: a vm run
		// stopped meanwhile waits for the migration (it ended the guest
		// while pagecast's engine set up; a CI run).
		srcPID, _ = qemuguest.ProcessOf(mon) // 0 where not seen from here
		if err := abandonedHere(mon, srcPID); err != nil {
			return err
		}
		release, err := qemuguest.HoldMigration(mon)
		if err != nil {
			return err
		}
		defer release()
		if err := takeDest(); err != nil {
			return err
		}
		if dst != nil && sameQEMU(mon, dst) {
			// Post-copy went on for the source alone and the real
			// destination died; pagecast's engine measured the guest's
			// pause on the source (found by a walk).
			return fmt.Errorf("--dest-qmp %s is a QMP socket of the source's own QEMU (the same vCPU threads as --qmp's): give the destination QEMU's", c.String("dest-qmp"))
		}
		if dst != nil {
			destPID = destinationPID(dst)
			// Refused at once, not after auto's watch (pagecast's
			// engine) or by the destination QEMU exiting (QEMU's).
			if err := migrator.SameMemorySize(mon, dst); err != nil {
				return err
			}
			if err := migrator.SameVCPUs(mon, dst); err != nil {
				return err
			}
			if err := migrator.SameRAMBlocks(mon, dst); err != nil {
				return err
			}
			if err := migrator.SameDevices(mon, dst); err != nil {
				return err
			}
			if err := migrator.KVMNotToTCG(mon, dst); err != nil {
				return err
			}
			// A file's name means a file of this host only where both
			// QEMUs run here.
			if err := migrator.SameStorage(mon, dst, srcPID, destPID); err != nil {
				return err
			}
		}
		if err := unanswered(mon, dst); err != nil {
			return err
		}
		// Who holds --to's port on this host, read once: each look scans
		// every process's sockets.
		toPID, toComm := listenerOf(c.String("to"))
		listens := destListening(dst)
		if dst == nil && qemuIncoming(toPID, toComm, c.String("to")) != 0 {
			// A QEMU of this host listens on --to's port itself: without
			// --dest-qmp, pagecast's engine went there and ended it
			// ("Not a migration stream"; walk 86).
			listens = c.String("to")
		}
		src, engine, why, err := chooseEngine(c.String("engine"), mon, p.Mode, listens, c.String("to"))
		if lost := unanswered(mon, dst); lost != nil {
			// Not "pagecast's engine cannot run on it" (walk 108).
			if src != nil {
				src.Close()
			}
			return lost
		}
		if err != nil {
			return err
		}
		if p.Mode == modeAuto && src == nil {
			return fmt.Errorf("--mode auto runs pagecast's engine, which cannot move this VM (%s)", why)
		}
		if src == nil && tlsSet(c) {
			return fmt.Errorf("--tls-cert, --tls-key, --tls-ca: they are for pagecast's engine, and QEMU's own migration (engine %s: %s) would go in plain TCP", engine, why)
		}
		// The TLS files are read once the source is known to be a QEMU
		// pagecast's engine moves, before a word of the migration (walk
		// 160: a missing --tls-key was said after "engine: pagecast" and,
		// under auto, after seconds of watching the guest); a source of
		// pagecast's own monitor is refused them above.
		clientTLS, err := tlsConfig(c, false)
		if err != nil {
			if src != nil {
				src.Close()
			}
			return err
		}
		tlsSaid := ""
		if clientTLS != nil {
			tlsSaid = "; over mutual TLS to the destination (it must show a certificate signed by --tls-ca)"
		}
		fmt.Fprintf(c.App.ErrWriter, "pagecast: source is QEMU; engine: %s (%s)%s\n", engine, why, tlsSaid)
		out.Engine, out.Mode = engine, p.Mode
		out.DowntimeLimit = p.DowntimeLimit.Milliseconds()
		if src != nil {
			defer src.Close()
			if p.MaxRounds == 0 {
				return errNoRoundCap
			}
			if err := answerFreely(mon, dst); err != nil {
				return err
			}
			early.hold()
			if sig := early.caught(); sig != nil {
				return interruptedSetup(sig)
			}
			early.stop() // migrateWithEngine takes them
			return migrateWithEngine(c, src, p, clientTLS, metrics, mon, dst, ctl, out)
		}
		// QEMU's own migration takes a paused guest (it stays paused),
		// not one that left or has yet to come: say what those states
		// mean, as pagecast's engine does, not QEMU's "Can't migrate the
		// vm that was paused due to previous migration" (found by a walk).
		if err := leftOrComing(mon); err != nil {
			return err
		}
		if dst != nil && destListening(dst) == "" {
			if st, err := qemu.RunState(dst); err == nil && st == "inmigrate" {
				if toPID != 0 && !strings.Contains(toComm, "qemu") {
					// The port is another process's, a pagecast receiver's
					// as a rule: migrate-incoming there failed "Address
					// already in use" (walk 86).
					holder, what := fmt.Sprintf("%s (pid %d)", toComm, toPID), ""
					if toComm == "pagecast" {
						// After the port, not between it and its verb
						// (walk 99: the sentence read garbled).
						what = ": a pagecast receiver (vm run --incoming, or pagecast receive), which takes pagecast's engine only"
					}
					return fmt.Errorf("the destination QEMU (--dest-qmp) waits with -incoming defer, and %s holds %s%s; "+
						"QEMU's own migration (engine qemu: %s) needs the destination QEMU listening there itself: stop that and start the QEMU with -incoming %s "+
						"(pagecast's guest: pagecast vm run --monitor qemu --engine qemu --incoming %s), or migrate with pagecast's engine (--engine pagecast: every mode without post-copy, so not tsmc, predictive+tsmc or MODE+postcopy)",
						holder, c.String("to"), what, why, c.String("to"), c.String("to"))
				}
				// QEMU's bare "Failed to connect … Connection refused"
				// left an operator to guess (found by a walk).
				return fmt.Errorf("the destination QEMU (--dest-qmp) waits with -incoming defer and listens nowhere yet: "+
					"QEMU's migration needs it listening; run QMP migrate-incoming with \"uri\": %q on it first (a pagecast receive in front of it takes pagecast's engine: --engine pagecast)", c.String("to"))
			}
		}
		if toComm == "pagecast" {
			// QEMU's stream into a pagecast receiver: refused there at
			// once, and said after by how little QEMU had sent, which a
			// fast loopback made over 1 MiB (a CI run); refused here
			// before a byte goes.
			instead := "or migrate with pagecast's engine (--engine pagecast: every mode without post-copy, so not tsmc, predictive+tsmc or MODE+postcopy)"
			if c.String("engine") == "auto" && strings.HasPrefix(why, autoCannot) {
				// auto took QEMU's because pagecast's cannot run here
				// (a review walk: told to take it all the same).
				instead = "pagecast's engine, which it takes, cannot run on this source"
			}
			return fmt.Errorf("%s is held by pagecast (pid %d), a pagecast receiver (vm run --incoming, or pagecast receive), which takes pagecast's engine only, "+
				"and QEMU's migration (engine %s: %s) needs a QEMU waiting with its own -incoming there (pagecast's guest: pagecast vm run --monitor qemu --engine qemu --incoming %s); %s",
				c.String("to"), toPID, engine, why, c.String("to"), instead)
		}
		early.hold() // what SetupQEMU sets is set back
		if sig := early.caught(); sig != nil {
			return interruptedSetup(sig)
		}
		pl, err := migrator.SetupQEMU(mon, dst, p)
		if err != nil {
			if lost := unanswered(mon, dst); lost != nil {
				return lost // the cause first, and whose (walk 110)
			}
			return fmt.Errorf("QEMU source: %w", err)
		}
		for _, n := range pl.Notes {
			fmt.Fprintf(c.App.ErrWriter, "pagecast: warning: %s\n", n)
		}
		if dst != nil {
			pl.DestAnswers = func() error { return destAnswers(dst, destAnswerWait) }
		}
		plan = &pl
		out.qemuPlan(plan)
		// A migration QEMU refuses (a migration blocker) gives the
		// source back its settings too; WaitQEMU does once one ends.
		defer func() {
			if !waited {
				plan.Restore(mon)
				if dst != nil {
					// Still waiting, no stream came: QEMU refused migrate
					// (a blocker), or the pause could not be watched
					// (review 63); left where one did (review 64).
					if err := plan.RestoreDest(dst); err != nil {
						fmt.Fprintf(c.App.ErrWriter, "pagecast: warning: %v; once that migration has ended, send it %s\n", err, plan.DestRestoreHint())
					}
				}
			}
		}()
	}
	if metrics != nil {
		engine := migrationmetrics.EnginePagecast // pagecast's monitor runs pagecast's engine
		if plan != nil {
			engine = migrationmetrics.EngineQEMU
		}
		metrics.Begin(time.Now(), engine, p.Mode, p.MaxBandwidth)
	}
	// With the destination's monitor, the guest's own pause: QEMU counts
	// downtime only until its last bytes are in its socket.
	var pause *migrator.PauseWatch
	if dst != nil {
		if pause, err = migrator.WatchPause(mon, dst); err != nil {
			return err
		}
		defer pause.Close()
	}
	// From here an interrupt cancels the migration. One while pagecast's
	// monitor watches its guest for auto (migrate returns once it has
	// chosen, seconds later) sends migrate_cancel on a second connection,
	// which ends the watch before anything is migrated.
	early.hold()
	ctx, interrupts := watchInterrupts(c.Context, c.App.ErrWriter)
	defer interrupts.stop()
	early.stop()
	if sig := early.caught(); sig != nil {
		return interruptedSetup(sig)
	}
	var watching func() bool // reports whether an interrupt came while auto watched
	if kind == migrator.MonitorPagecast && p.Mode == modeAuto {
		watching = interrupts.whileWatching(path)
	}
	// What becomes of the guest if QEMU's migration fails: it goes on as
	// it was, running or paused.
	kept := "the guest keeps running on the source"
	lastSource := "running" // the source's run state when the migration began (QEMU's engine, given --dest-qmp: settleDestination)
	if plan != nil {
		switch st, err := qemu.RunState(mon); {
		case err != nil:
		case st == "paused":
			kept, lastSource = "the guest was paused before the migration and stays paused on the source", st
		case st == "prelaunch":
			// Started with -S and never resumed (walk 56: it said the
			// guest "keeps running").
			kept, lastSource = "the guest had not started on the source (prelaunch: QEMU's -S, no cont yet) and stays so", st
		default:
			lastSource = st
		}
		if dst == nil { // with dst, found with the checks above
			destPID = localListener(c.String("to"))
		}
	}
	if err := answerFreely(mon, dst); err != nil {
		return err
	}
	stopSaying := func() {}
	if watching != nil {
		// migrate returns once the VM has chosen: on a 1 GiB guest, a
		// minute and more of saying nothing (walk 128).
		stopSaying = sayEvery(c.App.ErrWriter, autoStillEvery, "pagecast: auto: the VM is still watching its guest or weighing the modes, %v so far …\n")
	}
	err = migrator.Migrate(mon, c.String("to"))
	stopSaying()
	if watching != nil && watching() {
		if err != nil {
			err = errors.New("interrupted while auto watched the guest and weighed the modes: nothing was migrated, the guest runs on at the source")
		} else {
			interrupts.cancel() // it had chosen: the migration is cancelled at once
		}
	}
	if err != nil {
		if metrics != nil {
			metrics.Observe(migrator.Info{Status: migrator.StatusFailed, ErrorDesc: err.Error()})
		}
		return err
	}
	out.began = true
	control := serveControl(ctl, monitorControl(mon, plan, metrics), slog.New(engineLog{slog.Default().Handler()}), c.App.ErrWriter)
	defer control.Stop()
	if plan != nil && plan.Postcopy {
		interrupts.postcopy = func(why string) bool {
			if plan.Switched != "" {
				return false // WaitQEMU has sent migrate-start-postcopy already
			}
			plan.SwitchNow = why
			return true
		}
	}
	interrupts.follow()
	if d := c.Duration("timeout"); d > 0 {
		t := time.AfterFunc(d, func() { interrupts.expire("--timeout", timedOut(d)) })
		defer t.Stop()
	}
	var auto *migrator.AutoChoice
	if kind == migrator.MonitorPagecast && p.Mode == modeAuto {
		// migrate returned once the choice was made: query-migrate has it.
		if i, err := migrator.Query(mon); err == nil && i.Pagecast != nil && i.Pagecast.Auto != nil {
			auto = i.Pagecast.Auto
			writeAutoChoice(textOut(c), auto)
		}
	}
	if mode := p.Mode; kind == migrator.MonitorPagecast {
		if auto != nil {
			mode = auto.Mode
		}
		if migrator.StartsPostcopyOnDemand(mode) {
			// --timeout in pre-copy switches, as for QEMU's post-copy
			// modes: migrate-start-postcopy, which pagecast's monitor
			// takes too.
			interrupts.setPostcopy(func(string) bool { return migrator.StartPostcopy(mon) == nil })
		}
	}
	bar := newProgressBar(c.App.ErrWriter, c.Bool("quiet"))
	switched := false // post-copy began: the guest runs on the destination
	throttle := 0     // QEMU drops cpu-throttle-percentage from its last reply
	var sent uint64   // QEMU's failed reply has no ram: what was sent before
	linkLost := false // said once per loss: the bar alone repeated "postcopy-paused … 0 B/s"
	watch := progressWatch{d: c.Duration("progress-timeout")}
	progress := func(i migrator.Info) {
		switched = switched || migrator.InPostcopy(i.Status)
		if lost := i.Status == migrator.StatusPostcopyPaused; lost != linkLost {
			linkLost = lost
			if lost && plan == nil {
				bar.say("pagecast: post-copy's link to the destination is lost: the source redials it for up to " + migrator.DefaultRecoverTimeout.String() +
					" (the guest runs there and needs pages only the source holds); its log says why")
			} else if lost {
				// No advice here: whether the destination can recover is
				// told once it is known (a gone one cannot).
				bar.say("pagecast: QEMU's post-copy is postcopy-paused: its link to the destination is lost, and the guest runs there needing pages only the source holds")
			}
		}
		if i.RAM != nil {
			sent = max(sent, i.RAM.Transferred)
		}
		if watch.stuck(i, time.Now()) {
			interrupts.expire("--progress-timeout", watch.err())
		}
		interrupts.check(i)
		throttle = max(throttle, i.CPUThrottlePercentage)
		bar.update(i)
		if metrics != nil {
			metrics.Observe(i)
			if plan != nil {
				metrics.ObserveSlowdown(plan.Slowdown)
			}
		}
	}
	var info migrator.Info
	if plan != nil {
		waited = true
		info, err = migrator.WaitQEMU(ctx, mon, plan, 200*time.Millisecond, progress)
	} else {
		info, err = migrator.Wait(ctx, mon, 200*time.Millisecond, progress)
	}
	bar.done()
	// Cancelled by pagecast, not by anyone's wish: past --timeout, as
	// KubeVirt counts one past its completion timeout (walk 89), or its
	// link stalled (review 90): counted failed, which the alert sees.
	countFailed := err != nil && info.Status == migrator.StatusCancelled && errors.Is(err, migrator.ErrStalled)
	if cause := interrupts.expired(); err != nil && cause != nil {
		if info.Status == migrator.StatusCancelled {
			err, countFailed = fmt.Errorf("%w: cancelled (migrate_cancel)", cause), true
		} else {
			// Said as the timeout's, not an interrupt's (review 87).
			err = fmt.Errorf("%w: %w", cause, err)
		}
	}
	if countFailed {
		out.settled = migrator.StatusFailed
	}
	if info.Status != "" {
		out.ended(info)
	}
	if plan != nil {
		defer out.qemuPlan(plan) // as it ended: post-copy, a forced switch-over, the slowdown
	}
	if metrics != nil {
		if i, ok := exported(info, err); ok {
			metrics.Observe(i)
		}
		if countFailed {
			// Failed, not cancelled: the failure alert skips a
			// cancel, which an operator asked for (walk 89).
			metrics.Fail(oneLine(err))
		}
	}
	// The source QEMU gone: nothing to send it, and the guest went with it
	// (walk 103: "has its VM exited?", then what to send the QEMU).
	srcExited := err != nil && srcPID > 0 && qmpGone(err) && exitsWithin(srcPID, time.Second)
	quitBoth := false // the error says the guest is lost on both sides, and to quit the source QEMU
	if plan != nil && err != nil && !plan.Restored() && !srcExited {
		// WaitQEMU sets them back only once the migration has ended: not
		// where it stopped following one that goes on (two interrupts in
		// post-copy, postcopy-paused, a destination gone in post-copy, a
		// silent monitor), which kept a 4 MiB/s cap and postcopy-ram for
		// good, unsaid (found by a new-user walk and a review).
		// Deferred, so said in the reverse order: the source's first.
		if hint := plan.DestRestoreHint(); hint != "" && dst != nil {
			// Not asked whether it lives: a stopped one does not answer,
			// and keeps them (review 63).
			defer func() {
				if quitBoth {
					return // the error says to quit them (walk 165: "once it has ended" of a migration that never ends)
				}
				err = fmt.Errorf("%w; the destination QEMU, if it lives on, keeps the post-copy capabilities pagecast set there: once the migration has ended, send it %s", err, hint)
			}()
		}
		if hint := plan.RestoreHint(); hint != "" {
			defer func() {
				if quitBoth {
					return
				}
				err = fmt.Errorf("%w; the source QEMU keeps this migration's settings, which pagecast sets back only on a migration it follows to its end: once it has ended, send it %s", err, hint)
			}()
		}
	}
	if detached := (*migrator.Detached)(nil); errors.As(err, &detached) {
		out.Guest = guestDestination // post-copy goes on
		return err
	}
	if err != nil && switched && plan == nil {
		out.Guest = guestUnknown                          // on the destination, if it runs on, part of its memory on the source
		if strings.Contains(err.Error(), "switch-over") { // the source's own account
			return err
		}
		return fmt.Errorf("%w (after the switch to post-copy the guest ran on the destination, part of its memory still on the source; "+
			"the source keeps the guest paused as it was at the switch-over, and cont there would lose what it did since)", err)
	}
	if err != nil && !switched && dst != nil && qmpGone(err) {
		// Between two polls of the source: the destination knows.
		var mig struct {
			Return struct {
				Status string `json:"status"`
			} `json:"return"`
		}
		raw, derr := dst.Run([]byte(`{"execute":"query-migrate"}`))
		switched = derr == nil && json.Unmarshal(raw, &mig) == nil && strings.HasPrefix(mig.Return.Status, "postcopy")
	}
	if err != nil && switched && qmpGone(err) {
		out.Guest = guestLost
		return fmt.Errorf("%w (after the switch to post-copy the source's QMP connection closed: if its QEMU has exited, the pages it still held went with it, and the guest on the destination cannot get them: it is lost)", err)
	}
	if err != nil && switched && dst != nil {
		if derr := destAnswers(dst, destAnswerWait); derr != nil && !errors.Is(derr, migrator.ErrNoAnswer) {
			// Recovery needs the destination QEMU, which the guest ran in.
			// (QEMU's own account suggests migrate-recover.)
			source := "the source holds the guest paused as it was at the switch-over, and cont there would lose what it did since"
			if plan != nil {
				// QEMU refuses cont there: "Migration is not finalized yet".
				source = "the source QEMU holds the guest's memory as it was at the switch-over but will not run it again (cont: \"Migration is not finalized yet\"), " +
					"so the guest is lost on both sides: quit the source QEMU and start the guest anew"
				quitBoth = true
			}
			out.Guest = guestLost
			return fmt.Errorf("migration %s after the switch to post-copy: the destination QEMU no longer answers on --dest-qmp (%v): it is gone, and the guest with it, so there is nothing to recover; %s",
				info.Status, derr, source)
		}
	}
	if err != nil && switched {
		out.Guest = guestDestination
		return fmt.Errorf("%w (after the switch to post-copy: the guest runs on the destination, part of its memory still on the source)", err)
	}
	if err != nil && plan != nil && dst != nil && plan.Restored() && !srcExited {
		// Ended before post-copy, the guest on the source: a destination
		// that still waits gets back the post-copy capabilities the plan
		// set there, as one the guest ran in does (walk 165: a tsmc to a
		// port nobody listened on left postcopy-ram on there, for the
		// next guest it took). Asked first whether it answers: one that
		// is gone or stopped is left alone (review 63).
		if hint := plan.DestRestoreHint(); hint != "" {
			switch derr := destAnswers(dst, destAnswerWait); {
			case derr == nil:
				if rerr := plan.RestoreDest(dst); rerr != nil {
					fmt.Fprintf(c.App.ErrWriter, "pagecast: warning: %v; once it takes no migration, send it %s\n", rerr, hint)
				}
			case errors.Is(derr, migrator.ErrNoAnswer):
				// Stopped (SIGSTOP), say: it keeps them (walk 166).
				fmt.Fprintf(c.App.ErrWriter, "pagecast: warning: the destination QEMU did not answer on --dest-qmp within %v, and keeps the post-copy capabilities pagecast set there: if it lives on, send it %s\n", destAnswerWait, hint)
			}
		}
	}
	if info.RAM != nil {
		sent = max(sent, info.RAM.Transferred)
	}
	if err != nil && plan != nil && info.Status == migrator.StatusFailed && sent < 1<<20 &&
		(strings.Contains(info.ErrorDesc, "Broken pipe") || strings.Contains(info.ErrorDesc, "Connection reset") ||
			strings.Contains(info.ErrorDesc, "Bad file descriptor")) {
		// pagecast's receiver hangs up on QEMU's stream at once; QEMU
		// says so in one of three ways, as its writes meet the hang-up.
		// A destination QEMU that refused the stream (another memory
		// size, machine type or devices) hangs up as soon: said too,
		// as a walk took the first cause for the only one; and so does
		// one busy with another source's (walk 83).
		return fmt.Errorf("%w (%s; the destination hung up at once: either it is a pagecast receiver, vm run --incoming or pagecast receive, which takes pagecast's engine only (QEMU's migration needs a QEMU waiting with its own -incoming, as vm run --incoming --engine qemu starts), "+
			"or the destination QEMU refused the stream: another memory size, machine type or devices than the source's (its stderr says which; --dest-qmp lets pagecast check the memory size first), "+
			"or it was taking another source's migration already (a QEMU takes one on its -incoming))", err, kept)
	}
	if err != nil && qmpGone(err) && srcExited {
		out.Guest = guestLost
		return fmt.Errorf("the source QEMU (pid %d) exited during the migration, before the switch-over, and the guest with it: the destination did not start it", srcPID)
	}
	if err != nil && qmpGone(err) {
		out.Guest = guestUnknown
		return fmt.Errorf("the source's QMP connection closed during the migration: has its VM exited? (%w)", err)
	}
	if err != nil && plan == nil && info.Downtime > 0 {
		// pagecast's monitor handed the guest over (its downtime is set
		// then), and the end failed after: not "kept" (review 66).
		out.Guest = guestUnknown
		return fmt.Errorf("%w (the guest was handed over to the destination, which runs it if the handover reached it; the source keeps its copy paused)", err)
	}
	if err != nil && errors.Is(err, migrator.ErrMonitorSilent) {
		return err // the guest's state is not known: not said to be kept (review 63)
	}
	if err != nil && plan != nil && dst != nil && info.Status == migrator.StatusFailed {
		// QEMU says only what its socket met ("Unable to write to
		// socket: Bad file descriptor"): the destination's monitor
		// says whether it went away (walk 123), as pagecast's engine
		// does from its link.
		if derr := destAnswers(dst, destAnswerWait); derr != nil && !errors.Is(derr, migrator.ErrNoAnswer) {
			return fmt.Errorf("%w (the destination went away: its QEMU no longer answers on --dest-qmp (%v): it exited or was killed) (%s)", err, derr, kept)
		}
	}
	if err != nil {
		return fmt.Errorf("%w (%s)", err, kept)
	}
	if plan != nil {
		info.CPUThrottlePercentage = throttle
		qemuFaultTime(plan, dst)
		if metrics != nil {
			metrics.ObserveSlowdown(plan.Slowdown)
		}
	}
	if plan != nil && dst != nil {
		settleCtx := ctx
		if interrupts.expired() != nil {
			// --timeout's cancel came after the last byte: the migration
			// completed, and the destination is waited for as ever, an
			// interrupt ending the wait (the cancelled context said it
			// was interrupted while it loaded: review 87).
			var stop context.CancelFunc
			settleCtx, stop = signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
			defer stop()
		}
		note, err := settleDestination(settleCtx, mon, dst, settled{source: lastSource, postcopy: switched || plan.Switched != "", destPID: destPID, ranThere: pause.Resumed}, settleWait)
		if err != nil {
			// QEMU's source said completed; the guest did not run on the
			// destination (review 63: --json said completed).
			out.settled, out.Guest = "unknown", guestUnknown
			if gone := (destGone{}); errors.As(err, &gone) {
				out.settled, out.Guest = migrator.StatusFailed, gone.guest
				if metrics != nil {
					metrics.Fail(oneLine(err))
				}
			}
			return err
		}
		if err := plan.RestoreDest(dst); err != nil {
			fmt.Fprintf(c.App.ErrWriter, "pagecast: warning: %v: it keeps them; %s\n", err, plan.DestRestoreHint())
		}
		if note != "" {
			fmt.Fprintln(c.App.ErrWriter, "pagecast: "+note)
		}
	}
	if plan != nil && dst == nil && info.Status == migrator.StatusCompleted {
		// Without --dest-qmp, QEMU's completed says the source sent it
		// all, not that the destination took it: a destination under TCG
		// refused a KVM guest's state and exited, and migrate said
		// completed, exit 0, the guest paused on the source (walk 74).
		if destPID != 0 && exitsWithin(destPID, time.Second) {
			out.settled, out.Guest = migrator.StatusFailed, guestSource
			err := fmt.Errorf("QEMU's migration completed on the source, but the destination QEMU (pid %d, listening on %s) exited just after: it refused what came "+
				"(vCPUs or devices unlike the source's give \"Unknown savevm section\") or failed or was stopped; its stderr says which. The source holds the guest paused in postmigrate: "+
				"where the destination refused the state (a load failure), send the source QMP cont to run the guest there again; where the guest ran there a moment, that would replay it from before the switch-over "+
				"(given --dest-qmp, pagecast tells the two apart and resumes the source itself where it may)", destPID, c.String("to"))
			if metrics != nil {
				metrics.Fail(oneLine(err))
			}
			return err
		}
		if destPID == 0 {
			fmt.Fprintln(c.App.ErrWriter, "pagecast: note: QEMU's completed says the source sent the guest; without --dest-qmp pagecast does not see the destination take it and run it (the source stays in postmigrate either way)")
		}
	}
	paused := guestPaused(pause)
	if metrics != nil {
		metrics.ObservePause(paused)
	}
	p.DowntimeLimit = control.limit(p.DowntimeLimit)
	out.DowntimeLimit = p.DowntimeLimit.Milliseconds()
	if plan != nil {
		if note := saneDowntime(&info, paused); note != "" {
			fmt.Fprintln(c.App.ErrWriter, "pagecast: "+note)
			if metrics != nil {
				metrics.Observe(info)
			}
		}
	}
	out.paused(paused)
	out.ended(info) // with the highest throttle seen
	if unconfirmed(info) != nil {
		out.Guest = unconfirmedGuest(info)
	}
	w := c.App.Writer
	if c.Bool("json") {
		// auto's prediction went to stderr: its outcome goes there too
		// (walk 121: only the JSON had it).
		sayOverLimit(c.App.ErrWriter, info, paused, p.DowntimeLimit)
		w = c.App.ErrWriter
	} else {
		writeSummary(w, info, plan, paused, p.DowntimeLimit)
	}
	if auto != nil {
		if p, ok := auto.Predicted(); ok {
			writePredictedAgainst(w, p, info, paused)
			control.autoNote(w)
		}
	}
	return unconfirmed(info)
}

// destGone is settleDestination's error where the destination QEMU has
// exited: the migration failed, whatever QEMU's source said.
type destGone struct {
	error
	guest string // where the guest is: guestSource, guestLost or guestUnknown
}

func (d destGone) Unwrap() error { return d.error }

// settleWait is how long the destination QEMU has, once QEMU's migration
// has completed on the source, to load what came.
var settleWait = 10 * time.Second

// settled is what settleDestination knows of a QEMU migration that
// completed on the source.
type settled struct {
	// source is the source's run state when the migration began:
	// running, or what the guest was (paused by QMP stop, prelaunch,
	// suspended), as QEMU hands it on to the destination unless it
	// changes meanwhile.
	source string
	// postcopy: post-copy was started (migrate-start-postcopy), which may
	// have run the guest on the destination.
	postcopy bool
	// destPID is the destination QEMU's process where it is one of this
	// host's (destinationPID); 0 where it is not known.
	destPID int
	// ranThere says whether the destination's RESUME has come, waiting up
	// to its argument for the events it has not yet read.
	ranThere func(time.Duration) bool
}

// settleDestination, once QEMU's migration to the destination QEMU dst has
// completed on the source mon, waits for dst to have loaded what came and
// sees that the guest runs. QEMU's source says completed once the stream
// is sent; a destination that refuses it (vCPUs or devices unlike the
// source's: "Unknown savevm section") exits, and the guest, left in
// postmigrate on the source, ran nowhere while migrate said completed
// (walk 56). The source is resumed (cont) only where it is certain that
// the guest runs nowhere else and never did since: the destination's
// process, one of this host's, has exited; the source ran the guest when
// the migration began; post-copy was not started; no RESUME of the
// destination's. A destination that stops answering but may live on (a
// remote one behind a forwarded socket, a connection broken) is never
// taken for gone: resuming the source while it may yet run the guest would
// run it twice, on one disk. A destination holding the guest paused is
// said to, not resumed: it was started with -S, as libvirt starts one, or
// the operator paused the guest on the source to make the migration
// converge, which a poll cannot tell apart (review 60: the first version
// resumed it).
func settleDestination(ctx context.Context, mon, dst qemu.Runner, st settled, wait time.Duration) (note string, err error) {
	const postmigrate = "the source holds the guest in postmigrate"
	var state string
	for deadline := time.Now().Add(wait); ; {
		state, err = within(2*time.Second, func() (string, error) { return qemu.RunState(dst) })
		if err == nil && state != "inmigrate" || err != nil && !errors.Is(err, migrator.ErrNoAnswer) {
			break
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("QEMU's migration completed on the source, but %v later the destination QEMU was still loading it (%s): "+
				"%s; once the destination runs the guest, quit the source, or if the destination fails, send the source QMP cont", wait, cmp.Or(state, "no answer on --dest-qmp"), postmigrate)
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("interrupted while the destination QEMU loaded what QEMU's migration sent (%s): %s; check the destination (query-status) before you resume either",
				cmp.Or(state, "no answer on --dest-qmp"), postmigrate)
		case <-time.After(50 * time.Millisecond):
		}
	}
	if err != nil {
		why := fmt.Sprintf("QEMU's migration completed on the source, but the destination QEMU no longer answers on --dest-qmp (%v)", err)
		gone := st.destPID != 0 && exitsWithin(st.destPID, 2*time.Second)
		switch {
		case !gone && st.destPID == 0:
			return "", fmt.Errorf("%s, and pagecast cannot tell whether it runs the guest (it is not a QEMU of this host): %s; check the destination, and only if it has exited send the source QMP cont", why, postmigrate)
		case !gone:
			return "", fmt.Errorf("%s, yet its process (pid %d) runs on: %s; check the destination, and only if it has exited send the source QMP cont", why, st.destPID, postmigrate)
		}
		why += ": it refused what came and exited, or was stopped (its stderr says why; vCPUs or devices unlike the source's give \"Unknown savevm section\")"
		switch {
		case st.ranThere(time.Second):
			return "", destGone{error: errors.New(why + "; the guest had run there (RESUME), so the source's copy is stale and is not resumed"), guest: guestLost}
		case st.postcopy:
			return "", destGone{error: errors.New(why + "; post-copy was started, which may have run the guest there, so the source's copy may be stale and is not resumed: " +
				"if the destination never ran it (its stderr says so), send the source QMP cont"), guest: guestUnknown}
		case st.source != "running":
			return "", destGone{error: fmt.Errorf("%s; the guest was %s on the source when the migration began, and is left so there (postmigrate)", why, st.source), guest: guestSource}
		}
		if cerr := qemu.QMP(mon, "cont", nil, nil); cerr != nil {
			return "", destGone{error: fmt.Errorf("%s; resuming the guest on the source failed (%v): it runs nowhere until the source gets QMP cont", why, cerr), guest: guestSource}
		}
		return "", destGone{error: errors.New(why + "; the guest runs on at the source again (pagecast sent it cont)"), guest: guestSource}
	}
	switch {
	case state == "running":
		return "", nil
	case (state == "paused" || state == "prelaunch") && st.source == "running":
		return fmt.Sprintf("note: the destination QEMU holds the migrated guest paused (%s): it was started with -S, as libvirt starts one, or the guest was paused on the source during the migration; "+
			"it runs once the destination gets QMP cont (pagecast's own engine resumes its destination itself)", state), nil
	case state == st.source || state == "paused" && st.source == "prelaunch":
		return fmt.Sprintf("the destination QEMU holds the guest %s, as the source had it", state), nil
	}
	return "", fmt.Errorf("QEMU's migration completed on the source, but the destination QEMU is %s, not running (the guest was %s on the source): see the destination's stderr; "+
		"%s, and if the destination cannot run the guest, quit it and send the source QMP cont", state, st.source, postmigrate)
}

// exitsWithin says whether process pid has exited, or does within wait: a
// QEMU that refused what came closes its monitor as it exits.
func exitsWithin(pid int, wait time.Duration) bool {
	for deadline := time.Now().Add(wait); ; time.Sleep(20 * time.Millisecond) {
		if proc.Gone(pid) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}

// listenerOf is the process of this host listening on the port of
// migration URI uri, and its name, where uri names this host and one
// does; else 0.
func listenerOf(uri string) (pid int, comm string) {
	addr, err := migrator.ParseURI(uri)
	if err != nil || !localDestination(uri) {
		return 0, ""
	}
	host, p, _ := net.SplitHostPort(addr)
	port, err := strconv.Atoi(p)
	if err != nil {
		return 0, ""
	}
	// The addresses a connection to uri goes to: QEMU's tcp::PORT goes
	// to this host's loopback.
	ips := []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	if host != "" {
		if ips, err = net.LookupIP(host); err != nil {
			return 0, ""
		}
	}
	if pid = proc.TCPListener(ips, port); pid == 0 {
		return 0, ""
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil {
		return 0, ""
	}
	return pid, strings.TrimSpace(string(b))
}

// localListener is the QEMU process of this host listening on the port
// of migration URI uri, where uri names this host and one does; else 0.
func localListener(uri string) int {
	pid, comm := listenerOf(uri)
	return qemuIncoming(pid, comm, uri)
}

// abandonedHere is an error where the source QEMU pid's guest is paused
// (postmigrate, or paused) by a pagecast migrate that was killed in its
// switch-over: QEMU's run state then says the guest migrated away, and it
// may run nowhere (walk 114: postmigrate was said to mean the guest ran
// on the destination, which still waited). Asked before this migrate
// holds the guest, which would hide that one.
func abandonedHere(mon qmp.Monitor, pid int) error {
	if pid == 0 {
		return nil
	}
	who, ok := qemuguest.AbandonedSwitchover(pid)
	if !ok {
		return nil
	}
	if st, err := qemu.RunState(mon); err == nil && (st == "postmigrate" || st == "paused") {
		return fmt.Errorf("migrate: virtual machine is %s: %s, then migrate again", st, abandonedNote(who))
	}
	return nil
}

// qemuIncoming is pid, listenerOf's process named comm, where it is a QEMU
// whose migration listener may be the port of uri; else 0.
func qemuIncoming(pid int, comm, uri string) int {
	if !strings.Contains(comm, "qemu") {
		return 0
	}
	// One that waits for a migration there: a QEMU's serial or hostfwd
	// port is not its -incoming (review 88: taken for one, QEMU's
	// migration went there and stalled; walk 114: a QEMU migrated in,
	// started with -incoming defer, had its hostfwd port taken for one).
	addr, err := migrator.ParseURI(uri)
	if err != nil {
		return 0
	}
	_, port, _ := net.SplitHostPort(addr)
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !waitsForMigration(strings.Split(string(b), "\x00"), port) {
		return 0
	}
	return pid
}

// qemuRuns are the modes QEMU's own migration runs (migrator.PlanQEMU),
// the post-copy ones alone where postcopy is set.
func qemuRuns(postcopy bool) []string {
	var modes []string
	for _, m := range simulate.AutoModes {
		if _, err := migrator.PlanQEMU(migrator.Params{Mode: m}, 64<<20); err == nil && (!postcopy || migrator.NeedsPostcopy(m)) {
			modes = append(modes, m)
		}
	}
	return modes
}

// qemuModes are the modes QEMU's own migration runs, said.
func qemuModes() string { return strings.Join(qemuRuns(false), ", ") }

// qemuPostcopyModes are the post-copy modes QEMU's own migration runs, said.
func qemuPostcopyModes() string { return strings.Join(qemuRuns(true), " and ") }

// waitsForMigration says whether a QEMU command line has a migration
// listener that may be on port: -incoming tcp:HOST:port, or -incoming
// defer (libvirt's way: migrate-incoming later says where) unless another
// option of the line takes that port (a hostfwd, a serial, a QMP socket).
func waitsForMigration(args []string, port string) bool {
	var incoming []string
	for i, a := range args {
		switch {
		case (a == "-incoming" || a == "--incoming") && i+1 < len(args):
			incoming = append(incoming, args[i+1])
		case strings.HasPrefix(a, "-incoming="), strings.HasPrefix(a, "--incoming="):
			_, v, _ := strings.Cut(a, "=")
			incoming = append(incoming, v)
		}
	}
	for _, v := range incoming {
		if v == "defer" {
			return !portTaken(args, port)
		}
		kind, rest, _ := strings.Cut(v, ":")
		if kind != "tcp" {
			continue // unix:, exec:, fd:, file: take no port
		}
		rest, _, _ = strings.Cut(rest, ",")
		if _, p, err := net.SplitHostPort(rest); err == nil && p == port {
			return true
		}
	}
	return false
}

// portTaken says whether an option of a QEMU command line takes TCP port
// for something else than a migration: a user network's hostfwd (its host
// side), a socket QEMU listens on given as tcp:, telnet: or
// websocket:HOST:PORT (a serial, a chardev, a monitor, gdb), a chardev's
// or netdev's port= or listen=, a JSON option's "port", a VNC display
// (5900 + its number) or its websocket=, gdb's -s (1234).
func portTaken(args []string, port string) bool {
	q := regexp.QuoteMeta(port)
	forwards := regexp.MustCompile(`(?:host|guest)fwd=[^,]*`)
	hostSide := regexp.MustCompile(`^hostfwd=(?:tcp)?:[^:]*:` + q + `-`)
	socket := regexp.MustCompile(`(?:\b(?:tcp|telnet|websocket):[^,]*:|\blisten=[^,]*:|\bport=|\bwebsocket=|"port":\s*"?)` + q + `(?:["},]|$)`)
	incoming := func(i int) bool {
		a := args[i]
		return a == "-incoming" || a == "--incoming" || i > 0 && (args[i-1] == "-incoming" || args[i-1] == "--incoming")
	}
	for i, a := range args {
		if incoming(i) {
			continue
		}
		for _, f := range forwards.FindAllString(a, -1) {
			if hostSide.MatchString(f) {
				return true
			}
		}
		if socket.MatchString(forwards.ReplaceAllString(a, "")) {
			return true
		}
		if (a == "-s" || a == "--s") && port == "1234" {
			return true
		}
		if i == 0 {
			continue
		}
		display := ""
		switch prev := args[i-1]; {
		case prev == "-vnc" || prev == "--vnc":
			display = a
		case (prev == "-display" || prev == "--display") && strings.HasPrefix(a, "vnc="):
			display = strings.TrimPrefix(a, "vnc=")
		}
		if display, _, _ = strings.Cut(display, ","); display != "" {
			n := display[strings.LastIndexByte(display, ':')+1:]
			if d, err := strconv.Atoi(n); err == nil && strconv.Itoa(5900+d) == port {
				return true
			}
		}
	}
	return false
}

// destinationPID is the process of the QEMU behind m where it is one of
// this host's: the process whose threads its vCPU threads all are, named
// qemu, and, where m tells it, the one at the other end of its socket.
// 0 where that is not so (a QEMU on another host, behind a forwarded
// socket, whose thread ids mean nothing here: they were trusted while
// they named one local QEMU's threads) or not known.
func destinationPID(m qemu.Runner) int {
	peer := -1 // not told
	if p, ok := m.(interface{ PeerPID() int }); ok {
		if peer = p.PeerPID(); peer == 0 {
			return 0
		}
	}
	type vcpu struct {
		ThreadID int `json:"thread-id"`
	}
	// Bounded: a destination's monitor that does not answer (a stall, a
	// forwarded socket) held migrate before it could be interrupted.
	cpus, err := within(2*time.Second, func() ([]vcpu, error) {
		var cpus []vcpu
		err := qemu.QMP(m, "query-cpus-fast", nil, &cpus)
		return cpus, err
	})
	if err != nil || len(cpus) == 0 {
		return 0
	}
	pid := 0
	for _, c := range cpus {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", c.ThreadID))
		if c.ThreadID == 0 || err != nil {
			return 0
		}
		_, rest, _ := strings.Cut(string(b), "\nTgid:")
		p, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(rest, "\n", 2)[0]))
		if err != nil || pid != 0 && p != pid {
			return 0
		}
		pid = p
	}
	if peer >= 0 && peer != pid {
		return 0
	}
	if comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); err != nil || !strings.Contains(string(comm), "qemu") {
		return 0
	}
	return pid
}

// errNoRoundCap refuses --max-rounds 0 where pagecast's engine migrates:
// it always has a cap (it took its default of 30 unsaid).
var errNoRoundCap = errors.New("--max-rounds 0 (no cap) is for QEMU's own migration (--engine qemu, from a QEMU source); pagecast's engine always has a round cap: give one (default 30)")

// unconfirmed is an error for a migration that completed but whose
// destination did not answer after the commit: whether the guest runs
// there is not known on this side, so the command does not end in
// success (its status stays completed, as the engine cannot tell either).
func unconfirmed(i migrator.Info) error {
	if x := i.Pagecast; x == nil || x.Unconfirmed == "" {
		return nil
	}
	if i.Pagecast.GuestStarted {
		return fmt.Errorf("completed but unverified: the destination said its guest runs, then did not answer the memory check (%s): the guest went there, unchecked. "+
			"The source keeps its copy paused: check the destination (query-status running) before resuming the source (QMP cont; on pagecast's own monitor cont with x-pagecast-force true), which would run the guest twice", i.Pagecast.Unconfirmed)
	}
	return fmt.Errorf("completed but unconfirmed: the destination did not answer after the commit (%s); it runs the guest if the commit reached it, and no one does if the link broke first. "+
		"The source keeps the guest paused: check the destination (query-status running) before resuming the source (QMP cont; on pagecast's own monitor cont with x-pagecast-force true)", i.Pagecast.Unconfirmed)
}

// unconfirmedGuest is where an unconfirmed migration's guest is: on the
// destination where it said its guest runs, else not known (on the
// destination if the commit reached it; review 66).
func unconfirmedGuest(i migrator.Info) string {
	if i.Pagecast != nil && i.Pagecast.GuestStarted {
		return guestDestination
	}
	return guestUnknown
}

// interrupts turns SIGINT, SIGTERM and SIGHUP into a cancel of the migration,
// except in post-copy: a cancel then would lose the guest, so the first
// signal only says so, and a second stops following (migrator.Wait sends
// no cancel in post-copy). check, called with each query-migrate reply,
// acts on a signal received since the last; stop ends the watch.
type interrupts struct {
	sigs    chan os.Signal
	cancel  context.CancelFunc
	w       io.Writer
	stopped chan struct{} // closed by stop

	mu      sync.Mutex
	pending int // interrupts taken, not yet acted on
	warned  bool
	timeout timeoutState // --timeout's, or --progress-timeout's
	flag    string       // which of the two expired
	cause   error        // why: migrate's error once it cancelled
	// signalled: an interrupt cancelled the migration; a --timeout
	// reached after is not its cause (review 90: a Ctrl-C whose cancel
	// took over 2 s was counted a timeout, and failed).
	signalled bool
	// postcopy, if not nil, starts post-copy, saying why: --timeout
	// reached in pre-copy then switches, not cancels, as KubeVirt does
	// at its completion timeout where post-copy is allowed (walk 89).
	// Set for QEMU's engine in its post-copy modes, and for pagecast's
	// monitor in MODE+postcopy.
	postcopy func(why string) (starts bool)
}

// setPostcopy sets postcopy once the migration is followed.
func (in *interrupts) setPostcopy(f func(why string) bool) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.postcopy = f
}

// timeoutState is how far --timeout has gone.
type timeoutState int

const (
	timeoutRunning   timeoutState = iota // not reached
	timeoutReached                       // reached: the next reply acts on it
	timeoutLate                          // reached in post-copy or past the switch-over: said, and not acted on
	timeoutCancelled                     // reached: the migration was cancelled
)

// expire is --timeout's: the next poll's reply cancels the migration,
// unless it is in post-copy or past pagecast's switch-over, where a cancel
// would lose the guest or be refused: that is said, and the migration
// followed to its end. Where no reply comes within checkWait (a source
// whose monitor is silent: stopped, or holding its monitor in the
// stop-and-copy), the wait ends by itself, as on an interrupt; it waited
// for good before (review 87).
func (in *interrupts) expire(flag string, cause error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.timeout != timeoutRunning || in.signalled {
		return
	}
	in.timeout, in.flag, in.cause = timeoutReached, flag, cause
	time.AfterFunc(checkWait, func() {
		in.mu.Lock()
		defer in.mu.Unlock()
		if in.timeout == timeoutReached && !in.signalled {
			in.timeout = timeoutCancelled
			in.cancel()
		}
	})
}

// expired is why --timeout or --progress-timeout cancelled the
// migration; nil where neither did.
func (in *interrupts) expired() error {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.timeout != timeoutCancelled {
		return nil
	}
	return in.cause
}

// timedOut is why --timeout d cancelled the migration.
func timedOut(d time.Duration) error {
	return fmt.Errorf("--timeout %v reached before the migration completed", d)
}

// progressWatch tells when a migration has made no progress for d: the
// data left to send has not fallen from one reply to the next, as
// KubeVirt's progressTimeout judges it (each sample against the one
// before): a stalled migration, not one whose passes do not converge,
// where it falls through each pass and rises at the next. (Held to its
// lowest so far, it cancelled migrations still converging: review 91.)
// Only pre-copy (active) counts: setup has nothing to send yet, and
// post-copy is not cancelled.
type progressWatch struct {
	d     time.Duration
	last  uint64    // the data left at the last reply
	since time.Time // when it last fell; zero: not yet active
}

// stuck takes a reply i at now and says whether the migration has made no
// progress for d.
func (w *progressWatch) stuck(i migrator.Info, now time.Time) bool {
	if w.d <= 0 || i.Status != migrator.StatusActive || i.RAM == nil {
		return false
	}
	// As KubeVirt's, nothing left at the last reply counts as progress:
	// QEMU can stay active with ram.remaining 0 while it sends what is
	// not RAM (review 92).
	if w.since.IsZero() || w.last == 0 || i.RAM.Remaining < w.last {
		w.since = now
	}
	w.last = i.RAM.Remaining
	return now.Sub(w.since) > w.d
}

// err is why --progress-timeout cancelled the migration.
func (w *progressWatch) err() error {
	return fmt.Errorf("--progress-timeout %v reached: the data left to send, %s, had not fallen for that long", w.d, units.FormatBytes(float64(w.last)))
}

// interruptedSetup is migrate's error for a signal taken before the
// migration started.
func interruptedSetup(sig os.Signal) error {
	name := map[os.Signal]string{os.Interrupt: "SIGINT", syscall.SIGTERM: "SIGTERM", syscall.SIGHUP: "SIGHUP"}[sig]
	return fmt.Errorf("interrupted (%s) before the migration started: nothing was migrated, and the guest is on the source as it was", name)
}

// setupSignals catches a signal from migrate's first question to a monitor
// to the migration's start (watchInterrupts), which ended migrate by the
// signal's default action, without a word, perhaps with QEMU's settings
// changed (walk 136: a source that greeted and then said nothing). Until
// hold, a signal closes the monitors migrate waits on, so that it returns
// at once; after, it is only taken, and migrate returns before the
// migration starts, as what it set is set back.
type setupSignals struct {
	ch       chan os.Signal
	done     chan struct{}
	stopOnce sync.Once

	mu      sync.Mutex
	sig     os.Signal
	held    bool
	waiting []qmp.Monitor // closed on a signal until hold
}

func catchSetup() *setupSignals {
	s := &setupSignals{ch: make(chan os.Signal, 1), done: make(chan struct{})}
	signal.Notify(s.ch, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		select {
		case sig := <-s.ch:
			s.mu.Lock()
			s.sig = sig
			var close []qmp.Monitor
			if !s.held {
				close = s.waiting
			}
			s.mu.Unlock()
			for _, m := range close {
				m.Disconnect()
			}
		case <-s.done:
		}
	}()
	return s
}

// closes has a signal close m, while migrate only asks (until hold); at
// once, if one came.
func (s *setupSignals) closes(m qmp.Monitor) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.held:
	case s.sig != nil:
		m.Disconnect()
	default:
		s.waiting = append(s.waiting, m)
	}
}

// hold ends the closing: from here migrate changes what it must set back.
func (s *setupSignals) hold() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.held = true
}

// caught is the signal taken, nil if none.
func (s *setupSignals) caught() os.Signal {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sig
}

// stop ends the catching; a signal after it is another's to take.
func (s *setupSignals) stop() {
	s.stopOnce.Do(func() {
		signal.Stop(s.ch)
		close(s.done)
	})
}

func watchInterrupts(parent context.Context, w io.Writer) (context.Context, *interrupts) {
	ctx, cancel := context.WithCancel(parent)
	in := &interrupts{sigs: make(chan os.Signal, 2), cancel: cancel, w: w, stopped: make(chan struct{})}
	signal.Notify(in.sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	return ctx, in
}

// check acts on an interrupt taken, and on --timeout reached, by the
// migration's state now (each poll's reply i): it cancels, or in
// post-copy the first time warns.
func (in *interrupts) check(i migrator.Info) {
	status := i.Status
	in.mu.Lock()
	defer in.mu.Unlock()
	switch {
	case in.timeout != timeoutReached || status == migrator.StatusCompleted:
	case migrator.InPostcopy(status):
		in.timeout = timeoutLate
		fmt.Fprintf(in.w, "\npagecast: %s reached in post-copy: the guest runs on the destination, and a cancel now would lose it; following the migration to its end\n", in.flag)
	case i.Downtime > 0:
		// pagecast's monitor sets the downtime at its commit: the
		// destination runs the guest, and a cancel is refused.
		in.timeout = timeoutLate
		fmt.Fprintf(in.w, "\npagecast: %s reached after the switch-over: the destination runs the guest; following the migration to its end\n", in.flag)
	case in.postcopy != nil && in.flag == "--timeout" && status == migrator.StatusActive:
		in.timeout = timeoutLate
		if in.postcopy(fmt.Sprintf("%v in pre-copy: switched, not cancelled, as the mode allows post-copy (KubeVirt's completion timeout with allowPostCopy)", in.cause)) {
			fmt.Fprintf(in.w, "\npagecast: %v in pre-copy: starting post-copy (migrate-start-postcopy), as the mode allows it; the guest runs on the destination from then, and the migration is followed to its end\n", in.cause)
		} else {
			fmt.Fprintf(in.w, "\npagecast: %v as post-copy starts: the guest is to run on the destination, and a cancel now would lose it; following the migration to its end\n", in.cause)
		}
	default:
		in.timeout = timeoutCancelled
		in.cancel()
		return
	}
	if in.pending == 0 {
		return
	}
	in.pending--
	if !migrator.InPostcopy(status) || in.warned {
		in.signalled = true
		in.cancel()
		return
	}
	in.warned = true
	fmt.Fprintln(in.w, "\npagecast: post-copy under way: the guest runs on the destination, and a cancel now would lose it; "+
		"waiting for the end (interrupt again to stop following: the migration goes on)")
}

// checkWait is how long an interrupt waits for a poll's reply to be acted
// on by (check) before it ends the wait by itself.
const checkWait = 2 * time.Second

// follow takes interrupts from now on as they come, for the next poll's
// reply to act on, or, where none comes within checkWait (a QEMU that does
// not answer: stopped, or its stop-and-copy holding its monitor), to end
// the wait. (Taken only as each poll's reply came, they were never seen
// there, and SIGINT and SIGTERM did nothing; found by a review walk.)
func (in *interrupts) follow() {
	go func() {
		for {
			select {
			case <-in.stopped:
				return
			case <-in.sigs:
			}
			in.mu.Lock()
			in.pending++
			in.mu.Unlock()
			time.AfterFunc(checkWait, func() {
				in.mu.Lock()
				defer in.mu.Unlock()
				if in.pending > 0 {
					in.pending = 0
					in.signalled = true
					in.cancel()
				}
			})
		}
	}()
}

// whileWatching takes interrupts while pagecast's monitor at the QMP socket
// path watches its guest for mode auto, sending it migrate_cancel on a
// connection of its own (the first is busy with migrate), until done is
// called; done reports whether one came.
func (in *interrupts) whileWatching(path string) (done func() bool) {
	stop := make(chan struct{})
	var got atomic.Bool
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		select {
		case <-stop:
			return
		case <-in.sigs:
		}
		got.Store(true)
		fmt.Fprintln(in.w, "pagecast: interrupted: stopping auto's watch of the guest (migrate_cancel)")
		if mon, err := dialQMP(path); err == nil {
			migrator.Cancel(mon)
			mon.Disconnect()
		}
	}()
	return func() bool {
		close(stop)
		<-finished
		return got.Load()
	}
}

func (in *interrupts) stop() {
	signal.Stop(in.sigs)
	close(in.stopped)
	in.cancel()
}

// writeAutoChoice prints what mode auto predicted for each mode it
// weighed, and its choice.
func writeAutoChoice(w io.Writer, a *migrator.AutoChoice) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	ms := func(v int64) time.Duration { return time.Duration(v) * time.Millisecond }
	// The columns of QEMU's auto table and simulate's (walk 130: the
	// rounds, pages per round and the rest were missing here).
	fmt.Fprintln(tw, "mode\tpredicted total\tdowntime\tbytes\trounds\tpages per round\tdeferred\tthrottle\tpulled\tguest slowed\t")
	short := false
	var replayed []string
	for _, p := range a.Predictions {
		if p.StoppedShort {
			fmt.Fprintf(tw, "%s\t>%v\t\t>%s\t\t\t\t\t\t\t\n", p.Mode, ms(p.TotalTime), units.FormatBytes(float64(p.Transferred)))
			short = true
			continue
		}
		fmt.Fprintf(tw, "%s\t%v\t%v\t%s\t%d\t%v\t%d\t%d%%\t%d\t%s\t\n", p.Mode, ms(p.TotalTime), ms(p.Downtime), units.FormatBytes(float64(p.Transferred)),
			p.Rounds, roundList(p.RoundPages), p.Deferred, p.Throttle, p.Pulled, percent(p.GuestSlowdown))
		if p.Replays > 0 {
			replayed = append(replayed, replayedTimes(p.Mode, p.Replays))
		}
	}
	tw.Flush()
	if short {
		fmt.Fprintf(w, "> a mode stopped short once it could no longer be the best (more than %.0f%% past a mode finished within the downtime limit), or where auto's predictions had taken %v of real time, their most\n", 100*simulate.CutMargin, predictBudget)
	}
	if len(replayed) > 0 && a.Watched > 0 {
		writeWatchReplayed(w, ms(a.Watched), replayed)
		if r := a.Replay; r != nil {
			writeMoves(w, r.Once, r.Moved, r.Drift, r.Lead)
		}
	}
	if a.Again {
		writeAgain(w, a.Mode)
	}
	fmt.Fprintf(w, "auto chose %s (prefer %s): %s\n", printable.Line(a.Mode), printable.Line(a.Prefer), printable.Line(a.Why))
	if a.Warning != "" {
		fmt.Fprintf(w, "auto: warning: %s\n", printable.Line(a.Warning))
	}
	fmt.Fprintln(w)
}

// dialQMP connects to a QMP socket, giving a busy one up after 5 s, and a
// command not answered after setupAnswerWait, until answerFreely: a
// source QEMU that greeted and then answered nothing (stopped with
// SIGSTOP, or stuck) held migrate silent for good (walk 107).
func dialQMP(path string) (*qmpclient.Client, error) {
	c, err := qmpclient.Open(path, 5*time.Second)
	if err == nil {
		c.SetAnswerWait(setupAnswerWait)
	}
	return c, err
}

// setupAnswerWait is how long migrate waits for each of its questions to
// QEMU before the migration starts, as profile's collector does.
var setupAnswerWait = 10 * time.Second

// answerFreely lifts dialQMP's bound on answers as the migration starts
// (QEMU's own stop-and-copy holds its main loop, and so its monitor, for
// the whole downtime), unless a monitor has failed it (unanswered).
func answerFreely(mon, dst qmp.Monitor) error {
	if err := unanswered(mon, dst); err != nil {
		return err
	}
	for _, m := range []qmp.Monitor{mon, dst} {
		if c, ok := m.(*qmpclient.Client); ok {
			c.SetAnswerWait(0)
		}
	}
	return nil
}

// unanswered is the error of the source's or the destination's monitor
// that did not answer a question within dialQMP's wait; nil where both
// have answered all. Checks that take a failed question for "not known"
// went on without the answer: a silent destination's sizes went
// unchecked, and a silent source was said to be one pagecast's engine
// cannot run on (walk 108).
func unanswered(mon, dst qmp.Monitor) error {
	for _, end := range []struct {
		m   qmp.Monitor
		who string
	}{{mon, "source"}, {dst, "destination (--dest-qmp)"}} {
		if c, ok := end.m.(*qmpclient.Client); ok && c.Lost() != nil {
			return fmt.Errorf("%s: %w", end.who, c.Lost())
		}
	}
	return nil
}

// progressBar draws one line, redrawn in place on a terminal and printed
// once a second otherwise.
type progressBar struct {
	w     io.Writer
	label string // put before each line, where several migrations share w (the demo's)
	quiet bool
	tty   bool
	last  time.Time
	drawn bool
	sent  uint64 // ram.transferred at the last line drawn
	now   func() time.Time
}

func newProgressBar(w io.Writer, quiet bool) *progressBar {
	return &progressBar{w: w, quiet: quiet, tty: terminal(w), now: time.Now}
}

// terminal says whether w is a terminal, where the bar is redrawn in place.
func terminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func (b *progressBar) update(i migrator.Info) {
	if b.quiet || i.RAM == nil {
		return
	}
	now := b.now()
	if !b.tty && now.Sub(b.last) < time.Second {
		return
	}
	// The rate is over the interval since the last line: the engines'
	// own (mbps) is of their last transfer, and stayed at 8.0 MiB/s on a
	// link that had moved nothing for a minute. The first line has only
	// theirs.
	rate := i.RAM.Mbps * 1e6 / 8
	if !b.last.IsZero() {
		rate = 0
		if d := now.Sub(b.last).Seconds(); d > 0 && i.RAM.Transferred > b.sent {
			rate = float64(i.RAM.Transferred-b.sent) / d
		}
	}
	b.last, b.sent = now, i.RAM.Transferred
	// The share of the guest's memory in place at the destination, as
	// libvirt's virsh migrate --verbose shows it: sent over sent and left
	// crept to 97% in a migration that did not converge, 44 MiB of its
	// 64 MiB left round after round (walk 106).
	sent, left := float64(i.RAM.Transferred), float64(i.RAM.Remaining)
	frac := 0.0
	switch total := float64(i.RAM.Total); {
	case total > 0:
		frac = max(0, 1-left/total)
	case sent+left > 0:
		frac = sent / (sent + left)
	}
	const width = 24
	fill := int(frac * width)
	// QEMU's replies have no pagecast section: its dirty syncs end rounds.
	round := int(i.RAM.DirtySyncCount)
	if i.Pagecast != nil {
		round = i.Pagecast.Round
	}
	line := fmt.Sprintf("[%s%s] %3.0f%% %-6s round %d  sent %s  left %s  %s/s",
		strings.Repeat("#", fill), strings.Repeat("-", width-fill), frac*100, i.Status, round,
		units.FormatBytes(sent), units.FormatBytes(left), units.FormatBytes(rate))
	if d := i.RAM.DirtyPagesRate * max(i.RAM.PageSize, migrator.PageSize); d > 0 && i.Status == migrator.StatusActive {
		// Beside the rate it is sent at: a guest dirtying faster than
		// that does not converge.
		line += fmt.Sprintf("  dirtying %s/s", units.FormatBytes(float64(d)))
	}
	if i.Pagecast != nil && i.Pagecast.Deferred > 0 && i.Status == migrator.StatusActive {
		// Pages held back stay pending, so their rewrites are not in
		// the dirty rate, which counts pages made pending again (walk
		// 163: "dirtying 8.0 KiB/s" where the guest wrote 70 MiB/s, 21
		// 791 pages deferred): say how many the round has held back so
		// far (Extra.Deferred), which left counts.
		line += fmt.Sprintf("  held back this round %s (in left; their rewrites not in dirtying)", units.FormatBytes(float64(i.Pagecast.Deferred*migrator.PageSize)))
	}
	if i.CPUThrottlePercentage > 0 {
		line += fmt.Sprintf("  throttle %d%%", i.CPUThrottlePercentage)
	}
	if b.label != "" {
		line = b.label + "  " + line
	}
	if b.tty {
		fmt.Fprintf(b.w, "\r\033[K%s", line)
		b.drawn = true
	} else {
		fmt.Fprintln(b.w, line)
	}
}

// exported is what the metrics are told of a migration that Wait returned
// with err: a failure where it ended in one, keeping what was known of it
// (its total time had gone to 0); nothing new (false) where pagecast
// stopped following a migration that goes on (Detached) or QEMU's monitor
// went silent, whose last state seen, observed already, stays: a failure
// there fired PagecastMigrationFailed for a guest running on the
// destination (found by a review walk).
func exported(info migrator.Info, err error) (migrator.Info, bool) {
	if err == nil || migrationmetrics.Finished(info.Status) {
		return info, true
	}
	if detached := (*migrator.Detached)(nil); errors.As(err, &detached) || errors.Is(err, migrator.ErrMonitorSilent) {
		return migrator.Info{}, false
	}
	info.Status, info.ErrorDesc = migrator.StatusFailed, err.Error()
	return info, true
}

// say prints a line of its own, --quiet or not, under the bar where one
// is drawn in place.
func (b *progressBar) say(msg string) {
	if b.drawn {
		fmt.Fprint(b.w, "\r\033[K")
		b.drawn = false
	}
	fmt.Fprintln(b.w, msg)
}

func (b *progressBar) done() {
	if b.drawn {
		fmt.Fprintln(b.w)
	}
}

// guestPaused is the guest's pause that w saw, or -1 where there is no
// watch or it saw none (a destination started with -S stays paused: no
// RESUME comes).
func guestPaused(w *migrator.PauseWatch) time.Duration {
	if w == nil {
		return -1
	}
	paused, err := w.Paused(2 * time.Second)
	if err != nil {
		slog.Info("the guest's pause is not known", "err", err)
		return -1
	}
	return paused
}

// sayOverLimit says on w, for migrate --json, which has no summary, that
// a migration completed over its downtime limit, as the summary does: a
// script saw exit status 0 and nothing on stderr (walk 79: 832 ms against
// 300).
func sayOverLimit(w io.Writer, i migrator.Info, paused, limit time.Duration) {
	if i.Status != migrator.StatusCompleted || limit <= 0 {
		return
	}
	// The guest's own pause where it was measured (given --dest-qmp),
	// else the engine's downtime: not one longer than the whole
	// migration, which saneDowntime has warned of (review 81).
	what, d := "the guest was paused for", paused.Round(time.Millisecond)
	if paused < 0 {
		what, d = "its downtime was", time.Duration(i.Downtime)*time.Millisecond
		if i.Downtime > i.TotalTime {
			return
		}
	}
	if d > limit {
		fmt.Fprintf(w, "pagecast: the migration completed over its downtime limit: %s %v, %v over the %v limit\n", what, d, (d - limit).Round(time.Millisecond), limit)
	}
}

// writeSummary prints a finished migration; plan is the QEMU mapping used,
// nil for pagecast's monitor. For QEMU, i.CPUThrottlePercentage is the
// highest seen (QEMU leaves it out of its last reply).
func writeSummary(w io.Writer, i migrator.Info, plan *migrator.QEMUPlan, paused, limit time.Duration) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	ms := func(v int64) string { return (time.Duration(v) * time.Millisecond).String() }
	// A pause past the limit is said where it is printed: the stop's
	// reason ("… fit the downtime limit") is what the engine expected.
	over := func(d time.Duration) string {
		if limit <= 0 || d <= limit {
			return ""
		}
		return fmt.Sprintf(" (over the %v limit by %v)", limit, (d - limit).Round(time.Millisecond))
	}
	fmt.Fprintf(tw, "status\t%s\n", i.Status)
	fmt.Fprintf(tw, "total time\t%s\n", tableMS(i.TotalTime))
	fmt.Fprintf(tw, "downtime\t%s%s\n", downtimeString(i), over(time.Duration(i.Downtime)*time.Millisecond))
	if paused >= 0 {
		fmt.Fprintf(tw, "guest paused\t%s (the source's STOP to the destination's RESUME)%s\n", paused.Round(time.Millisecond), over(paused.Round(time.Millisecond)))
	}
	if i.Pagecast != nil && i.Pagecast.HeldPaused && i.Status == migrator.StatusCompleted {
		fmt.Fprintf(tw, "guest\theld paused at the destination, as it was stopped on the source during the migration (QMP cont there runs it)\n")
	}
	fmt.Fprintf(tw, "setup time\t%s\n", ms(i.SetupTime))
	if r := i.RAM; r != nil {
		rate := ""
		if i.TotalTime > 0 && r.Transferred > 0 {
			// What the link or the engine managed, to set beside a
			// cap or auto's probe (walk 125: worked out by hand).
			rate = fmt.Sprintf(", %s/s over the total time", units.FormatBytes(float64(r.Transferred)/(float64(i.TotalTime)/1e3)))
		}
		fmt.Fprintf(tw, "transferred\t%s (%d bytes%s)\n", units.FormatBytes(float64(r.Transferred)), r.Transferred, rate)
		fmt.Fprintf(tw, "pages\t%d whole, %d zero\n", r.Normal, r.Duplicate)
		syncs := " (QEMU's: about one a round)"
		if i.Pagecast != nil {
			syncs = " (dirty log harvests: one an epoch, each 100 ms after the last ended)"
		}
		fmt.Fprintf(tw, "dirty syncs\t%d%s\n", r.DirtySyncCount, syncs)
	}
	if x := i.Pagecast; x != nil {
		fmt.Fprintf(tw, "mode\t%s\n", x.Mode)
		rounds := fmt.Sprint(x.Round)
		if i.Status == migrator.StatusCompleted && x.Round > 1 {
			// The switch-over counts as a round: a walk read "rounds 31"
			// beside "round cap 30 reached" as one too many.
			rounds = fmt.Sprintf("%d: %d with the guest running, then the switch-over", x.Round, x.Round-1)
		}
		fmt.Fprintf(tw, "rounds\t%s (pages per round %s)\n", rounds, roundList(x.RoundPages))
		if x.DeferredAll > 0 {
			fmt.Fprintf(tw, "deferred\t%d page sends held back\n", x.DeferredAll)
		}
		if i.CPUThrottlePercentage > 0 {
			fmt.Fprintf(tw, "cpu throttle\t%d%% at the end (lifted)\n", i.CPUThrottlePercentage)
		}
		writeSlowdown(tw, x.Slowdown, i)
		fmt.Fprintf(tw, "stopped because\t%s\n", readableBytes(x.StopReason))
		if x.Verified && x.CheckTime > 0 {
			fmt.Fprintf(tw, "verified\ttrue (the memory check took %s of the total, after the switch-over)\n", ms(x.CheckTime))
		} else {
			fmt.Fprintf(tw, "verified\t%v\n", x.Verified)
		}
	}
	if plan != nil {
		fmt.Fprintf(tw, "mode\t%s (QEMU's migration)\n", plan.Mode)
		caps := "none"
		if len(plan.Capabilities) > 0 {
			caps = strings.Join(plan.Capabilities, ", ")
		}
		fmt.Fprintf(tw, "qemu capabilities\t%s\n", caps)
		if pp := qemuParamList(plan.Parameters); pp != "" {
			fmt.Fprintf(tw, "qemu parameters\t%s\n", pp)
		}
		if plan.Forced {
			fmt.Fprintf(tw, "stopped because\tround cap: switch-over forced after %d dirty syncs (downtime-limit raised)\n", plan.MaxSyncs)
			if r := i.RAM; r != nil && r.DowntimeBytes > 0 {
				// QEMU's stop-and-copy is not rate limited: what it sent
				// then went at the link's own pace, past the cap.
				fmt.Fprintf(tw, "stop-and-copy\t%s sent while the guest was stopped, not held to --bandwidth (QEMU does not limit its stop-and-copy)\n",
					units.FormatBytes(float64(r.DowntimeBytes)))
			}
		}
		if r := i.RAM; r != nil && (r.PostcopyBytes > 0 || r.PostcopyRequests > 0) {
			fmt.Fprintf(tw, "post-copy\t%s sent, %d pages pulled by the destination\n", units.FormatBytes(float64(r.PostcopyBytes)), r.PostcopyRequests)
			if plan.Switched != "" {
				fmt.Fprintf(tw, "switched\tto post-copy: %s\n", plan.Switched)
			}
		} else if slices.Contains(plan.Capabilities, migrator.CapPostcopyRAM) && i.Status == migrator.StatusCompleted {
			fmt.Fprintf(tw, "post-copy\tnone: pre-copy completed before the switch to post-copy\n")
		}
		if i.CPUThrottlePercentage > 0 {
			fmt.Fprintf(tw, "cpu throttle\t%d%% at most (lifted)\n", i.CPUThrottlePercentage)
		}
		writeSlowdown(tw, plan.Slowdown, i)
		// pagecast's engine says verified true or false; QEMU's
		// migration compares nothing, which the summary did not say
		// (walk 80: a 4-vCPU Linux guest crashed on the destination of a
		// migration summed up as completed).
		// "not checked", not "no": no read it as a failed check (walk 121).
		unchecked := "not checked: QEMU's own migration does not compare the memory (pagecast's engine does)"
		if plan.LosesWrites {
			unchecked += "; and this QEMU's migration loses some writes of a guest under TCG (the warning on stderr)"
		}
		fmt.Fprintf(tw, "verified\t%s\n", unchecked)
	}
	tw.Flush()
}

// qemuParamList lists the migration parameters a QEMU plan set beyond
// bandwidth and downtime, which the summary shows already.
func qemuParamList(p migrator.QEMUParams) string {
	var l []string
	if p.XBZRLECacheSize > 0 {
		l = append(l, "xbzrle-cache-size "+units.FormatBytes(float64(p.XBZRLECacheSize)))
	}
	if p.CPUThrottleInitial > 0 {
		l = append(l, fmt.Sprintf("cpu-throttle-initial %d", p.CPUThrottleInitial))
	}
	if p.CPUThrottleIncrement > 0 {
		l = append(l, fmt.Sprintf("cpu-throttle-increment %d", p.CPUThrottleIncrement))
	}
	if p.CPUThrottleTailslow != nil {
		l = append(l, fmt.Sprintf("cpu-throttle-tailslow %v", *p.CPUThrottleTailslow))
	}
	return strings.Join(l, ", ")
}

// saneDowntime mends a QEMU migration's downtime longer than the whole
// migration, which is none: QEMU 7.2 said, once in three post-copy runs,
// its clock since boot, 13h59m of a 4.9 s migration whose guest paused
// 13 ms (walk 78). The guest's own pause (paused; negative: not known)
// stands for it where known. It says what it did, or "" where the
// downtime is sane.
func saneDowntime(info *migrator.Info, paused time.Duration) string {
	if info.TotalTime <= 0 || info.Downtime <= info.TotalTime {
		return ""
	}
	reported, total := time.Duration(info.Downtime)*time.Millisecond, time.Duration(info.TotalTime)*time.Millisecond
	if paused < 0 {
		return fmt.Sprintf("warning: QEMU reported a downtime of %v, longer than the whole migration (%v): not one, and the guest's own pause is not known (give --dest-qmp)", reported, total)
	}
	info.Downtime = paused.Round(time.Millisecond).Milliseconds() // as the summary rounds it
	return fmt.Sprintf("note: QEMU reported a downtime of %v, longer than the whole migration (%v): not one; the downtime said is the guest's own pause", reported, total)
}

// downtimeString is a migration's downtime, which query-migrate gives in
// whole milliseconds: a completed one of 0 paused the guest under 1 ms
// (a tsmc switch-over of a small guest on loopback).
func downtimeString(i migrator.Info) string {
	if i.Downtime == 0 && i.Status == migrator.StatusCompleted {
		return "<1ms"
	}
	return (time.Duration(i.Downtime) * time.Millisecond).String()
}

// slowdownString is the share of its vCPU time a migrated guest lost while
// it ran (migrator.Info.GuestSlowdown), or "-" where Info does not say.
func slowdownString(i migrator.Info) string {
	if i.Pagecast == nil {
		return "-"
	}
	return shareString(i.Pagecast.Slowdown, i)
}

// shareString is s's share of the time of migration i, or "-" without a
// vCPU count.
func shareString(s migrator.Slowdown, i migrator.Info) string {
	if s.VCPUs <= 0 {
		return "-"
	}
	return percent(s.Share(i.TotalTime, i.Downtime))
}

// writeSlowdown writes the summary's line on what the guest lost.
func writeSlowdown(tw io.Writer, s migrator.Slowdown, i migrator.Info) {
	if s.VCPUs > 0 {
		vcpus := fmt.Sprintf("%d vCPUs", s.VCPUs)
		if s.VCPUs == 1 {
			vcpus = "its one vCPU"
		}
		fmt.Fprintf(tw, "guest slowed\t%s of its vCPU time while it ran (throttle %v, post-copy faults %v, over %s)\n", shareString(s, i),
			time.Duration(s.ThrottleTime)*time.Millisecond, time.Duration(s.FaultTime)*time.Millisecond, vcpus)
	}
}

// percent is a share of 0 to 1 in whole percent, "<1%" where it is under
// one but not none.
func percent(f float64) string {
	if f > 0 && f < 0.005 {
		return "<1%"
	}
	return fmt.Sprintf("%.0f%%", 100*f)
}

// writeMigrationTable prints migrations side by side, one row each.
func writeMigrationTable(w io.Writer, infos []migrator.Info) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "mode\ttotal\tdowntime\tsetup\tbytes\trounds\tpages per round\tdeferred\tthrottle\tpulled\tguest slowed\tverified\t")
	for _, i := range infos {
		ms := tableMS
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%v\t%d\t%d%%\t%d\t%s\t%v\t\n", i.Pagecast.Mode, ms(i.TotalTime), downtimeString(i),
			ms(i.SetupTime), units.FormatBytes(float64(i.RAM.Transferred)), i.Pagecast.Round, roundList(i.Pagecast.RoundPages),
			i.Pagecast.DeferredAll, i.CPUThrottlePercentage, i.RAM.PostcopyRequests, slowdownString(i), i.Pagecast.Verified)
	}
	tw.Flush()
}

// roundList shows pages per round, the middle of a long list elided.
func roundList(pages []uint64) string {
	const head, tail = 5, 2
	if len(pages) <= head+tail+1 {
		return fmt.Sprint(pages)
	}
	return fmt.Sprintf("%v … %d more … %v", pages[:head], len(pages)-head-tail, pages[len(pages)-tail:])
}

// qmpGone says whether err is a QMP connection that broke: the process
// at its other end, the VM, exited or was killed.
func qmpGone(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Net == "unix" &&
		(errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET)) || errors.Is(err, io.EOF) && strings.Contains(err.Error(), "query-migrate")
}

// qemuFaultTime takes into plan's slowdown what QEMU's post-copy cost the
// guest, which the destination dst counted (nil: not known).
func qemuFaultTime(plan *migrator.QEMUPlan, dst qmp.Monitor) {
	if !plan.Postcopy || dst == nil {
		return
	}
	ms, ok, err := migrator.QEMUFaultTime(dst)
	switch {
	case err != nil:
		slog.Info("post-copy's waits are not known", "err", err)
	case ok:
		plan.Slowdown.FaultTime = ms
	}
}

// destAnswerWait is how long destAnswers waits for the destination QEMU's
// reply.
const destAnswerWait = 2 * time.Second

// destAnswers asks the destination QEMU for its run state: nil if it
// answers within wait, migrator.ErrNoAnswer if it does not (a stopped
// QEMU keeps its connection and says nothing), else why it cannot be
// asked (gone). A question left unanswered waits in the background for
// the monitor's answer or its end.
func destAnswers(dst qmp.Monitor, wait time.Duration) error {
	_, err := within(wait, func() ([]byte, error) { return dst.Run([]byte(`{"execute":"query-status"}`)) })
	return err
}

// within is f, given up after wait (migrator.ErrNoAnswer): a QEMU whose
// monitor does not answer would hold the caller. A call given up on is
// left to its goroutine, which ends with the monitor's answer or its
// connection.
func within[T any](wait time.Duration, f func() (T, error)) (T, error) {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	v, ok, err := unlessDone(ctx, f, nil)
	if !ok {
		return v, migrator.ErrNoAnswer
	}
	return v, err
}

// readableBytes writes the byte counts of a stop reason ("9031680 bytes
// pending", "about 6802884 coded") in binary units, as the summary's other
// figures are; query-migrate keeps the exact counts (found by a new-user
// walk).
func readableBytes(s string) string {
	return byteCount.ReplaceAllStringFunc(s, func(m string) string {
		num, word, _ := strings.Cut(m, " ")
		n, err := strconv.ParseUint(num, 10, 64)
		if err != nil {
			return m
		}
		if word == "bytes" {
			return units.FormatBytes(float64(n))
		}
		return units.FormatBytes(float64(n)) + " " + word
	})
}

var byteCount = regexp.MustCompile(`\b\d{4,} (bytes|coded)\b`)

// sameQEMU says whether two QMP monitors are the same QEMU's: they name a
// vCPU thread in common (query-cpus-fast). A monitor that does not answer
// is taken for another.
func sameQEMU(a, b qemu.Runner) bool {
	threads := func(m qemu.Runner) []int {
		var cpus []struct {
			ThreadID int `json:"thread-id"`
		}
		if qemu.QMP(m, "query-cpus-fast", nil, &cpus) != nil {
			return nil
		}
		var ids []int
		for _, c := range cpus {
			if c.ThreadID != 0 {
				ids = append(ids, c.ThreadID)
			}
		}
		return ids
	}
	ta := threads(a)
	for _, id := range threads(b) {
		if slices.Contains(ta, id) {
			return true
		}
	}
	return false
}

// autoStillEvery is how often migrate says that pagecast's monitor is
// still choosing for mode auto.
const autoStillEvery = 10 * time.Second

// sayEvery writes format, given the time passed, to w every interval
// until the function it returns is called; that function returns once
// nothing more will be written.
func sayEvery(w io.Writer, interval time.Duration, format string) (stop func()) {
	done, stopped := make(chan struct{}), make(chan struct{})
	start := time.Now()
	go func() {
		defer close(stopped)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				fmt.Fprintf(w, format, time.Since(start).Round(time.Second))
			}
		}
	}()
	return func() { close(done); <-stopped }
}

// leftOrComing refuses a source whose guest has migrated away already
// (postmigrate) or has yet to come (inmigrate), saying so as the engine
// does (migrator.NotRunning, which --json's outcome reads).
func leftOrComing(mon qemu.Runner) error {
	if st, err := qemu.RunState(mon); err == nil && (st == "postmigrate" || st == "inmigrate") {
		return migrator.NotRunning(st)
	}
	return nil
}
