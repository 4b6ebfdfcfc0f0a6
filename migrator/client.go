package migrator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"time"

	"github.com/digitalocean/go-qemu/qmp"

	"github.com/pagecast/pagecast/internal/proc"
	"github.com/pagecast/pagecast/internal/units"
)

// The client side of QEMU-shaped migration: the same few QMP commands drive
// a migration out of QEMU and out of pagecast's own monitor, so that
// `pagecast migrate` and the benchmarks treat both alike. Commands go out
// as raw JSON through Monitor.Run because go-qemu's generated API predates
// the migration parameters used here.

// Params are migrate-set-parameters members; zero fields are not sent.
type Params struct {
	MaxBandwidth  uint64        // bytes/s ("max-bandwidth")
	DowntimeLimit time.Duration // ("downtime-limit", sent in ms, rounded up)
	Mode          string        // pagecast only: "x-pagecast-mode"
	MaxRounds     int           // pagecast only: "x-pagecast-max-rounds"
	Profile       string        // pagecast only: "x-pagecast-profile", a trace file to warm the predictor
	Prefer        string        // pagecast only: "x-pagecast-prefer", what mode auto optimises: time, bytes or downtime
	Observe       int           // pagecast only: "x-pagecast-observe", 100 ms epochs mode auto watches the guest for
}

// CheckLink refuses a downtime limit no migration can meet: negative, or
// shorter than the link at bandwidth (bytes/s; 0: uncapped) takes to move
// one page.
func CheckLink(bandwidth uint64, limit time.Duration) error {
	if limit < 0 {
		return fmt.Errorf("downtime limit %v is negative", limit)
	}
	if moved := float64(bandwidth) * limit.Seconds(); bandwidth > 0 && moved < PageSize {
		return fmt.Errorf("at %s/s the link moves %s in the downtime limit of %v, less than one %d-byte page, so no migration can meet it",
			units.FormatBytes(float64(bandwidth)), units.FormatBytes(moved), limit, PageSize)
	}
	return nil
}

// clientParams is Params as QMP spells it. omitempty leaves the zero
// fields out, so QEMU never sees the pagecast-only members unless they are
// set (it would refuse them).
type clientParams struct {
	MaxBandwidth  uint64 `json:"max-bandwidth,omitempty"`
	DowntimeLimit int64  `json:"downtime-limit,omitempty"`
	Mode          string `json:"x-pagecast-mode,omitempty"`
	MaxRounds     int    `json:"x-pagecast-max-rounds,omitempty"`
	Profile       string `json:"x-pagecast-profile,omitempty"`
	Prefer        string `json:"x-pagecast-prefer,omitempty"`
	Observe       int    `json:"x-pagecast-observe,omitempty"`
}

// SetParameters sends migrate-set-parameters with p's non-zero members; it
// sends nothing when all are zero.
func SetParameters(mon qmp.Monitor, p Params) error {
	if p.DowntimeLimit < 0 {
		return fmt.Errorf("migrate-set-parameters: negative downtime limit %v", p.DowntimeLimit)
	}
	if p.MaxRounds < 0 || p.MaxRounds > MaxRoundsLimit {
		return fmt.Errorf("migrate-set-parameters: max rounds %d: want 0 to %d", p.MaxRounds, MaxRoundsLimit)
	}
	if p == (Params{}) {
		return nil
	}
	args := clientParams{
		MaxBandwidth: p.MaxBandwidth,
		// Rounded up so that a limit under a millisecond is not sent as 0,
		// which would mean "leave it" here and "no downtime" to QEMU.
		DowntimeLimit: int64((p.DowntimeLimit + time.Millisecond - 1) / time.Millisecond),
		Mode:          p.Mode,
		MaxRounds:     p.MaxRounds,
		Profile:       p.Profile,
		Prefer:        p.Prefer,
		Observe:       p.Observe,
	}
	return clientRun(mon, "migrate-set-parameters", args, nil)
}

// SavePagecastParameters reads pagecast's own monitor's migration
// parameters (query-migrate-parameters) and returns what puts them back
// as they were (migrate-set-parameters with every member): pagecast
// migrate sets its own for one migration, and left them in place of
// those a QMP client had set (walk 154), where a QEMU source gets its
// own back (SetupQEMU).
func SavePagecastParameters(mon qmp.Monitor) (restore func() error, err error) {
	var saved json.RawMessage
	if err := clientRun(mon, "query-migrate-parameters", nil, &saved); err != nil {
		return nil, err
	}
	return func() error { return clientRun(mon, "migrate-set-parameters", saved, nil) }, nil
}

