package main

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/digitalocean/go-qemu/qmp"
	"github.com/urfave/cli/v2"

	"github.com/pagecast/pagecast/bitmap"
	"github.com/pagecast/pagecast/internal/printable"
	"github.com/pagecast/pagecast/internal/units"
	"github.com/pagecast/pagecast/migrationmetrics"
	"github.com/pagecast/pagecast/migrator"
	"github.com/pagecast/pagecast/migrator/mecom"
	"github.com/pagecast/pagecast/qemu"
	"github.com/pagecast/pagecast/qemuguest"
	"github.com/pagecast/pagecast/simulate"
	"github.com/pagecast/pagecast/tcg"
	"github.com/pagecast/pagecast/trace"
)

// Engines that can move a QEMU VM's memory.
const (
	enginePagecast = "pagecast" // pagecast's rounds over QEMU's shared RAM, QEMU's migration for device state only
	engineQEMU     = "qemu"     // QEMU's own migration, pagecast's modes mapped onto its capabilities
)

// errTSMCOnQEMU says why tsmc on a QEMU VM is QEMU's post-copy.
var errTSMCOnQEMU = errors.New("tsmc's stage 3 (and MODE+postcopy's) cannot run on a QEMU destination with pagecast's engine: " +
	"userfaultfd sees only faults on pagecast's own mapping of the shared RAM, not the guest's through QEMU's, " +
	"so tsmc on QEMU uses QEMU's post-copy (--engine qemu)")

// chooseEngine picks the engine for a QEMU source: pagecast's where its RAM
// is shared memory, the mode needs no post-copy and the destination is not
// a QEMU listening with its own -incoming (listens: destListening's
// address, "" if not or unknown), else QEMU's own. --engine pagecast is
// refused where that QEMU listens on the port --to (to) dials, and taken
// as asked elsewhere (pagecast receive in front of a QEMU waiting with
// -incoming tcp). Under TCG before QEMU 9.0, whose own migration loses
// writes, auto refuses where it would take QEMU's for want of pagecast's
// (not for a post-copy mode, which only QEMU's runs on QEMU: it warns). It
// returns the attached source for pagecast's engine (close it), and why.
func chooseEngine(flag string, mon qmp.Monitor, mode, listens, to string) (src *qemuguest.Source, engine, why string, err error) {
	if flag != "auto" && flag != enginePagecast && flag != engineQEMU {
		return nil, "", "", fmt.Errorf("--engine %q: want auto, pagecast or qemu", flag)
	}
	if st, busy := qemuMigrating(mon); busy {
		// Two migrations of one guest: pagecast's engine ran its rounds
		// beside QEMU's, 3.5 minutes to its cap, and failed at the
		// switch-over (found by a new-user walk).
		advice := "wait for it to end, or migrate_cancel it"
		if strings.HasPrefix(st, "postcopy") {
			// The guest runs on its destination, part of its memory
			// here: a cancel loses it (QEMU 7.2 takes one).
			advice = "wait for it to end: in post-copy the guest runs on its destination, and a migrate_cancel now would lose it"
		}
		return nil, "", "", fmt.Errorf("the source QEMU's own migration is in progress (query-migrate: %s): one migration of a guest at a time; %s", st, advice)
	}
	post := migrator.NeedsPostcopy(mode)
	_, qemuErr := migrator.PlanQEMU(migrator.Params{Mode: mode}, 64<<20) // nil where QEMU's own migration runs the mode
	if post && qemuErr != nil {
		// Neither engine runs it: say so once, not "needs pagecast's
		// engine" from QEMU's and "use --engine qemu" from pagecast's.
		return nil, "", "", fmt.Errorf("migration mode %q cannot run on a QEMU source with either engine: pagecast's post-copy cannot pull pages into QEMU's memory "+
			"(userfaultfd sees faults only on pagecast's own mapping of the shared RAM), and QEMU's own post-copy runs tsmc and precopy+postcopy only; "+
			"on QEMU choose one of those, or run %s on pagecast's own monitor (vm run, with KVM)", mode, mode)
	}
	lose := "" // where auto would take QEMU's migration for want of pagecast's and it loses writes, why
	if flag == "auto" {
		lose = migrator.TCGLosesWrites(mon)
	}
	switch {
	case flag == engineQEMU:
		if busy := enginesMigration(mon); busy != nil {
			return nil, "", "", busy
		}
		return nil, engineQEMU, "--engine qemu", nil
	case post && flag == enginePagecast:
		return nil, "", "", errTSMCOnQEMU
	case post:
		return nil, engineQEMU, "post-copy on QEMU is QEMU's: pagecast's stage 3 cannot pull pages into QEMU's memory", nil
	case listens != "" && flag == enginePagecast && !sameTCPPort(listens, to):
		// Another port: perhaps pagecast receive in front of a QEMU
		// waiting with -incoming tcp. Taken as asked.
	case listens != "" && flag == enginePagecast:
		return nil, "", "", fmt.Errorf("--engine pagecast: the destination QEMU listens on %s with its own -incoming, which takes QEMU's migration only "+
			"(pagecast's stream would end it: \"Not a migration stream\"): give --engine qemu, or have it wait for pagecast's engine (vm run --incoming without --engine qemu, or pagecast receive)", listens)
	case listens != "" && qemuErr != nil:
		// QEMU's plan would refuse it, saying to take pagecast's engine,
		// which the destination refuses (review 88: the advice looped).
		return nil, "", "", fmt.Errorf("migration mode %q needs pagecast's engine, and the destination QEMU listens on %s with its own -incoming, which takes QEMU's migration only: "+
			"have the destination wait for pagecast's engine (vm run --incoming without --engine qemu, or pagecast receive in front of a QEMU waiting with -incoming defer), or give a mode QEMU's migration runs (%s)", mode, listens, qemuModes())
	case listens != "" && lose != "":
		// As where pagecast's engine cannot run, below: auto takes QEMU's
		// migration for want of pagecast's nowhere it loses writes
		// (walk 114: 15 and 22 pages stale, and the guest's kernel
		// crashed on the destination, both times).
		return nil, "", "", fmt.Errorf("the destination QEMU listens on %s with its own -incoming, which takes QEMU's migration only, and %s; "+
			"--engine auto does not take it: have the destination wait for pagecast's engine (vm run --incoming without --engine qemu, or pagecast receive in front of a QEMU waiting with -incoming defer), "+
			"%sor give --engine qemu", listens, lose, sourceNeeds(mon))
	case listens != "":
		return nil, engineQEMU, fmt.Sprintf("the destination QEMU listens on %s with its own -incoming, which takes QEMU's migration only", listens), nil
	}
	src, err = qemuguest.New(mon)
	if err == nil {
		// The dirty hook must be there too: the TCG plugin, or eBPF on KVM.
		var log migrator.DirtyLog
		if err = src.CanSend(); err == nil {
			log, err = src.StartDirtyLog()
		}
		if err == nil {
			log.Close()
			return src, enginePagecast, "the source QEMU's guest RAM is shared memory and its dirty pages can be tracked", nil
		}
		src.Close()
	}
	if flag == enginePagecast {
		return nil, "", "", fmt.Errorf("pagecast's engine on the source QEMU: %w", err)
	}
	if errors.Is(err, qemuguest.ErrStateCarriesRAM) && lose != "" {
		// As for a busy area, below (review 113).
		return nil, "", "", fmt.Errorf("pagecast's engine cannot send this guest (%w); --engine auto does not fall back to QEMU's own migration, "+
			"which under TCG before QEMU 9.0 loses some of the guest's writes: restart the QEMU with its RAM in a file, or give --engine qemu", err)
	}
	if errors.Is(err, tcg.ErrAreaBusy) {
		// A profile holds the plugin's area for a while: no reason to
		// move the guest by QEMU's own migration instead, which loses
		// writes under TCG before QEMU 9.0 (found by a new-user walk).
		return nil, "", "", fmt.Errorf("pagecast's engine cannot run on the source QEMU now (%w); --engine auto does not fall back to QEMU's own migration for that: "+
			"wait for it to end, or give --engine qemu (QEMU's own migration, which under TCG before QEMU 9.0 loses some of the guest's writes)", err)
	}
	if lose != "" {
		// Nor for any other want of pagecast's (review 115: a source
		// without the plugin went to QEMU's, warned only).
		// Its RAM's options are in err where they are what it lacks
		// (walk 152: said twice, two ways).
		ram := "its RAM in a shared file (-object memory-backend-file,id=ram,size=SIZE,mem-path=/dev/shm/FILE,share=on -machine memory-backend=ram)"
		if errors.Is(err, qemuguest.ErrNotShared) || errors.Is(err, qemuguest.ErrStateCarriesRAM) {
			ram = "its RAM as above"
		}
		return nil, "", "", fmt.Errorf("pagecast's engine cannot run on the source QEMU (%w); --engine auto does not fall back to QEMU's own migration, and %s; "+
			"start the QEMU with pagecast's plugin (pagecast plugin) and %s, "+
			"or give --engine qemu", err, lose, ram)
	}
	return nil, engineQEMU, autoCannot + err.Error(), nil
}

