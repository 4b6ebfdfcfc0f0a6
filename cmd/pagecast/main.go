// Command pagecast profiles how a virtual machine dirties its memory,
// predicts which pages it will dirty next and live-migrates it with that
// knowledge. See README.md.
package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"

	"github.com/pagecast/pagecast/internal/buildinfo"
	"github.com/pagecast/pagecast/internal/printable"
	"github.com/urfave/cli/v2"
)

func main() {
	takeReadyPipe()
	app := newApp()
	out := &outputCheck{w: os.Stdout}
	app.Writer = out
	err := app.Run(os.Args)
	if err == nil {
		err = out.failed()
	}
	if err != nil {
		if !errors.As(err, new(reported)) {
			fmt.Fprintf(os.Stderr, "pagecast: %s\n", oneLine(err))
		}
		os.Exit(1)
	}
}

// outputCheck is standard output, keeping the first write to it that
// failed: a command whose result was not written (a full disk) exits 1
// saying so, where it exited 0 with an empty file (walk 72). A reader
// gone (EPIPE: "| head") is not a failure: the output was read as far as
// it was wanted.
type outputCheck struct {
	w       io.Writer
	mu      sync.Mutex
	err     error
	outcome string // what a command that moves a guest did (sayOutcome)
}

// sayOutcome has a failure to write the command's output say what the
// command did: a migration that completed, its summary lost to a full
// disk, exited 1 saying only that the write failed, and a script took the
// guest for still at the source (review 75).
func sayOutcome(c *cli.Context, outcome string) {
	if o, ok := c.App.Writer.(*outputCheck); ok {
		o.mu.Lock()
		o.outcome = outcome
		o.mu.Unlock()
	}
}

func (o *outputCheck) Write(p []byte) (int, error) {
	n, err := o.w.Write(p)
	if err != nil && !errors.Is(err, syscall.EPIPE) {
		o.mu.Lock()
		if o.err == nil {
			o.err = err
		}
		o.mu.Unlock()
	}
	return n, err
}

// failed is the first write that failed, as the command's error.
func (o *outputCheck) failed() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.err == nil {
		return nil
	}
	if o.outcome != "" {
		return fmt.Errorf("write standard output: %w: what the command printed there is incomplete; %s", o.err, o.outcome)
	}
	return fmt.Errorf("write standard output: %w: what the command printed there is incomplete", o.err)
}

// reported is an error a command has printed already, before work it
// does after failing (migrate --metrics lingers for Prometheus): main
// exits 1 without printing it again.
type reported struct{ error }

func (r reported) Unwrap() error { return r.error }

// holdsOnClosedOutput is action with SIGPIPE ignored while it runs, for
// the commands that hold a guest, a migration or a server: a write to a
// closed stdout or stderr (a logger gone, "| head -1") then fails unsaid,
// where the Go runtime's default ended the process by the signal and with
// it the guest, leaving its RAM on /dev/shm (found by a security walk).
// The commands whose output is the point (trace export, the tables) keep
// the default, ending quietly as "| head" expects.
//
// The signal is caught (Notify), not ignored: an ignored one stays ignored
// in every process started after (QEMU, a shell, a decompressor) and, as
// signal.Reset does not undo Ignore for SIGPIPE, in this one (review 63).
//
// It stays caught once such a command has run: main prints the command's
// error after it returns, and a SIGPIPE then ended a failed migrate with
// status 141 instead of 1 (walk 68).
func holdsOnClosedOutput(action cli.ActionFunc) cli.ActionFunc {
	return func(c *cli.Context) error {
		catchPipe.Do(func() { signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE) })
		return action(c)
	}
}

// catchPipe catches SIGPIPE once for the process (holdsOnClosedOutput).
var catchPipe sync.Once

// oneLine is err's message on one line, as main prints errors, with no
// control characters: a peer's or a QEMU's text in it cannot rewrite the
// user's terminal.
func oneLine(err error) string { return printable.Line(err.Error()) }