// SetPagecastParameters sends migrate-set-parameters to pagecast's own
// monitor with every member Params has, zero ones too: the link cap (0:
// none), the downtime limit (0: the default), the mode, the round cap and
// the profile ("" none); mode auto's prefer and observe where set. The
// monitor keeps its parameters from one migration to the next, as QEMU
// does, so SetParameters' "zero: not sent" left a cap, a profile or a
// limit an earlier migrate had set on the next one, which ran at 4 MiB/s
// with no cap asked for (found by a new-user walk).
func SetPagecastParameters(mon qmp.Monitor, p Params) error {
	if p.DowntimeLimit < 0 {
		return fmt.Errorf("migrate-set-parameters: negative downtime limit %v", p.DowntimeLimit)
	}
	if p.MaxRounds < 0 || p.MaxRounds > MaxRoundsLimit {
		return fmt.Errorf("migrate-set-parameters: max rounds %d: want 0 to %d", p.MaxRounds, MaxRoundsLimit)
	}
	limit := p.DowntimeLimit
	if limit == 0 {
		limit = DefaultDowntimeLimit // the monitor refuses 0
	}
	args := map[string]any{
		"max-bandwidth":      p.MaxBandwidth,
		"downtime-limit":     int64((limit + time.Millisecond - 1) / time.Millisecond),
		"x-pagecast-profile": p.Profile,
	}
	if p.Mode != "" {
		args["x-pagecast-mode"] = p.Mode
	}
	if p.MaxRounds > 0 {
		args["x-pagecast-max-rounds"] = p.MaxRounds
	}
	if p.Prefer != "" {
		args["x-pagecast-prefer"] = p.Prefer
	}
	if p.Observe > 0 {
		args["x-pagecast-observe"] = p.Observe
	}
	return clientRun(mon, "migrate-set-parameters", args, nil)
}

// Migrate sends "migrate": the monitor starts migrating its machine to uri
// ("tcp:HOST:PORT"). It returns once the monitor has accepted the command;
// the migration runs on, and Wait or Query follow it. (Not Start: that is
// the in-process source's entry point in this package.)
func Migrate(mon qmp.Monitor, uri string) error {
	return clientRun(mon, "migrate", map[string]string{"uri": uri}, nil)
}

// Query returns query-migrate's reply. Before any migration QEMU answers
// with an empty object, an Info whose Status is "".
func Query(mon qmp.Monitor) (Info, error) {
	var info Info
	err := clientRun(mon, "query-migrate", nil, &info)
	if errors.Is(err, errClientGarbled) {
		// go-qemu's SocketMonitor (not pagecast's qmpclient) hands Run
		// its read buffer, which the next line can overwrite before the
		// reply is decoded (digitalocean/go-qemu#226); a migration's
		// STOP event can be that line. query-migrate has no side
		// effects: ask again.
		info = Info{}
		err = clientRun(mon, "query-migrate", nil, &info)
	}
	return info, err
}

// StartPostcopy sends migrate-start-postcopy: a migration that may go
// to post-copy does so now (pagecast's monitor: at its next harvest).
func StartPostcopy(mon qmp.Monitor) error {
	return clientRun(mon, "migrate-start-postcopy", nil, nil)
}

// Cancel asks the monitor to cancel the migration under way. The source
// goes back to running the guest; the status turns to cancelled
// asynchronously.
func Cancel(mon qmp.Monitor) error {
	return clientRun(mon, "migrate_cancel", nil, nil)
}

// Wait polls query-migrate every interval, calling progress (if not nil)
// with each reply, until the status is completed, failed or cancelled, and
// returns the last Info. A failed or cancelled migration returns its Info
// and an error carrying error-desc. If ctx ends first, Wait sends
// migrate_cancel and returns the last Info and ctx's error, unless the
// migration is in post-copy: then it sends nothing and returns a
// *Detached (a cancel would lose the guest). Only ctx ends
// the wait on a monitor where no migration was started (status "" or none).
//
// QEMU turns the status to completed a moment before it computes
// total-time and downtime, and a reply in between says 0 ms for both; Wait
// asks again, every 10 ms for up to a second, until total-time is there.
func Wait(ctx context.Context, mon qmp.Monitor, interval time.Duration, progress func(Info)) (Info, error) {
	return wait(ctx, mon, interval, func(i Info) error {
		if progress != nil {
			progress(i)
		}
		return nil
	})
}