// sourceNeeds is what to give the source QEMU behind mon for pagecast's
// engine, said before an "or", or "" where it runs there now.
func sourceNeeds(mon qmp.Monitor) string {
	src, err := qemuguest.New(mon)
	if err == nil {
		err = src.CanSend()
		src.Close()
	}
	if err == nil || errors.Is(err, tcg.ErrAreaBusy) {
		return ""
	}
	return fmt.Sprintf("with the source started for it (its plugin, pagecast plugin, and its RAM in a shared file; now: %v), ", err)
}

// autoCannot begins chooseEngine's reason where auto takes QEMU's
// migration because pagecast's engine cannot run on the source.
const autoCannot = "pagecast's engine cannot run on it: "

// enginesMigration is an error where pagecast's engine is migrating the
// source QEMU mon (a pagecast migrate holds its plugin's area, or its
// dirty log's lock under KVM), nil
// otherwise: QEMU's own migration started beside it moved the guest, and
// the engine ran its rounds to its cap and failed (found by a new-user
// walk). A profile holding the area does not stop QEMU's migration.
func enginesMigration(mon qmp.Monitor) error {
	if mon == nil {
		return nil
	}
	src, err := qemuguest.New(mon)
	if err != nil {
		return nil // no plugin, or RAM not shared: no engine of pagecast's runs on it
	}
	defer src.Close()
	// Under KVM the dirty log's lock file is held as the plugin's area is
	// under TCG; a dirty log this opens while no migration holds it lifts
	// only a killed pagecast's throttle (a live one's is locked) and
	// shares QEMU's dirty limit with any profile.
	log, err := src.StartDirtyLog()
	if err == nil {
		log.Close()
		return nil
	}
	var busy *tcg.BusyError
	if errors.As(err, &busy) && busy.Migrating() {
		return fmt.Errorf("pagecast's engine is migrating this VM already (%s holds its dirty log): one migration of a guest at a time; wait for it to end, or stop it (Ctrl-C)", busy.Holder)
	}
	return nil
}

// qemuMigrating reports whether QEMU's own migration is under way on mon
// (query-migrate neither none, nor ended, nor unsaid), and its status.
func qemuMigrating(mon qmp.Monitor) (string, bool) {
	st := qemuMigrationStatus(mon)
	return st, underway(st)
}

// underway says whether a query-migrate status is of a migration under
// way: neither none, nor ended, nor unsaid.
func underway(st string) bool {
	return st != "" && st != migrator.StatusNone && !migrationmetrics.Finished(st)
}

// qemuMigrationStatus is the status of QEMU's own migration on mon, ""
// where it does not say.
func qemuMigrationStatus(mon qmp.Monitor) string {
	if mon == nil {
		return ""
	}
	var r struct {
		Status string `json:"status"`
	}
	if qemu.QMP(mon, "query-migrate", nil, &r) != nil {
		return ""
	}
	return r.Status
}

// destListening is the address a destination QEMU listens on with its own
// -incoming (query-migrate's socket-address, tcp), where QEMU itself takes
// the stream, and exits on any other; "" where it does not: it waits with
// -incoming defer, or listens on the unix socket pagecast's receiver hands
// it the guest's state on, or did not say.
func destListening(dst qmp.Monitor) string {
	var r struct {
		Addr []struct {
			Type string `json:"type"`
			Host string `json:"host"`
			Port string `json:"port"`
		} `json:"socket-address"`
	}
	if dst == nil || qemu.QMP(dst, "query-migrate", nil, &r) != nil {
		return ""
	}
	for _, a := range r.Addr {
		if a.Type == "inet" {
			return "tcp:" + net.JoinHostPort(a.Host, a.Port)
		}
	}
	return ""
}

// sameTCPPort says whether two tcp:HOST:PORT addresses have one port.
func sameTCPPort(a, b string) bool {
	_, pa, erra := net.SplitHostPort(strings.TrimPrefix(a, "tcp:"))
	_, pb, errb := net.SplitHostPort(strings.TrimPrefix(b, "tcp:"))
	return erra == nil && errb == nil && pa == pb
}