func newApp() *cli.App {
	app := &cli.App{
		Name:    "pagecast",
		Version: buildinfo.Version(),
		Usage:   "watch how a VM dirties its memory, predict it, and live-migrate with that knowledge",
		Description: "pagecast runs its own small guest, on its own KVM monitor or under QEMU (KVM or TCG), or drives\n" +
			"a QEMU you started through QMP; it records which guest pages are written and when, forecasts\n" +
			"which will be written next, and uses that to migrate the machine efficiently.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "log-level", Value: "info", Usage: "log verbosity: debug, info, warn or error"},
		},
		Before: func(c *cli.Context) error {
			var level slog.Level
			if err := level.UnmarshalText([]byte(c.String("log-level"))); err != nil {
				return fmt.Errorf("--log-level %q: want debug, info, warn or error", c.String("log-level"))
			}
			slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})))
			return nil
		},
		Commands: []*cli.Command{
			vmCommand(),
			profileCommand(),
			demoCommand(),
			traceCommand(),
			predictCommand(),
			migrateCommand(),
			receiveCommand(),
			simulateCommand(),
			pluginCommand(),
			reportCommand(),
		},
		// pagecast NAME with no command NAME ("No help topic for 'NAME'",
		// urfave/cli's words, did not say it was not a command).
		Action: func(c *cli.Context) error {
			if !c.Args().Present() {
				return cli.ShowAppHelp(c)
			}
			var names []string
			for _, cmd := range c.App.VisibleCommands() {
				if cmd.Name != "help" {
					names = append(names, cmd.Name)
				}
			}
			return fmt.Errorf("no command %q: the commands are %s (see pagecast --help)", c.Args().First(), strings.Join(names, ", "))
		},
		// Errors are printed once, by main, on one line.
		ExitErrHandler: func(*cli.Context, error) {},
		OnUsageError:   usageError,
	}
	setUsageError(app.Commands)
	for _, c := range app.Commands {
		if c.Name == "migrate" {
			outcomeWhenRefused(c)
		}
	}
	return app
}

// usageError reports a bad flag on one line, pointing at --help, instead of
// printing the whole usage.
func usageError(c *cli.Context, err error, _ bool) error {
	name := c.App.Name
	if c.Command != nil && c.Command.HelpName != "" {
		name = c.Command.HelpName
	}
	if m := badValue.FindStringSubmatch(err.Error()); m != nil && c.Command != nil {
		val, flag := m[1], m[2]
		for _, f := range c.Command.Flags {
			if !slices.Contains(f.Names(), flag) {
				continue
			}
			if m[3] == "value out of range" {
				// Not Go's "for flag -warmup: value out of range"
				// (walk 134).
				return fmt.Errorf("--%s %s: out of range of a number here (see %s --help)", flag, val, name)
			}
			switch f.(type) {
			case *cli.DurationFlag:
				if number.MatchString(val) {
					return fmt.Errorf("--%s %s: a duration needs a unit, e.g. %sms or %ss (see %s --help)", flag, val, val, val, name)
				}
				if durationLike.MatchString(val) {
					// Not "want a duration such as 500ms" for 9999999999999h.
					return fmt.Errorf("--%s %s: out of range of a duration (at most 2562047h, about 292 years; see %s --help)", flag, val, name)
				}
				return fmt.Errorf("--%s %s: want a duration such as 500ms, 2s or 1m30s (see %s --help)", flag, val, name)
			case *cli.UintFlag, *cli.Uint64Flag:
				return fmt.Errorf("--%s %s: want a whole number, 0 or more (see %s --help)", flag, val, name)
			case *cli.IntFlag, *cli.Int64Flag:
				return fmt.Errorf("--%s %s: want a whole number (see %s --help)", flag, val, name)
			case *cli.Float64Flag:
				return fmt.Errorf("--%s %s: want a number (see %s --help)", flag, val, name)
			}
		}
	}
	if f, ok := strings.CutPrefix(err.Error(), "flag provided but not defined: -"); ok {
		// Go's flag package names it with one dash (walk 65).
		return fmt.Errorf("no flag --%s (see %s --help)", strings.TrimLeft(f, "-"), name)
	}
	return fmt.Errorf("%w (see %s --help)", err, name)
}

// badValue is urfave/cli's error for a flag's value its type does not
// parse: its "parse error" says neither what was wrong nor what would do.
var badValue = regexp.MustCompile(`^invalid value "([^"]*)" for flag -+([A-Za-z0-9-]+): (parse error|value out of range)`)

// number is a number alone, as a duration flag is often mistakenly given.
var number = regexp.MustCompile(`^\d+(\.\d+)?$`)

// durationLike is the syntax of Go's durations, whose value may still be
// out of range.
var durationLike = regexp.MustCompile(`^[-+]?((\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h))+$`)

func setUsageError(cmds []*cli.Command) {
	for _, c := range cmds {
		c.OnUsageError = usageError
		requireOnOneLine(c)
		if len(c.Subcommands) == 0 {
			flagsFirst(c)
			checkArgs(c)
		} else if c.Action == nil {
			c.Action = unknownSubcommand
		}
		setUsageError(c.Subcommands)
	}
}

