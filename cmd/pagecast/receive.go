package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/pagecast/pagecast/internal/units"
	"github.com/pagecast/pagecast/migrator"
	"github.com/pagecast/pagecast/qemuguest"
)

func receiveCommand() *cli.Command {
	return &cli.Command{
		Name:      "receive",
		Usage:     "take a migration by pagecast's engine into a QEMU you started with -incoming defer, and run the guest there",
		ArgsUsage: " ",
		Description: "The destination end of pagecast's engine for a QEMU that pagecast did not start (pagecast vm run\n" +
			"--monitor qemu --incoming is the same for one it starts). Start QEMU as the source runs (the\n" +
			"same machine, devices and memory size) with its guest RAM shared and waiting for a migration:\n\n" +
			"   qemu-system-x86_64 … -machine pc,memory-backend=ram -m 4G \\\n" +
			"     -object memory-backend-file,id=ram,size=4G,mem-path=/dev/shm/dst.ram,share=on \\\n" +
			"     -qmp unix:/tmp/dst.sock,server=on,wait=off -incoming defer\n\n" +
			"(memory-backend-memfd,share=on works too here, but not on a source of QEMU 8.1 or later, whose\n" +
			"migration sends a memfd's RAM with the device state). receive connects to that QMP socket, listens\n" +
			"on --listen for `pagecast migrate --to`, writes the pages it is sent into the guest RAM in place,\n" +
			"loads the vCPU and device state through QEMU's own migration (x-ignore-shared: QEMU sends no\n" +
			"RAM), checks the memory against the source's checksums and, once the source commits, runs the\n" +
			"guest (QMP cont; a guest paused on the source when it left stays paused). It exits once the guest\n" +
			"is there (status 0), or when the migration fails\n" +
			"(status 1; the guest stays with the source). QEMU serves one client per QMP socket: give QEMU a\n" +
			"second -qmp socket for migrate --dest-qmp or anything else that watches it meanwhile.\n\n" +
			"A connection that brings no valid handshake (a port scanner, another protocol, a source of\n" +
			"another memory size) is logged and the wait goes on. Plain TCP is for trusted networks; elsewhere\n" +
			"use --tls-cert/--tls-key/--tls-ca on both ends.\n\n" +
			"--paused leaves the guest paused once it has arrived and checked out, as QMP stop does on a QEMU\n" +
			"waiting with -incoming for its own migration; QMP cont runs it. (A stop sent to this QEMU while\n" +
			"receive waits is not seen: the state lands paused either way, and receive runs it.)",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "qmp", Required: true, Usage: "the destination QEMU's QMP socket: unix:PATH"},
			&cli.StringFlag{Name: "listen", Required: true, Usage: "where to wait for the source: tcp:HOST:PORT"},
			&cli.StringFlag{Name: "tls-cert", Usage: "mutual TLS: this end's certificate (PEM)"},
			&cli.StringFlag{Name: "tls-key", Usage: "mutual TLS: this end's private key (PEM)"},
			&cli.StringFlag{Name: "tls-ca", Usage: "mutual TLS: the CA that signed the source's certificate (PEM)"},
			&cli.BoolFlag{Name: "paused", Usage: "leave the guest paused once it has arrived (QMP cont runs it)"},
			&cli.BoolFlag{Name: "background", Usage: "return once it listens, leaving it to take the migration in a session of its own, its output still on this stdout and stderr (so $(…) or a pipe would wait for it to end: send them to a file); exit 1 if it fails first, its error said"},
		},
		Action: holdsOnClosedOutput(runReceive),
	}
}