// migrateWithEngine runs pagecast's engine in this process over a QEMU
// source: pages from its shared RAM, device state by QEMU's migration with
// x-ignore-shared, to a `pagecast vm run --monitor qemu --incoming`.
// metrics, if not nil, follows the migration; given the destination QEMU's
// monitor dst (the source's is mon), the summary has the guest's own pause.
func migrateWithEngine(c *cli.Context, src *qemuguest.Source, p migrator.Params, clientTLS *tls.Config, metrics *migrationmetrics.Exporter, mon, dst qmp.Monitor, ctl net.Listener, out *migrationOutcome) error {
	if ok, st := src.Running(); !ok && st == "paused" {
		// pagecast's engine moves a running guest; QEMU's own migration
		// takes a paused one as it is.
		return errors.New("migrate: virtual machine is paused, not running: pagecast's engine migrates a running guest only; " +
			"resume it (QMP cont), or migrate it paused with --engine qemu (QEMU's own migration, to a vm run --incoming --engine qemu destination, where it arrives paused)")
	}
	if migrator.Throttles(p.Mode) {
		// Refused before any round: it failed once they had run.
		if err := src.CanThrottle(); err != nil {
			return fmt.Errorf("--mode %s: %w; or take another mode, or QEMU's own auto-converge (--engine qemu, to a QEMU waiting with -incoming), which QEMU applies itself (the guest keeps running on the source)", p.Mode, err)
		}
	}
	if w := switchoverWarning(p.DowntimeLimit); w != "" {
		fmt.Fprintln(c.App.ErrWriter, w)
	}
	ctx, cancel := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer cancel()
	var choice *simulate.Choice
	if p.Mode == modeAuto {
		if metrics != nil {
			// In setup, as mode auto, while it watches the guest and
			// predicts (seconds): the mode label turns to the one chosen
			// once the migration reports it.
			metrics.Begin(time.Now(), migrationmetrics.EnginePagecast, modeAuto, p.MaxBandwidth)
		}
		ch, err := chooseLive(ctx, c, src, p)
		gerr := src.Gone()
		// A QEMU killed closes its monitor's socket a moment before it
		// is seen to have exited (CI 106: "connection reset by peer").
		for deadline := time.Now().Add(time.Second); err != nil && gerr == nil && ctx.Err() == nil && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			gerr = src.Gone()
		}
		if gerr != nil {
			out.Guest = guestLost
			// It said "virtual machine is qmp query-status: write …: broken pipe, not running".
			err = fmt.Errorf("%w while auto watched the guest: nothing was migrated, and the guest went with it", gerr)
		} else if err != nil && ctx.Err() != nil {
			err = errors.New("interrupted while auto watched the guest and weighed the modes: nothing was migrated, the guest runs on at the source")
		}
		if err != nil {
			if metrics != nil {
				metrics.Observe(migrator.Info{Status: migrator.StatusFailed, ErrorDesc: err.Error()})
			}
			return err
		}
		choice, p.Mode = &ch, ch.Mode
		out.Mode = ch.Mode
	}
	cfg := migrator.Config{Mode: p.Mode, MaxBandwidth: p.MaxBandwidth, DowntimeLimit: p.DowntimeLimit,
		MaxRounds: p.MaxRounds, Profile: p.Profile, Log: slog.New(engineLog{slog.Default().Handler()})}
	if choice != nil {
		cfg.Auto = choice.Report()
	}
	cfg.TLS = clientTLS
	if metrics != nil && choice == nil {
		metrics.Begin(time.Now(), migrationmetrics.EnginePagecast, p.Mode, p.MaxBandwidth)
	}
	var pause *migrator.PauseWatch
	if dst != nil {
		var err error
		if pause, err = migrator.WatchPause(mon, dst); err != nil {
			return err
		}
		defer pause.Close()
	}
	m, err := migrator.Outgoing(src, c.String("to"), cfg)
	if err != nil {
		if metrics != nil {
			metrics.Observe(migrator.Info{Status: migrator.StatusFailed, ErrorDesc: err.Error()})
		}
		return err
	}
	control := serveControl(ctl, engineControl(m, metrics), slog.New(engineLog{slog.Default().Handler()}), c.App.ErrWriter)
	defer control.Stop()
	followed := make(chan struct{})
	if metrics != nil {
		defer func() { <-followed }()
		go func() { defer close(followed); metrics.Follow(context.Background(), m.Info, 200*time.Millisecond) }()
	} else {
		close(followed)
	}
	// --timeout: pagecast's engine has no post-copy on a QEMU source, so
	// a cancel never loses the guest here.
	follow := ctx
	if d := c.Duration("timeout"); d > 0 {
		var stop context.CancelFunc
		follow, stop = context.WithTimeoutCause(follow, d, fmt.Errorf("%w: cancelled", timedOut(d)))
		defer stop()
	}
	if d := c.Duration("progress-timeout"); d > 0 {
		var stop context.CancelCauseFunc
		follow, stop = context.WithCancelCause(follow)
		defer stop(nil)
		go func() {
			watch := progressWatch{d: d}
			tick := time.NewTicker(200 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-follow.Done():
					return
				case <-m.Done():
					return
				case now := <-tick.C:
					if watch.stuck(m.Info(), now) {
						stop(fmt.Errorf("%w: cancelled", watch.err()))
						return
					}
				}
			}
		}()
	}
	info, err := followMigration(follow, m, newProgressBar(c.App.ErrWriter, c.Bool("quiet")))
	if err != nil && ctx.Err() == nil && follow.Err() != nil && info.Status == migrator.StatusCancelled {
		err = context.Cause(follow)
		// Failed, as KubeVirt counts a migration past its completion
		// timeout, and as the failure alert sees it (walk 89).
		out.settled = migrator.StatusFailed
		if metrics != nil {
			<-followed // its last reply observed first
			metrics.Fail(oneLine(err))
		}
	}
	out.began = true
	p.DowntimeLimit = m.DowntimeLimit() // the one in force at the end (--control), failed or not
	out.DowntimeLimit = p.DowntimeLimit.Milliseconds()
	if info.Status != "" {
		out.ended(info)
	}
	if err != nil && src.Gone() != nil {
		out.Guest = guestLost
		return err // the engine says the source QEMU went, and the guest with it
	}
	held := info.Pagecast != nil && info.Pagecast.HeldPaused
	if err != nil && m.HandedOver() {
		// After the commit the source's copy stays paused (review 66:
		// said to keep running, and --json's guest said source).
		out.Guest = guestUnknown
		there := "runs it"
		if held {
			there = "holds it paused, as its user had paused it here,"
		}
		return fmt.Errorf("%w (the guest was handed over to the destination, which %s if the handover reached it; the source's copy stays paused)", err, there)
	}
	if err != nil {
		if ok, st := src.Running(); !ok && st != "" && !strings.ContainsAny(st, " :") { // a run state, not QMP's error
			// Stopped by QMP during the rounds, which this engine
			// leaves as it is (walk 114: said to keep running), or
			// not resumed (review 115).
			hint := ""
			if st == "paused" || st == "postmigrate" {
				hint = ": QMP cont runs it"
			}
			if held {
				return fmt.Errorf("%w (the guest stays on the source, paused, as it was stopped there during the migration; QEMU says %s%s)", err, st, hint)
			}
			return fmt.Errorf("%w (the guest stays on the source, %s%s)", err, st, hint)
		}
		return fmt.Errorf("%w (the guest keeps running on the source)", err)
	}
	paused := time.Duration(-1)
	if !held { // held paused, the destination sends no RESUME
		paused = guestPaused(pause)
	}
	if metrics != nil {
		metrics.ObservePause(paused)
	}
	out.paused(paused)
	if uerr := unconfirmed(info); uerr != nil {
		out.Guest = unconfirmedGuest(info)
		// A vm run of the source waits for a second signal before it
		// stops QEMU, and says why (walk 123).
		src.LeaveUnconfirmed()
	}
	w := c.App.Writer
	if c.Bool("json") {
		// auto's prediction went to stderr: its outcome goes there too
		// (walk 121: only the JSON had it).
		sayOverLimit(c.App.ErrWriter, info, paused, p.DowntimeLimit)
		w = c.App.ErrWriter
	} else {
		writeSummary(w, info, nil, paused, p.DowntimeLimit)
	}
	if x := info.Pagecast; x != nil && x.Auto != nil { // query-migrate's report of the choice
		if p, ok := x.Auto.Predicted(); ok {
			writePredictedAgainst(w, p, info, paused)
			control.autoNote(w)
		}
	}
	return unconfirmed(info)
}