// cancelSettle is how long settleCancel waits for a cancelled migration to
// end, polling every cancelPoll: migrate_cancel returns at once, the status
// turning cancelling, and QEMU's migration thread ends the migration (the
// guest resumed at the source if it had been stopped for the switch-over)
// a moment later.
var (
	cancelSettle = 5 * time.Second
	cancelPoll   = 20 * time.Millisecond
)

// settleCancel follows a migration after migrate_cancel, from its last
// Info, until it has ended: cancelled or failed, or completed where the
// cancel came after its last byte; it returns the Info that says which.
// A migration that has not ended after cancelSettle, or that has moved to
// post-copy (its cancel refused), is an error.
func settleCancel(mon qmp.Monitor, info Info) (Info, error) {
	deadline := time.Now().Add(cancelSettle)
	for {
		switch {
		case info.Status == StatusCancelled || info.Status == StatusFailed || info.Status == StatusCompleted,
			info.Status == "" || info.Status == StatusNone:
			return info, nil
		case InPostcopy(info.Status):
			return info, fmt.Errorf("migrate_cancel sent, but the migration is %s: the guest runs on the destination", info.Status)
		case time.Now().After(deadline):
			return info, fmt.Errorf("migrate_cancel sent %v ago, and the migration is still %s", cancelSettle, info.Status)
		}
		time.Sleep(cancelPoll)
		i, err := Query(mon)
		if err != nil {
			return info, fmt.Errorf("after migrate_cancel: %w", err)
		}
		info = i
	}
}

// completedSettles is how many times wait asks again, completedSettle apart,
// for a completed migration's total-time: in QEMU 7.2 the migration thread
// sets the status (migration_completion) before it computes the times
// (migration_calculate_complete), so a query-migrate in between reports
// "completed" with total-time and downtime 0.
const (
	completedSettles = 100
	completedSettle  = 10 * time.Millisecond
)

// noStatus is how long wait takes query-migrate's replies without a
// status (QEMU's for no migration) before it gives up: the migrate
// command sets one, setup, before it returns, so such a reply after it
// says no migration runs (walk 122: a QEMU that answered {} held migrate
// polling for good).
var noStatus = 5 * time.Second