// unknownSubcommand is the action of a command of subcommands given none
// it has: its help for none, an error naming them for another word
// (urfave/cli said "No help topic for 'bogus'").
func unknownSubcommand(c *cli.Context) error {
	if !c.Args().Present() {
		return cli.ShowSubcommandHelp(c)
	}
	var names []string
	for _, sub := range c.Command.Subcommands {
		if !sub.Hidden && sub.Name != "help" {
			names = append(names, sub.Name)
		}
	}
	return fmt.Errorf("%s %s: no such command; %s has %s (see pagecast %s --help)", c.Command.Name, c.Args().First(),
		c.Command.Name, strings.Join(names, ", "), c.Command.Name)
}

// flagsFirst makes c refuse a flag after its arguments: urfave/cli stops
// reading flags at the first argument, so "trace import FILE --memory
// 256M" said "needs --memory" of a --memory given.
func flagsFirst(c *cli.Command) {
	before := c.Before
	c.Before = func(ctx *cli.Context) error {
		for _, a := range ctx.Args().Slice() {
			if a == "--" {
				break
			}
			if len(a) > 1 && a[0] == '-' && ctx.Args().First() != a {
				return fmt.Errorf("%s after the argument %q is not read as a flag: put flags before the arguments (see %s --help)",
					a, ctx.Args().First(), ctx.Command.HelpName)
			}
		}
		if before != nil {
			return before(ctx)
		}
		return nil
	}
}

// argsHint says where what a stray argument might have meant goes.
var argsHint = map[string]string{
	"plugin":   "the folder is --dir",
	"simulate": "the workload goes in --trace or --synthetic",
	"profile":  "the VM is --qmp or --pid",
}

// checkArgs makes c, before anything else, refuse a string flag whose
// value is another of its flags (urfave/cli takes "--out --bandwidth 1G"
// as --out "--bandwidth" and an argument "1G", and the error then named
// the wrong flag, or none), and, where c takes no arguments (no
// ArgsUsage), refuse one rather than ignore it.
func checkArgs(c *cli.Command) {
	before := c.Before
	c.Before = func(ctx *cli.Context) error {
		names := map[string]bool{}
		for _, f := range c.Flags {
			for _, n := range f.Names() {
				names[n] = true
			}
		}
		for _, f := range c.Flags {
			var vals []string
			switch f.(type) {
			case *cli.StringFlag:
				vals = []string{ctx.String(f.Names()[0])}
			case *cli.StringSliceFlag:
				vals = ctx.StringSlice(f.Names()[0])
			default:
				continue
			}
			for _, v := range vals {
				if name, _, _ := strings.Cut(strings.TrimLeft(v, "-"), "="); strings.HasPrefix(v, "-") && names[name] {
					return fmt.Errorf("--%s was given %q as its value: --%s needs a value before the next flag (see %s --help)",
						f.Names()[0], v, f.Names()[0], ctx.Command.HelpName)
				}
			}
		}
		if c.ArgsUsage == "" && ctx.Args().Present() {
			hint := argsHint[c.Name]
			if hint == "" {
				hint = "every value is a flag's"
			}
			return fmt.Errorf("%s takes no arguments (got %q): %s (see %s --help)", strings.TrimPrefix(ctx.Command.HelpName, "pagecast "),
				ctx.Args().First(), hint, ctx.Command.HelpName)
		}
		if before != nil {
			return before(ctx)
		}
		return nil
	}
}

// requireOnOneLine checks c's required flags itself, before its action,
// so that a missing one is said on one line pointing at --help: urfave/cli
// prints the whole usage first (63 lines for migrate).
func requireOnOneLine(c *cli.Command) {
	var required []string
	for _, f := range c.Flags {
		if s, ok := f.(*cli.StringFlag); ok && s.Required {
			s.Required = false
			required = append(required, s.Name)
		}
	}
	if len(required) == 0 {
		return
	}
	before := c.Before
	c.Before = func(ctx *cli.Context) error {
		var missing []string
		for _, name := range required {
			if !ctx.IsSet(name) {
				missing = append(missing, "--"+name)
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("%s needs %s (see %s --help)", strings.TrimPrefix(ctx.Command.HelpName, ctx.App.Name+" "), strings.Join(missing, " and "), ctx.Command.HelpName)
		}
		if before != nil {
			return before(ctx)
		}
		return nil
	}
}