// engineLog is the log of the engine migrate runs in-process: its info
// and error lines ("migration completed", "migration failed; the guest
// keeps running here") say what migrate's summary or its error says
// anyway, so they go only at --log-level debug; its warnings always go,
// but those on --profile, which migrate has said before it began.
type engineLog struct{ slog.Handler }

func (h engineLog) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == migrator.ProfileMisfit || r.Message == migrator.ProfileDamaged {
		return nil
	}
	return h.Handler.Handle(ctx, r)
}

func (h engineLog) Enabled(ctx context.Context, l slog.Level) bool {
	if (l == slog.LevelInfo || l == slog.LevelError) && !h.Handler.Enabled(ctx, slog.LevelDebug) {
		return false
	}
	return h.Handler.Enabled(ctx, l)
}

func (h engineLog) WithAttrs(as []slog.Attr) slog.Handler { return engineLog{h.Handler.WithAttrs(as)} }
func (h engineLog) WithGroup(name string) slog.Handler    { return engineLog{h.Handler.WithGroup(name)} }

// modeAuto is --mode auto.
const modeAuto = migrator.ModeAuto

// qemuSwitchover is what auto expects a switch-over to cost on QEMU besides
// moving memory and the guest's state (which the simulation sends as
// bytes): stopping QEMU and the last harvest, the destination's load of the
// state and the commit. Measured on 2026-12-02 (pagecast migrate
// --log-level debug, TCG, 64 MiB guests at 32 MiB/s in precopy, mecom and
// predictive, a 1 GiB one at 128 MiB/s): 15-25 ms beyond the pages' and the
// state's time at the link's rate, since QEMU saves the state while the
// last pages go and the destination readies its incoming migration before
// the pause; the guest's own view of its pause was 0-5 ms longer than the
// engine's downtime. (It was 30 ms, measured at 28-35 ms on 2026-12-01
// before those two changes, and 200 ms before that, on an earlier machine
// and engine.)
const qemuSwitchover = 20 * time.Millisecond

// switchoverWarning says, before a migration of a QEMU guest by
// pagecast's engine starts, that a downtime limit of limit cannot be kept
// (the switch-over's own cost is as much: walk 123's auto promised 20 ms
// "within the 20ms limit", and the guest paused 44 ms), or, up to twice
// that cost, may not be. Empty otherwise.
func switchoverWarning(limit time.Duration) string {
	switch {
	case limit <= 0 || limit > 2*qemuSwitchover:
		return ""
	case limit > qemuSwitchover:
		// Walk 124: walk 123's pause was 44 ms, some 30 ms beyond its
		// pages on a loaded host; a limit of 21-40 ms was not said.
		return fmt.Sprintf("pagecast: warning: --downtime-limit %v leaves little beyond what a switch-over costs on QEMU besides the pages (some %v, more on a loaded host: stopping QEMU, its device state, the commit): "+
			"the downtime may be over it", limit, qemuSwitchover)
	}
	return fmt.Sprintf("pagecast: warning: --downtime-limit %v is no more than a switch-over costs on QEMU besides the pages (some %v: stopping QEMU, its device state, the commit): "+
		"no migration of this guest can keep within it, and its downtime will be over it", limit, qemuSwitchover)
}

// chooseLive watches the source's dirty pages for --observe epochs of
// 100 ms, simulates every mode pagecast's engine runs on QEMU on what it
// saw (the guest's content measured from its RAM), and returns the best by
// --prefer, having printed the predictions and why.
func chooseLive(ctx context.Context, c *cli.Context, src *qemuguest.Source, p migrator.Params) (simulate.Choice, error) {
	n := c.Int("observe")
	if n < 1 {
		return simulate.Choice{}, fmt.Errorf("--observe %d: auto needs at least one epoch", n)
	}
	fmt.Fprintf(c.App.ErrWriter, "pagecast: auto: watching the guest for %v …\n", time.Duration(n)*autoEpoch)
	lead := startLead(src) // a sweep of memory goes on from the watch's end through the probes (Options.Lead)
	o, pages, fresh, err := watchGuest(ctx, src, n)
	lead.watched()
	if err != nil {
		return simulate.Choice{}, fmt.Errorf("--mode auto: %w", err)
	}
	// A switch-over on QEMU also stops QEMU and moves its device state
	// through QEMU's migration (qemuSwitchover).
	o.Bandwidth, o.DowntimeLimit, o.MaxRounds, o.Switchover = p.MaxBandwidth, p.DowntimeLimit, p.MaxRounds, qemuSwitchover
	o.PolicyTime = true   // the predictor's time holds up the live sender too
	o.Profile = p.Profile // --profile warms the predictive modes' predictor live, and so in their simulations
	modes := qemuAutoModes()
	// Measured before the page rate, which is measured last, nearest the
	// migration: the machine's load moves it.
	if err := src.CanThrottle(); err != nil {
		modes = slices.DeleteFunc(modes, migrator.Throttles)
		fmt.Fprintf(c.App.ErrWriter, "pagecast: auto: throttle left out: %v\n", err)
	} else if slices.ContainsFunc(modes, migrator.Throttles) {
		o.Response = probeThrottle(ctx, c.App.ErrWriter, src, o.Workload, lead.pace)
	}
	rateNote := ""
	if localDestination(c.String("to")) {
		// Both ends on this host: their CPU, shared with the guest,
		// may bound the migration before the link does; without a cap,
		// nothing else does.
		rates, err := probePageRate(ctx, src)
		switch {
		case err != nil && o.Bandwidth == 0:
			return simulate.Choice{}, fmt.Errorf("--mode auto: with no --bandwidth the engine's pace is the link, and %w", err)
		case err != nil:
			fmt.Fprintf(c.App.ErrWriter, "pagecast: auto: warning: %v: predicting at the link's rate alone\n", err)
		default:
			o.PageRate, o.PausedPageRate = rates.pages, rates.paused
			rateNote = fmt.Sprintf("; both ends on this host, whose CPU moved %.1fk pages/s, %s/s on the wire",
				rates.pages/1e3, units.FormatBytes(rates.bytes))
			if rates.paused > 0 {
				rateNote += fmt.Sprintf(", %.1fk pages/s with the guest paused (running, its vCPUs took %.1f of the %d cores pagecast may use)", rates.paused/1e3, rates.busy, rates.cores)
			}
			if o.Bandwidth == 0 {
				o.Bandwidth = noCap
				rateNote += ", no cap"
			}
		}
	}
	// Said, as throttle's absence is: a user who chose --prefer downtime
	// was not told that tsmc, with a fraction of its downtime, was never
	// weighed (walk 86).
	var postcopy []string
	for _, m := range simulate.AutoModes {
		if !slices.Contains(modes, m) {
			postcopy = append(postcopy, m)
		}
	}
	if len(postcopy) > 0 {
		fmt.Fprintf(c.App.ErrWriter, "pagecast: auto: %s left out: they need post-copy, which on a QEMU source only QEMU's own migration does, and auto runs pagecast's engine; QEMU's runs %s: ask for one by name, with --dest-qmp, to a destination QEMU listening with its own -incoming (vm run --engine qemu --incoming)\n",
			strings.Join(postcopy, ", "), qemuPostcopyModes())
	}
	predict := func(o simulate.Options) (simulate.Choice, error) {
		fmt.Fprintf(c.App.ErrWriter, "pagecast: auto: predicting %d modes from what was watched%s …\n", len(modes), atOnce(o, modes))
		settled := watchSims(&o, c.App.ErrWriter, "pagecast: auto:   ", progressEvery)
		if done := o.Done; done != nil {
			o.Done = func(r simulate.Result) {
				if ctx.Err() == nil { // interrupted, each simulation was "failed: migration cancelled" (walk 130)
					done(r)
				}
			}
		}
		o.Budget = predictBudget
		o.Lead = lead.since()
		choice, err := simulate.ChooseAmong(ctx, o, o.Workload, c.String("prefer"), modes)
		if err != nil {
			return choice, fmt.Errorf("--mode auto: %w", err)
		}
		settled(choice.Predictions)
		// A sweep went on while the modes were weighed: its choice is
		// predicted again from where it is now, and as long on as this
		// prediction took the first time.
		o.Progress, o.Done = nil, nil
		o.Lead = lead.since() + choice.Predicted().Wall
		if err := simulate.Repredict(ctx, o, &choice); err != nil {
			return choice, fmt.Errorf("--mode auto: %w", err)
		}
		return choice, nil
	}
	choice, err := predict(o)
	if err != nil {
		return choice, err
	}
	memory := src.MemoryBytes() / migrator.PageSize
	predicted := func() time.Duration { return time.Duration(choice.Predicted().Info.TotalTime) * time.Millisecond }
	if !c.IsSet("observe") {
		// --observe left to its default: a guest still writing new pages
		// is watched longer, as the note would advise.
		if m, say := rewatch(n, pages, fresh, memory, predicted(), choice.Predicted().Drift != 0); m > 0 {
			fmt.Fprintln(c.App.ErrWriter, "pagecast: auto: "+say)
			lead = startLead(src)
			if o, pages, fresh, err = watchAgain(ctx, src, m, o); err != nil {
				return simulate.Choice{}, fmt.Errorf("--mode auto: %w", err)
			}
			n = m
			lead.watched()
			if choice, err = predict(o); err != nil {
				return choice, err
			}
		}
	}
	w := textOut(c)
	fmt.Fprintf(w, "auto: predicted from %v of the guest (%d pages written; content %s%s):\n",
		time.Duration(n)*autoEpoch, pages, o.Content, rateNote)
	// Auto watches in fixed epochs: the note on short rounds has no advice.
	writeSimulationTableWith(w, o.Workload, choice.Predictions, choice.Mode, "", autoCheckRate)
	if choice.Again {
		writeAgain(w, choice.Mode)
	}
	fmt.Fprintf(w, "auto chose %s: %s\n\n", choice.Mode, choice.Why)
	if warn := growingNote(time.Duration(n)*autoEpoch, pages, fresh, memory, predicted(), choice.Predicted().Drift != 0); warn != "" {
		fmt.Fprintln(c.App.ErrWriter, "pagecast: auto: warning: "+warn)
	}
	return choice, nil
}

