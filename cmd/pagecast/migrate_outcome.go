package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/pagecast/pagecast/migrator"
)

// migrationOutcome is what migrate --json prints on stdout when it ends,
// whether the migration completed, failed, was cancelled or never began:
// one object a script can read instead of the summary's table.
type migrationOutcome struct {
	// Status is query-migrate's last status (completed, failed,
	// cancelled, postcopy-active, …); none where no migration began;
	// unknown where its state is not known (a silent source, or a
	// destination that neither ran the guest nor exited after QEMU's
	// source said completed); failed where that destination exited.
	Status string `json:"status"`
	// Error is why migrate exits 1; absent where it exits 0.
	Error string `json:"error,omitempty"`
	// Guest is where the guest is now, as far as pagecast knows: source
	// (nothing moved it, or it runs there again), destination, lost (the
	// QEMU that held it exited before it ran elsewhere) or unknown. A
	// script had to read it out of error's words (walk 65).
	Guest string `json:"guest"`
	// Source and Destination are the VM and where it was sent, as the
	// command line gave them (--qmp, --to): a script running several
	// migrations at once read them only out of x-pagecast, which QEMU's
	// engine has not, and a cancelled migration not even there (walk 83).
	Source      string `json:"source,omitempty"`
	Destination string `json:"destination,omitempty"`
	Engine      string `json:"engine,omitempty"` // pagecast or qemu
	// Mode is the mode migrated with: the one auto chose under --mode
	// auto (its predictions are in query-migrate's x-pagecast.auto). Where
	// the source was refused before its engine was known, Mode and Engine
	// are what the command line asked, if it named them.
	Mode string `json:"mode,omitempty"`
	// GuestPaused is the guest's own pause in ms, the source's STOP to the
	// destination's RESUME, where --dest-qmp let pagecast see both.
	GuestPaused *int64 `json:"guest-paused,omitempty"`
	// DowntimeLimit is --downtime-limit in ms, to hold downtime and
	// guest-paused to (a migration that completes over it exits 0).
	DowntimeLimit int64          `json:"downtime-limit,omitempty"`
	QEMU          *qemuOutcome   `json:"qemu,omitempty"`
	Info          *migrator.Info `json:"query-migrate,omitempty"`

	began  bool                  // migrate was accepted: a migration ran, or runs on
	linger func(context.Context) // --metrics: serve them on for Prometheus once the rest is said
	// settled is the status where QEMU's source said completed but the
	// guest did not run on the destination (settleDestination): failed
	// where it exited, unknown where it may yet.
	settled string
}

// Where the guest is, in migrationOutcome.Guest.
const (
	guestSource      = "source"
	guestDestination = "destination"
	guestLost        = "lost"
	guestUnknown     = "unknown"
	// guestElsewhere: the source had migrated it away already
	// (postmigrate), to run where that migration took it.
	guestElsewhere = "elsewhere"
	// guestNone: the VM given as the source holds no guest yet, a
	// destination waiting for its migration (inmigrate).
	guestNone = "none"
)

// qemuOutcome is how QEMU's own migration was set up and ended (--engine
// qemu): what the summary says as "qemu capabilities" and the rest.
type qemuOutcome struct {
	Capabilities []string            `json:"capabilities"`
	Parameters   migrator.QEMUParams `json:"parameters"`
	// Switched says why post-copy was started, if it was.
	Switched string `json:"switched-to-postcopy,omitempty"`
	// Forced: the round cap forced the switch-over (--max-rounds).
	Forced   bool              `json:"switch-over-forced,omitempty"`
	Slowdown migrator.Slowdown `json:"slowdown"`
}

// ended records the migration's last query-migrate reply.
func (o *migrationOutcome) ended(i migrator.Info) {
	o.began = true
	o.Info = &i
	if i.Pagecast != nil && i.Pagecast.Mode != "" {
		o.Mode = i.Pagecast.Mode
	}
}

// paused records the guest's own pause, if known (not negative).
func (o *migrationOutcome) paused(d time.Duration) {
	if d >= 0 {
		ms := d.Round(time.Millisecond).Milliseconds()
		o.GuestPaused = &ms
	}
}

// qemuPlan records a QEMU migration's plan.
func (o *migrationOutcome) qemuPlan(p *migrator.QEMUPlan) {
	o.Mode = p.Mode
	o.QEMU = &qemuOutcome{Capabilities: p.Capabilities, Parameters: p.Parameters,
		Switched: p.Switched, Forced: p.Forced, Slowdown: p.Slowdown}
	if o.QEMU.Capabilities == nil {
		o.QEMU.Capabilities = []string{}
	}
}