// wait is Wait with a progress that can end the wait: an error from it is
// returned with the Info it was given.
func wait(ctx context.Context, mon qmp.Monitor, interval time.Duration, progress func(Info) error) (Info, error) {
	if interval <= 0 {
		return Info{}, fmt.Errorf("wait for migration: poll interval %v is not positive", interval)
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	var last Info
	var counted Info   // the last reply with ram: QEMU's cancelled and failed have none
	var none time.Time // since when the replies have had no status
	for settles := 0; ; {
		info, err := queryCtx(ctx, mon)
		if errors.Is(err, ErrMonitorSilent) {
			// Nothing more can be asked of it: a cancel would wait too.
			return last, fmt.Errorf("wait for migration: %w; no migrate_cancel was sent, and the migration's state is unknown: ask QEMU (query-migrate) once it answers", err)
		}
		if err != nil {
			return info, fmt.Errorf("wait for migration: %w", err)
		}
		if info.RAM != nil {
			counted = info
		} else if info.Status == StatusFailed || info.Status == StatusCancelled {
			info = carryCounts(info, counted)
		}
		last = info
		if err := progress(info); err != nil {
			return info, err
		}
		switch info.Status {
		case StatusCompleted:
			if info.TotalTime > 0 || settles == completedSettles {
				return info, nil
			}
			settles++
			select {
			case <-ctx.Done():
				return info, nil // completed all the same
			case <-time.After(completedSettle):
			}
			continue
		case StatusFailed, StatusCancelled:
			return info, statusError(info)
		case "", StatusNone:
			if none.IsZero() {
				none = time.Now()
			} else if d := time.Since(none); d >= noStatus {
				return info, fmt.Errorf("wait for migration: QEMU has reported no migration (query-migrate without a status) for %v after it took the migrate command: none runs; no migrate_cancel was sent", d.Round(100*time.Millisecond))
			}
		default:
			none = time.Time{}
		}
		select {
		case <-ctx.Done():
			if i, err := Query(mon); err == nil {
				info = i // post-copy may have begun since
				if i.RAM != nil {
					counted = i
				}
			}
			if InPostcopy(info.Status) {
				return info, &Detached{Status: info.Status}
			}
			if err := Cancel(mon); err != nil && strings.Contains(err.Error(), CommittedText) {
				return info, &Detached{Status: info.Status, Committed: true}
			} else if err != nil {
				return info, fmt.Errorf("wait for migration: %w (and %w)", ctx.Err(), err)
			}
			info, err = settleCancel(mon, info)
			if info.RAM == nil {
				info = carryCounts(info, counted)
			}
			if err != nil {
				return info, fmt.Errorf("wait for migration: %w; %w", ctx.Err(), err)
			}
			if info.Status == StatusCompleted {
				// The cancel came after the last byte: the guest runs
				// on the destination, and the migration stands.
				slog.Warn("the migration completed before the cancel took effect: the guest runs on the destination")
				return info, nil
			}
			if errors.Is(ctx.Err(), context.Canceled) {
				return info, &interrupted{ctx.Err()}
			}
			return info, fmt.Errorf("wait for migration: %w; migrate_cancel sent", ctx.Err())
		case <-tick.C:
		}
	}
}

// ErrStalled is in the error of a migration pagecast cancelled because its
// link moved nothing for too long: failed, not cancelled by anyone's wish
// (review 90: counted cancelled, it raised no failure alert).
var ErrStalled = errors.New("migration stalled")

// stalledError is an error that is ErrStalled, in its own words.
type stalledError string

func (s stalledError) Error() string        { return string(s) }
func (s stalledError) Is(target error) bool { return target == ErrStalled }

// carryCounts is an ended migration's reply end with the counts of its
// last reply that had them, counted, where end has none: QEMU's reply for
// a cancelled or failed migration holds only its status, and a migration
// that a --timeout or Ctrl-C cancelled after 100 MB was reported, and
// exported, as having sent nothing in no time (walks 83 and 89). They are
// as of the poll before the end, at most an interval old.
func carryCounts(end, counted Info) Info {
	if counted.RAM == nil {
		return end
	}
	ram := *counted.RAM
	ram.Mbps = 0 // a rate of a migration that has ended is none
	end.RAM = &ram
	if end.TotalTime == 0 {
		end.TotalTime = counted.TotalTime
	}
	if end.SetupTime == 0 {
		end.SetupTime = counted.SetupTime
	}
	return end
}

// monitorPatience is how long a query-migrate may go unanswered before
// wait says so: QEMU's stop-and-copy holds its monitor while it sends the
// last pages (seconds, where the downtime limit was lifted to force it),
// and a stopped or stuck QEMU keeps its socket open and never answers.
var monitorPatience = 10 * time.Second

// ErrMonitorSilent is wait's error when its context ended while QEMU's
// monitor had not answered a query.
var ErrMonitorSilent = errors.New("QEMU's monitor did not answer query-migrate")

// queryCtx is Query, given up when ctx ends; a reply monitorPatience late
// is warned of, once. A reply given up on is left to the goroutine that
// waits for it, which ends when the connection does.
func queryCtx(ctx context.Context, mon qmp.Monitor) (Info, error) {
	type reply struct {
		info Info
		err  error
	}
	got := make(chan reply, 1)
	go func() {
		i, err := Query(mon)
		got <- reply{i, err}
	}()
	late := time.NewTimer(monitorPatience)
	defer late.Stop()
	for {
		select {
		case r := <-got:
			return r.info, r.err
		case <-late.C:
			vm, pid := "QEMU", 0
			if p, ok := mon.(interface{ PeerPID() int }); ok {
				pid = p.PeerPID()
				vm = monitorName(pid)
			}
			why := "its stop-and-copy holds it, or " + vm + " is stopped or stuck"
			if pid != 0 && proc.Stopped(pid) {
				// Said, where it can be seen (walk 110).
				why = fmt.Sprintf("%s, pid %d, is stopped (SIGSTOP: SIGCONT resumes it)", vm, pid)
			}
			slog.Warn(vm + "'s monitor has not answered query-migrate for " + monitorPatience.String() +
				": " + why + "; waiting (an interrupt stops the wait)")
		case <-ctx.Done():
			// A monitor that answers answers within a poll: ended while
			// one was on its way, the wait takes it and cancels.
			select {
			case r := <-got:
				return r.info, r.err
			case <-time.After(silentGrace):
				return Info{}, fmt.Errorf("%w in %v (%w)", ErrMonitorSilent, silentGrace, ctx.Err())
			}
		}
	}
}

// monitorName names the VM whose monitor process pid serves: pagecast's
// own (a pagecast vm run, whose engine a migration out of it runs in) or
// QEMU (walk 149: a stopped vm run was called QEMU).
func monitorName(pid int) string {
	if args := strings.Fields(proc.Command(pid)); len(args) > 0 && filepath.Base(args[0]) == "pagecast" {
		return "pagecast vm run"
	}
	return "QEMU"
}

// silentGrace is how long queryCtx, its context ended, still waits for a
// reply under way.
const silentGrace = 2 * time.Second

// clientReply is a QMP reply: either "return" or "error".
type clientReply struct {
	Return json.RawMessage `json:"return"`
	Error  *struct {
		Class string `json:"class"`
		Desc  string `json:"desc"`
	} `json:"error"`
}

// clientRun sends one command and decodes its "return" into ret (if not
// nil). Errors, whether the monitor returns them (go-qemu's SocketMonitor
// turns a QMP error into a Go error holding its desc) or hands back the raw
// {"error": …} reply (other Monitors do), come back as "command: desc".
// errClientGarbled marks a reply that is not a QMP reply at all.
var errClientGarbled = errors.New("garbled QMP reply")

func clientRun(mon qmp.Monitor, command string, args, ret any) error {
	cmd, err := json.Marshal(qmp.Command{Execute: command, Args: args})
	if err != nil {
		return fmt.Errorf("encode %s: %w", command, err)
	}
	out, err := mon.Run(cmd)
	if err != nil {
		return fmt.Errorf("%s: %w", command, err)
	}
	var r clientReply
	if err := json.Unmarshal(out, &r); err != nil {
		return fmt.Errorf("%s: decode reply %q: %w (%w)", command, out, err, errClientGarbled)
	}
	if r.Error != nil {
		if r.Error.Desc == "" {
			return fmt.Errorf("%s: %s", command, r.Error.Class)
		}
		return fmt.Errorf("%s: %s", command, r.Error.Desc)
	}
	if r.Return == nil {
		return fmt.Errorf("%s: reply %q has neither return nor error: %w", command, out, errClientGarbled)
	}
	if ret == nil {
		return nil
	}
	if err := json.Unmarshal(r.Return, ret); err != nil {
		return fmt.Errorf("%s: decode return %s: %w", command, r.Return, err)
	}
	return nil
}

// InPostcopy tells whether a query-migrate status is one of post-copy's,
// where the guest runs on the destination: postcopy-active, -paused or
// -recover.
func InPostcopy(status string) bool { return strings.HasPrefix(status, "postcopy") }

// Detached is Wait's error when its context ended in post-copy, or once
// pagecast's engine has committed (Committed; its migrate_cancel refused):
// a cancel then would lose the guest or run it twice, so the migration
// goes on.
type Detached struct {
	Status    string
	Committed bool
	Why       string // what is said instead, where WaitQEMU gave up following a post-copy that may yet complete
}

func (e *Detached) Error() string {
	if e.Why != "" {
		return e.Why
	}
	if e.Committed {
		return "stopped following the migration after its commit; the cancel was refused, since the destination runs the guest or starts it once the commit reaches it: " +
			"the migration goes on (query-migrate on the source follows it: completed, or x-pagecast.unconfirmed says why not)"
	}
	return fmt.Sprintf("stopped following the migration in %s; no migrate_cancel sent, since the guest runs on the destination "+
		"and needs pages only the source holds: the migration goes on (query-migrate on the source follows it)", e.Status)
}

// interrupted is Wait's error when its context was cancelled (a signal, as
// pagecast migrate takes them): it says so rather than "context canceled".
type interrupted struct{ err error }

func (e *interrupted) Error() string { return "migration interrupted; migrate_cancel sent" }
func (e *interrupted) Unwrap() error { return e.err }