// leadClock tells how long a guest has run since auto's watch ended, at
// the pace it ran while watched: its vCPUs' CPU time since then over
// their share of the watch, where the guest says it (the throttle's probe
// held a sweeping guest back for most of its 1.5 s, which the wall time
// counted as sweeping: walk 131); else the wall time.
type leadClock struct {
	g          interface{ VCPUTime() (time.Duration, error) }
	cpu0, cpu1 time.Duration // at the watch's start and end
	t0, t1     time.Time
	pace       float64 // cores the vCPUs took while watched; 0: not known
}

// startLead starts a leadClock at the watch's start.
func startLead(g migrator.Guest) *leadClock {
	l := &leadClock{t0: time.Now()}
	if v, ok := g.(interface{ VCPUTime() (time.Duration, error) }); ok {
		if cpu, err := v.VCPUTime(); err == nil {
			l.g, l.cpu0 = v, cpu
		}
	}
	return l
}

// watched marks the watch's end.
func (l *leadClock) watched() {
	l.t1 = time.Now()
	if l.g == nil {
		return
	}
	cpu, err := l.g.VCPUTime()
	if err != nil || l.t1.Sub(l.t0) <= 0 {
		l.g = nil
		return
	}
	l.cpu1, l.pace = cpu, (cpu-l.cpu0).Seconds()/l.t1.Sub(l.t0).Seconds()
}

// since is how long the guest has run at its watched pace since the
// watch's end.
func (l *leadClock) since() time.Duration {
	if l.g != nil && l.pace > 0.05 {
		if cpu, err := l.g.VCPUTime(); err == nil {
			return time.Duration(float64(cpu-l.cpu1) / l.pace)
		}
	}
	return time.Since(l.t1)
}

// rewatchFactor is how many times longer than the first watch auto
// watches a guest again where growingNote would warn and --observe was
// left to its default: walk 125's 1 GiB guest writing all over its memory
// at 32 MiB/s, predicted -36% and -92% from the default 2 s, was -5% from
// 10 s.
const rewatchFactor = 5

// rewatch returns how many epochs auto, having watched n epochs in which
// the guest wrote pages, fresh of them new in the second half, should
// watch it again before it predicts anew (a guest of memory pages,
// predicted to migrate in predicted: see growingNote), and what to say of
// it; 0 and "" where it should not, as for a front (a sweep): a watch
// that covers all of memory shows whole laps, not where the sweep goes,
// and auto then predicts it as a guest writing all its memory in turn
// (walk 132: a 1 GiB guest sweeping 43 500 pages a second at 64 MiB/s,
// watched again for 10 s, mecom chosen, predicted 25.2 and 18.4 s, took
// 1m50s and 2m15s, where from the 2 s watch throttle came within 14% in
// 4 runs of 4).
func rewatch(n, pages, fresh int, memory uint64, predicted time.Duration, front bool) (m int, say string) {
	watched := time.Duration(n) * autoEpoch
	if front || growingNote(watched, pages, fresh, memory, predicted, false) == "" {
		return 0, ""
	}
	m = rewatchFactor * n
	return m, fmt.Sprintf("the guest was still writing pages it had not written before when the watch ended (%d of the %d it wrote were new in the watch's second half), "+
		"and the migration was predicted to last %v: watching it again, for %v, before predicting anew (--observe sets the watch, and then auto keeps to it)",
		fresh, pages, predicted.Round(time.Millisecond), time.Duration(m)*autoEpoch)
}

// watchAgain is both choosers' second watch of g, for m epochs: the new
// watch's options, with what was set after the first carried over from
// before (carryOver), the pages the guest wrote and those new in its
// second half.
func watchAgain(ctx context.Context, g migrator.Guest, m int, before simulate.Options) (o simulate.Options, pages, fresh int, err error) {
	watched, pages, fresh, err := watchGuest(ctx, g, m)
	if err != nil {
		return before, 0, 0, err
	}
	return carryOver(watched, before), pages, fresh, nil
}

// carryOver returns watched, the options of a new watch of the guest,
// with what chooseLive set after the first (the link, the limits, the
// probes' measures) taken from before.
func carryOver(watched, before simulate.Options) simulate.Options {
	o := before
	o.Workload, o.VCPUs, o.Step = watched.Workload, watched.VCPUs, watched.Step
	o.Samples, o.WrittenSamples = watched.Samples, watched.WrittenSamples
	o.Content, o.Written, o.Classes = watched.Content, watched.Written, watched.Classes
	return o
}