func runReceive(c *cli.Context) error {
	if c.Args().Present() {
		return fmt.Errorf("receive takes no arguments (got %q)", c.Args().First())
	}
	if c.Bool("background") && !inChild {
		return runInBackground(c, "receive")
	}
	log := slog.Default()
	ctx, cancel := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer cancel()
	spec := c.String("qmp")
	path, ok := strings.CutPrefix(spec, "unix:")
	if !ok {
		return fmt.Errorf("--qmp %q: want unix:PATH", spec)
	}
	serverTLS, err := tlsConfig(c, true)
	if err != nil {
		return err
	}
	if _, err := migrator.ParseURI(c.String("listen")); err != nil {
		return fmt.Errorf("--listen: %w", err) // before the QEMU is dialled
	}
	// A QEMU started a moment before, in the same script, has yet to
	// make its socket (walk 152: "no such file or directory").
	if err := awaitSocket(ctx, path, socketWait, log); err != nil {
		return err
	}
	dest, err := dialDest(ctx, path)
	if err != nil && strings.Contains(err.Error(), "has not been found") {
		return fmt.Errorf("the destination QEMU: %w (is it pagecast's own monitor? receive is for a QEMU started with -incoming defer; a pagecast vm run takes a migration itself with --incoming)", err)
	}
	if err != nil {
		return fmt.Errorf("the destination QEMU: %w", err)
	}
	defer dest.Close()
	if ok, st := dest.Waiting(); !ok {
		return fmt.Errorf("the QEMU at %s is %s, not waiting for a migration: start it with -incoming defer", spec, st)
	}
	l, err := migrator.Listen(c.String("listen"), serverTLS)
	if err != nil {
		return fmt.Errorf("--listen: %w", err)
	}
	defer l.Close()
	out := c.App.Writer
	fmt.Fprintf(out, "QEMU pid %d, %s of guest RAM shared; waiting for pagecast migrate --to %s%s\n",
		dest.PID(), units.FormatBytes(float64(dest.MemoryBytes())), c.String("listen"), overTLS(serverTLS))
	sayReady()
	res, err := receive(ctx, l, qemuDestination(dest, c.Bool("paused")), serverTLS, log, nil, nil)
	if err != nil {
		if errors.Is(err, migrator.ErrNoHandshake) || errors.Is(err, errStoppedWaiting) {
			return err // no migration began
		}
		return fmt.Errorf("the migration failed; the guest stays with the source: %w", err)
	}
	printReceived(out, res, c.Bool("paused"))
	sayOutcome(c, "the migration was received: the guest is here")
	return nil
}

// socketWait is how long receive waits for a QMP socket that is not there
// yet: a QEMU just started makes it within a second.
const socketWait = 10 * time.Second

// awaitSocket waits up to d for path to exist, saying so once; it returns
// nil once it does or d has passed (the dial then says what is wrong), an
// error if ctx ends first.
func awaitSocket(ctx context.Context, path string, d time.Duration, log *slog.Logger) error {
	deadline := time.Now().Add(d)
	for said := false; ; {
		if _, err := os.Stat(path); err == nil || !errors.Is(err, fs.ErrNotExist) || time.Now().After(deadline) {
			return nil
		}
		if !said {
			log.Info("waiting for the QEMU's QMP socket to appear", "qmp", path, "for", d)
			said = true
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("stopped while waiting for the QEMU's QMP socket unix:%s to appear: nothing was changed", path)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// dialDest is qemuguest.DialDest, given up on an interrupt (walk 134: a
// monitor that greeted and then fell silent held receive past SIGINT and
// SIGTERM; DialDest itself gives such a monitor up in 10 s).
func dialDest(ctx context.Context, path string) (*qemuguest.Dest, error) {
	d, ok, err := unlessDone(ctx, func() (*qemuguest.Dest, error) { return qemuguest.DialDest(path) }, (*qemuguest.Dest).Close)
	if !ok {
		return nil, fmt.Errorf("stopped while attaching to the QEMU at unix:%s, which had not answered yet: nothing was changed", path)
	}
	return d, err
}

// unlessDone runs attach and returns what it gives, or ok false once ctx
// is done first (a signal, a deadline), leaving attach to end on its own
// and release, if not nil, to close what it then gives.
func unlessDone[T any](ctx context.Context, attach func() (T, error), release func(T) error) (v T, ok bool, err error) {
	type attached struct {
		v   T
		err error
	}
	ch := make(chan attached, 1)
	go func() {
		v, err := attach()
		ch <- attached{v, err}
	}()
	select {
	case a := <-ch:
		return a.v, true, a.err
	case <-ctx.Done():
		if release != nil {
			go func() {
				if a := <-ch; a.err == nil {
					release(a.v)
				}
			}()
		}
		return v, false, nil
	}
}

// pausedDest is a QEMU destination whose guest stays paused once it has
// arrived: the state lands paused (the source's run state at the
// switch-over), and Start leaves it so.
type pausedDest struct{ *qemuguest.Dest }

func (pausedDest) Start() error { return nil }

// qemuDestination is dest, whose guest stays paused once it has arrived
// if paused (--paused).
func qemuDestination(dest *qemuguest.Dest, paused bool) migrator.Destination {
	if paused {
		return pausedDest{dest}
	}
	return dest
}