// write prints o as one line of JSON, err being migrate's outcome.
func (o *migrationOutcome) write(w io.Writer, err error) error {
	o.settle(err)
	return json.NewEncoder(w).Encode(o)
}

// settle sets o's status, error and guest from what it holds and err,
// migrate's outcome.
func (o *migrationOutcome) settle(err error) {
	switch {
	case errors.Is(err, migrator.ErrMonitorSilent):
		// The last reply is kept, but the status is not known: it said
		// "active" (review 63).
		o.Status = "unknown"
	case o.settled != "":
		// QEMU's source said completed, and the guest did not run on
		// the destination (settleDestination).
		o.Status = o.settled
	case o.Info != nil && o.Info.Status != "":
		o.Status = o.Info.Status
	case o.began:
		o.Status = "unknown"
	default:
		o.Status = migrator.StatusNone
	}
	if err != nil {
		o.Error = oneLine(err)
	}
	var refused *migrator.NotRunningError
	if o.Guest == "" && errors.As(err, &refused) {
		switch refused.State {
		case "postmigrate":
			o.Guest = guestElsewhere
		case "inmigrate":
			o.Guest = guestNone
		}
	}
	if o.Guest == "" {
		switch {
		case o.Status == migrator.StatusCompleted || migrator.InPostcopy(o.Status):
			o.Guest = guestDestination
		case o.Status == migrator.StatusNone || o.Status == migrator.StatusFailed || o.Status == migrator.StatusCancelled:
			o.Guest = guestSource
		default:
			o.Guest = guestUnknown
		}
	}
}

// textOut is where migrate's text for people goes: stdout, or stderr
// under --json, where stdout has the outcome's JSON alone.
func textOut(c *cli.Context) io.Writer {
	if c.Bool("json") {
		return c.App.ErrWriter
	}
	return c.App.Writer
}

// outcomeWhenRefused has migrate --json print its outcome for a command
// line refused before the migration is tried (a flag missing, misspelt or
// of a bad value) too: it printed nothing on stdout there (review 63).
func outcomeWhenRefused(cmd *cli.Command) {
	before, onUsage := cmd.Before, cmd.OnUsageError
	cmd.Before = func(c *cli.Context) error {
		if before == nil {
			return nil
		}
		err := before(c)
		if err != nil && c.Bool("json") {
			(&migrationOutcome{Source: c.String("qmp"), Destination: c.String("to")}).write(c.App.Writer, err)
		}
		return err
	}
	cmd.OnUsageError = func(c *cli.Context, err error, sub bool) error {
		if onUsage != nil {
			err = onUsage(c, err, sub)
		}
		if jsonAsked(c, cmd.Flags) {
			(&migrationOutcome{}).write(c.App.Writer, err)
		}
		return err
	}
}

// jsonAsked reports whether --json is on a command line whose flags did
// not parse, read as the flag package reads it: up to the first argument
// that is not a flag, a flag that takes a value skipping it (--qmp --json
// is --qmp's value), --json=V as strconv.ParseBool reads V (review 64). The
// app's context, c's parent, holds the line whole from the command's name.
func jsonAsked(c *cli.Context, flags []cli.Flag) bool {
	lineage := c.Lineage()
	if len(lineage) < 2 {
		return false
	}
	args := argsOf(lineage[1])
	takesValue := map[string]bool{}
	for _, f := range flags {
		_, isBool := f.(*cli.BoolFlag)
		for _, n := range f.Names() {
			takesValue[n] = !isBool
		}
	}
	asked := false // the last --json wins, as in the flag package (review 66)
	for i := 1; i < len(args); i++ {
		a := args[i]
		if a == "--" || len(a) < 2 || a[0] != '-' {
			break
		}
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		switch {
		case name == "json" && hasVal:
			on, err := strconv.ParseBool(val)
			asked = err == nil && on
		case name == "json":
			asked = true
		case takesValue[name] && !hasVal:
			i++
		}
	}
	return asked
}

// argsOf is l's arguments; none where l has no flag set (urfave/cli's
// context of a command whose flags failed to parse, or its bare root),
// whose Args dereferences nil.
func argsOf(l *cli.Context) (args []string) {
	defer func() {
		if recover() != nil {
			args = nil
		}
	}()
	return l.Args().Slice()
}