// writeAgain says that the chosen mode's row is its prediction made
// again (simulate.Repredict): walk 132 read it beside the others' as one
// prediction, and the why's figure was in no row.
func writeAgain(w io.Writer, mode string) {
	fmt.Fprintf(w, "  %s's row is its prediction made again once the modes were weighed, from where the sweep had gone on to by then; the other rows are from where it was reckoned to be as they were weighed, and the why's first figures are each mode's worst of the points\n", printable.Line(mode))
}

// growingNote warns that auto's prediction is short where the guest was
// still writing pages it had not written before as the watch ended
// (fresh of the pages it wrote in the watch's second half) and the
// migration is predicted to last several times the watch, whose epochs
// the simulation replays: it cannot write more distinct pages than the
// watch saw (walk 125: a 1 GiB guest writing all over its memory, watched
// 2 s, was predicted -36% and -92% at 32 MiB/s; watched 10 s, -5%). Only
// where the new pages are 1% of the guest's memory or more, of pages in
// all: a nearly idle guest's few new pages change no prediction (walk
// 126). Empty otherwise. Both choosers give it: QEMU's on its standard
// error, pagecast's own monitor's in its log and query-migrate's
// x-pagecast.auto.
func growingNote(watched time.Duration, pages, fresh int, memory uint64, predicted time.Duration, front bool) string {
	if pages == 0 || fresh*4 < pages || uint64(fresh)*100 < memory || predicted < 4*watched {
		return ""
	}
	if front {
		// A sweep's (walk 131: "off if the guest stops or speeds up"
		// where neither happened, and its phase decided).
		return fmt.Sprintf("the guest's new pages move on through its memory as one front, a sweep (%d of the %d it wrote were new in the watch's second half), "+
			"and the prediction has the sweep go on at the pace it did by the watch's end over a migration of %v, %.0f times the %v watched: where the sweep is when round 1 starts decides much (the why gives each mode's range), and the prediction is off if the guest stops or speeds up. "+
			"A longer --observe does not help here: a watch that covers all of memory shows whole laps, not where the sweep goes, and auto does not watch such a guest again",
			fresh, pages, predicted.Round(time.Millisecond), float64(predicted)/float64(watched), watched)
	}
	return fmt.Sprintf("the guest was still writing pages it had not written before when the watch ended (%d of the %d it wrote were new in the watch's second half), "+
		"and the prediction has it go on taking new pages at the pace it did by the watch's end over a migration of %v, %.0f times the %v watched, so it is off if the guest stops or speeds up: a longer --observe (such as %d, %v) sees more of what the guest writes",
		fresh, pages, predicted.Round(time.Millisecond), float64(predicted)/float64(watched), watched, 5*int(watched/autoEpoch), 5*watched)
}

// inMS is d to the millisecond, 0 as "0ms" beside the others, not "0s"
// (a guest that wrote nothing throttled 99%; a CI run).
func inMS(d time.Duration) string {
	if d = d.Round(time.Millisecond); d == 0 {
		return "0ms"
	}
	return d.String()
}

// responseThrottles are the throttles auto measures the guest's writes at
// (simulate.MeasureResponse), each for responseWindows+1 windows of 100
// ms: 1.5 s, of which the guest loses about 1.2 s of its vCPU time.
var responseThrottles = []int{50, 90, 99}

const responseWindows = 4

// probeThrottle measures what the guest still writes throttled, for the
// throttle's prediction: a Linux guest writes far more than its CPU share
// (walk 116: auto predicted a throttled migration 9 rounds and a downtime
// of 225 ms, and it took the 31-round cap and 584 ms). If it cannot, it
// says so and predicts as for LinuxResponse. pace is the cores g's vCPUs
// ran, together, while watched (leadClock's), 0 where not known: a vCPU that
// ran half a core (a loaded host, or a guest idle half the time) loses
// little to a throttle that leaves it half (walk 158: "throttling barely
// slows its writes" said without why).
func probeThrottle(ctx context.Context, out io.Writer, g migrator.Guest, watched simulate.Workload, pace float64) simulate.Response {
	wall := time.Duration(len(responseThrottles)*(responseWindows+1)) * simulate.ResponseWindow
	fmt.Fprintf(out, "pagecast: auto: measuring what the guest writes throttled, %v …\n", wall)
	r, err := simulate.MeasureResponse(ctx, g, watched, responseThrottles, responseWindows)
	if err != nil {
		if qemu.HoldsPagecastGuest(g.Memory()) { // whose response is linear (a review walk)
			fmt.Fprintf(out, "pagecast: auto: warning: %v: throttle predicted as for pagecast's own guest, which this is (%v)\n", err, simulate.Linear)
			return simulate.Linear
		}
		fmt.Fprintf(out, "pagecast: auto: warning: %v: throttle predicted as for a Linux guest (%v)\n", err, simulate.LinuxResponse)
		return simulate.LinuxResponse
	}
	vcpus := max(g.Identity().VCPUs, 1)
	pace /= float64(vcpus) // a vCPU's, on average
	var pcts, spans, ran []string
	for i := len(r) - 1; i >= 0; i-- {
		pcts = append(pcts, fmt.Sprintf("%.0f%%", 100*(1-r[i].Share)))
		spans = append(spans, inMS(time.Duration(r[i].Span*float64(simulate.ResponseWindow))))
		ran = append(ran, inMS(time.Duration(r[i].Share*float64(simulate.ResponseWindow))))
	}
	// What the measurement cost the guest, which no figure of the
	// migration's counts (walk 121: guest slowed 0% after it).
	var lost time.Duration
	for _, pct := range responseThrottles {
		lost += time.Duration(responseWindows+1) * simulate.ResponseWindow * time.Duration(pct) / 100
	}
	lost *= time.Duration(vcpus)
	fmt.Fprintf(out, "pagecast: auto:   throttled %s, the guest wrote in %v as many pages as it writes in %s unthrottled (its vCPU ran %s of it); "+
		"the measure took %v of its vCPU time, before the migration and not in its guest slowed\n",
		strings.Join(pcts, ", "), simulate.ResponseWindow, strings.Join(spans, ", "), strings.Join(ran, ", "), lost.Round(time.Millisecond))
	// "wrote in 100ms as many pages as it writes in 100ms" reads as a
	// slip where it is the finding (walk 123): said in words.
	var unslowed, starved []string // starved: throttles that leave a vCPU about what it ran unthrottled, or more
	for i := len(r) - 1; i >= 0; i-- {
		if r[i].Span >= barelySlowed {
			pct := fmt.Sprintf("%.0f%%", 100*(1-r[i].Share))
			unslowed = append(unslowed, pct)
			if pace > 0 && pace < starvedPace && r[i].Share >= starvedShare*pace {
				starved = append(starved, pct)
			}
		}
	}
	if len(unslowed) > 0 {
		vcpu := "its vCPU ran"
		if vcpus > 1 {
			vcpu = "its vCPUs ran, on average,"
		}
		host := fmt.Sprintf("%s only %.2f of a core unthrottled while watched (a loaded host, or a guest idle part of the time), and a throttle of %s leaves about that or more",
			vcpu, pace, strings.Join(starved, ", "))
		why := "throttling barely slows its writes"
		switch {
		case len(starved) == len(unslowed):
			why = host
		case len(starved) > 0:
			why += "; " + host
		}
		fmt.Fprintf(out, "pagecast: auto:   throttled %s, the guest wrote about as fast as unthrottled: %s\n", strings.Join(unslowed, ", "), why)
	}
	return r
}

// starvedPace is the share of a core under which a vCPU is said to have
// run short of one while watched, and starvedShare how near that share,
// or over it, a throttle's must come to be said to take little from it.
const (
	starvedPace  = 0.8
	starvedShare = 0.8
)

// barelySlowed is the share of its unthrottled writes that a throttled
// guest writes at or above which the throttle is said to barely slow it.
const barelySlowed = 0.9

// autoCheckRate is how fast auto's predictions take the memory check to
// read, for the note of writeCheckTime: migrate has no --checksum-rate,
// which simulate's note names (walk 106).
var autoCheckRate = fmt.Sprintf("at some %s/s", units.FormatBytes(simulate.DefaultChecksumRate))

// pageRateProbe is how many of the guest's pages auto migrates on
// loopback to measure the page rate (migrator.MeasurePageRate): 64 MiB,
// 0.2-0.3 s at the 52-86 k pages/s two loaded cores managed here.
const pageRateProbe = 16384

// pageRateProbes is how many probes probePageRate takes.
const pageRateProbes = 2

// pageRates is what probePageRate measured.
type pageRates struct {
	pages, bytes float64 // a second, the guest running
	// paused is pages while the guest is paused: pages, scaled for the
	// cores its vCPUs leave to the migration (pausedShare); 0 where
	// their CPU time could not be read.
	paused float64
	cores  int     // what the process may use (GOMAXPROCS: a container's CPU limit too)
	busy   float64 // the cores the vCPUs took in demandWindow, the guest alone
}

// demandWindow is how long probePageRate watches the vCPUs' CPU time
// before it probes: what they take with nothing else of pagecast's
// running. (Taken while the probes ran, it was their share against the
// probe's two ends, 0.4-0.5 of a core where the guest alone took 1.)
const demandWindow = 250 * time.Millisecond

// probePageRate measures the engine's page rate pageRateProbes times and
// keeps the fastest: the machine's other work only slows a probe, and a
// slowed one overstated the migration's time (a 1 GiB guest at 128 MiB/s,
// one probe each: 61.4 k pages/s and +41%, 69.9 k and +36%, 71.9 k and
// +15%, 82.2 k and 0%, the migrations taking 3.8-4.1 s). Where g says
// how much CPU its vCPUs have, it first watches what they take for
// demandWindow and weighs the rate while the guest is paused.
func probePageRate(ctx context.Context, g migrator.Guest) (pageRates, error) {
	var r pageRates
	measured := false
	if vcpus, ok := g.(interface{ VCPUTime() (time.Duration, error) }); ok {
		start := time.Now()
		cpu0, err0 := vcpus.VCPUTime()
		select {
		case <-ctx.Done():
			return pageRates{}, ctx.Err()
		case <-time.After(demandWindow):
		}
		cpu1, err1 := vcpus.VCPUTime()
		if err := cmp.Or(err0, err1); err != nil {
			slog.Debug("auto: the vCPUs' CPU time: the stop-and-copy is predicted at the running pace", "err", err)
		} else {
			measured = true
			r.busy = max(cpu1-cpu0, 0).Seconds() / time.Since(start).Seconds()
		}
	}
	for range pageRateProbes {
		p, b, err := migrator.MeasurePageRate(ctx, g, pageRateProbe)
		if err != nil {
			return pageRates{}, err
		}
		if p > r.pages {
			r.pages, r.bytes = p, b
		}
	}
	if measured {
		r.cores = runtime.GOMAXPROCS(0)
		r.paused = r.pages * pausedShare(r.cores, r.busy)
	}
	return r, nil
}

// enginePath is how many cores the engine's path between two ends on one
// host keeps busy at most: the source's sender and the destination's
// receiver.
const enginePath = 2

// pausedShare is how much faster the engine moves pages on a host of
// cores cores while the guest is paused than while its vCPUs take busy
// of them: the cores it may use, at most enginePath, paused over running.
// On the two cores here beside a TCG guest (a vCPU busy on one) it is 2:
// the stop-and-copy of a 128 MiB guest moved 866 MiB/s where its round 1
// moved 470, and auto, which charged the pause at the running rate,
// predicted +60-65% of the total time and over twice the downtime (walk
// 69). On a host of many cores it is 1. Running, the engine has the cores
// the vCPUs leave, and at least a core or, on fewer, its fair share beside
// them (review 73: on one core it was 1, where the pause frees half).
func pausedShare(cores int, busy float64) float64 {
	c := float64(cores)
	running := min(max(c-busy, min(1, c*enginePath/(enginePath+busy))), enginePath)
	return min(c, enginePath) / running
}

// noCap is the simulated link of a migration with no cap on this host:
// far faster than any engine, so that the page rate sets the pace.
const noCap = 1 << 40

// localDestination says whether migration URI uri names this host: a
// loopback address or one of its interfaces'.
func localDestination(uri string) bool {
	addr, err := migrator.ParseURI(uri)
	if err != nil {
		return false
	}
	host, _, _ := net.SplitHostPort(addr)
	if host == "" {
		// QEMU's tcp::PORT, which a dial takes to this host (review 88:
		// the lookup of "" failed, and a QEMU listening there was not
		// seen).
		return true
	}
	ips, err := net.LookupIP(host)
	if err != nil {
		return false
	}
	ifaces, _ := net.InterfaceAddrs()
	for _, ip := range ips {
		if ip.IsLoopback() || ip.IsUnspecified() {
			return true
		}
		for _, a := range ifaces {
			if n, ok := a.(*net.IPNet); ok && n.IP.Equal(ip) {
				return true
			}
		}
	}
	return false
}

// autoEpoch is the epoch --observe counts in.
const autoEpoch = 100 * time.Millisecond

// autoPart is how often mode auto harvests the guest's dirty pages while it
// watches, and the epoch of the workload it simulates: a tenth of autoEpoch.
// A simulated epoch writes each of its pages once, at an instant of its
// own, so a stretch of a tenth of an epoch holds about a tenth of its
// pages; a guest that rewrites a hot set many times an epoch rewrites all
// of it in that tenth. Watched in 100 ms epochs, a 64 MiB TCG guest
// writing 15 330 pages an epoch (hotset:hot=4096,p=0.7,delay=2000) at
// 8 MiB/s was predicted to converge under throttle in 26 s, and ran into
// the round cap after 1m43s, with some 3 900 pages pending each round at
// 99% (2 s rounds: 20 ms of the guest's time). Simulated on the same
// guest's 10 ms epochs, throttle took 2m6s and 1.6 s of downtime (on
// 2026-12-03; live, 1m43s and 1.52 s).
const autoPart = 10 * time.Millisecond

// watchGuest harvests g's dirty pages every autoPart for n epochs of
// autoEpoch and returns the simulation's options for what it saw: the
// workload (in epochs of autoPart), the content of the guest's memory,
// that of the pages it wrote and each of those pages' class (the hot pages
// a migration resends are not the others: on a 64 MiB TCG guest they coded
// to 0.53 of their size, the rest to 0.34), and pages of each class the
// simulation's compression codes in place of generated ones, their codings
// timed with the guest running (a 1 GiB TCG guest's coded to 387–397 MiB
// live; generated pages predicted 296–319 MiB, its own so timed 365 MiB);
// and how many pages it wrote.
func watchGuest(ctx context.Context, g migrator.Guest, n int) (o simulate.Options, pages, fresh int, err error) {
	log, err := g.StartDirtyLog()
	if err != nil {
		return simulate.Options{}, 0, 0, fmt.Errorf("watch the guest: %w", err)
	}
	defer log.Close()
	var epochs []trace.Epoch
	written := map[uint64]bool{}
	next := time.Now()
	parts := n * int(autoEpoch/autoPart)
	for i := range parts {
		next = next.Add(autoPart)
		select {
		case <-ctx.Done():
			return simulate.Options{}, 0, 0, ctx.Err()
		case <-time.After(time.Until(next)):
		}
		if i%int(autoEpoch/autoPart) == 0 {
			// A guest paused while watched writes nothing then, and the
			// prediction took that for its pace (walk 130: a QMP stop
			// during the watch, predicted -95%, 4.5 times the downtime
			// limit).
			if running, state := g.Running(); !running {
				return simulate.Options{}, 0, 0, fmt.Errorf("%w: it was %s while auto watched it, so what it wrote then is not what it writes running; "+
					"migrate again once it runs, or give a mode", errPausedWatch, state)
			}
		}
		h, err := log.Harvest()
		if err != nil {
			return simulate.Options{}, 0, 0, fmt.Errorf("watch the guest: %w", err)
		}
		list := h.List()
		for _, g := range list {
			if !written[g] && i >= parts/2 {
				fresh++ // first written in the watch's second half
			}
			written[g] = true
		}
		epochs = append(epochs, trace.Epoch{Index: uint64(i), Pages: list})
	}
	holes, err := migrator.Holes(g) // read, they would be allocated
	if err != nil {
		return simulate.Options{}, 0, 0, fmt.Errorf("watch the guest: %w", err)
	}
	w, err := simulate.NewTrace(watchedName, trace.Meta{MemoryBytes: g.MemoryBytes(), PageSize: migrator.PageSize, Epoch: autoPart}, epochs)
	if err != nil {
		return simulate.Options{}, 0, 0, err
	}
	// Step: the timeline and progress every autoEpoch of the simulated
	// migration, not every part.
	o = simulate.Options{Workload: w, VCPUs: g.Identity().VCPUs, Step: autoEpoch}
	measureContent(&o, g.Memory(), holes, written)
	return o, len(written), fresh, nil
}

// predictBudget bounds the real time each of a live auto's predictions
// takes: the modes whose simulations run on past it are not chosen. Where
// no mode kept within the downtime limit, none could cut another short,
// and a 1 GiB guest's took 9 minutes (walk 130); 13 modes of such a guest
// took 20-45 s on a loaded host where one did.
const predictBudget = 2 * time.Minute

// errPausedWatch is auto's refusal of a guest that stopped running while
// it was watched.
var errPausedWatch = errors.New("auto: the guest stopped running during the watch")

// watchedName names the workload auto watched a live guest write.
const watchedName = "what was watched"

// measureContent sets o's content from a running guest's memory mem
// (holes: pages of it never written, or nil): the mix of all of it, that
// of the pages written, each written page's class, and pages of each
// class that the simulation's compression codes, timed now, with the
// guest running, as the migration's coding will be.
func measureContent(o *simulate.Options, mem []byte, holes *bitmap.Bitmap, written map[uint64]bool) {
	classes := make(map[uint64]mecom.Class, len(written))
	for p := range written {
		if (p+1)*migrator.PageSize <= uint64(len(mem)) {
			classes[p] = mecom.Classify(mem[p*migrator.PageSize : (p+1)*migrator.PageSize])
		}
	}
	o.Samples = simulate.SamplePages(mem, holes)
	o.Samples.Prime()
	// The pages written stand for those the guest writes on: a hot set
	// codes otherwise than memory at large.
	o.WrittenSamples = simulate.SampleWritten(mem, slices.Collect(maps.Keys(written)))
	o.WrittenSamples.Prime()
	o.Content, o.Written, o.Classes = simulate.MeasureMix(mem, 1, holes), simulate.ClassMix(classes), classes
}

// ownChooser is mode auto for pagecast's own monitor (vm run): it watches
// the guest for x-pagecast-observe epochs and chooses among every mode,
// pagecast's destination taking post-copy too. The choice goes to the log and to
// query-migrate's x-pagecast.auto, which `pagecast migrate` prints.
func ownChooser(log *slog.Logger) migrator.Chooser {
	return func(ctx context.Context, g migrator.Guest, cfg migrator.Config) (*migrator.AutoChoice, error) {
		n := cfg.Observe
		log.Info("mode auto: watching the guest", "for", time.Duration(n)*autoEpoch)
		lead := startLead(g) // as chooseLive's; the wall time here, where the guest does not tell its vCPUs' time
		o, pages, fresh, err := watchGuest(ctx, g, n)
		lead.watched()
		if err != nil {
			return nil, err
		}
		o.Bandwidth, o.DowntimeLimit, o.MaxRounds = cfg.MaxBandwidth, cfg.DowntimeLimit, cfg.MaxRounds
		o.PolicyTime = true // as chooseLive: the predictor's time holds up the sender
		o.Profile = cfg.Profile
		o.Budget = predictBudget
		o.Lead = lead.since()
		choice, err := simulate.Choose(ctx, o, o.Workload, cfg.Prefer)
		if err != nil {
			return nil, err
		}
		memory := g.MemoryBytes() / migrator.PageSize
		predicted := func() time.Duration { return time.Duration(choice.Predicted().Info.TotalTime) * time.Millisecond }
		if m, say := rewatch(n, pages, fresh, memory, predicted(), choice.Predicted().Drift != 0); m > 0 && !cfg.ObserveGiven {
			// As chooseLive does, where x-pagecast-observe was not given.
			log.Info("mode auto: " + say)
			lead = startLead(g)
			if o, pages, fresh, err = watchAgain(ctx, g, m, o); err != nil {
				return nil, err
			}
			lead.watched()
			n, o.Lead = m, lead.since()
			if choice, err = simulate.Choose(ctx, o, o.Workload, cfg.Prefer); err != nil {
				return nil, err
			}
		}
		// As chooseLive: a sweep's choice predicted again from where
		// the sweep is now.
		o.Lead = lead.since() + choice.Predicted().Wall
		if err := simulate.Repredict(ctx, o, &choice); err != nil {
			return nil, err
		}
		r := choice.Report()
		r.Watched = (time.Duration(n) * autoEpoch).Milliseconds()
		if r.Warning = growingNote(time.Duration(n)*autoEpoch, pages, fresh, memory, predicted(), choice.Predicted().Drift != 0); r.Warning != "" {
			log.Warn("mode auto: " + r.Warning)
		}
		return r, nil
	}
}

// qemuAutoModes are the modes auto chooses among for a QEMU guest with
// pagecast's engine: a QEMU destination cannot take pagecast's post-copy.
func qemuAutoModes() []string {
	var modes []string
	for _, m := range simulate.AutoModes {
		if !migrator.NeedsPostcopy(m) {
			modes = append(modes, m)
		}
	}
	return modes
}
