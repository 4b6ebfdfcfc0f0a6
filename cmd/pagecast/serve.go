package main

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/pagecast/pagecast/collector"
	"github.com/pagecast/pagecast/predictor"
	"github.com/pagecast/pagecast/predictor/service"
	"github.com/pagecast/pagecast/trace"
)

func predictServeCommand() *cli.Command {
	return &cli.Command{
		Name:  "serve",
		Usage: "serve per-page dirty probabilities over HTTP, from a trace or a live VM",
		Description: "Keeps a predictor for each VM, fed by a trace replayed at its recorded pace (--trace, repeatable;\n" +
			"--replay, the default, paces it in real time, --speed scales the pace)\n" +
			"or by profiling a live VM (--collector unix:QMP: eBPF on KVM, needs root; the TCG plugin on a QEMU\n" +
			"under TCG), and serves:\n" +
			"  GET /v1/vms                                  the VMs\n" +
			"  GET /v1/vms/{id}                             forecast: predicted dirty pages and rate, working set, last epoch's error\n" +
			"  GET /v1/vms/{id}/probabilities?start=&count=&horizon=\n" +
			"                                               per-page probabilities, as fitted, of being dirtied within\n" +
			"                                               the next horizon epochs (1-32, default 1), for a range of pages\n" +
			"  GET /v1/vms/{id}/hotset?threshold=&start=&limit=&horizon=\n" +
			"                                               pages predicted dirty (probability at least threshold, 0.5)\n" +
			"  GET /metrics                                 predicted vs actual dirty pages per epoch, Brier score\n" +
			"A VM's id, its vm label in /metrics, is its trace file's base name (a single trace's: --name), or for --collector --name:\n" +
			"by default QEMU's -name, else the QMP socket's file name without its extension, as profile and\n" +
			"migrate name it, so that a VM's series carry one name across them.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "listen", Value: "127.0.0.1:9470", Usage: "address to serve on (loopback by default)"},
			&cli.StringSliceFlag{Name: "trace", Usage: "trace file to replay (pagecast profile --out, or trace import)"},
			&cli.BoolFlag{Name: "replay", Value: true, Usage: "pace each trace's epochs in real time, one every epoch length / --speed, so that dashboards can be watched from a recorded trace without a VM; --replay=false feeds every epoch at once (as --speed 0)"},
			&cli.Float64Flag{Name: "speed", Value: 1, Usage: fmt.Sprintf("trace replay speed, 1 = the recorded pace, up to %g (at most an epoch a millisecond); 0 = at once, one pass", maxSpeed)},
			&cli.IntFlag{Name: "max-conns", Value: 4096, Usage: "most connections held at once; one more closes the one that has waited longest for a request (an idle keep-alive, a client that sends nothing)"},
			&cli.BoolFlag{Name: "loop", Value: true, Usage: "replay traces again from the start when they end"},
			&cli.StringFlag{Name: "collector", Usage: "profile a live VM through its QMP socket, unix:PATH"},
			&cli.StringFlag{Name: "name", Action: checkName, Usage: "the VM's id and vm label: with --collector (default: QEMU's -name, else the QMP socket's file name without its extension, as profile --name; it was \"live\" for every VM before 2026-12-05), or with a single --trace (default: its file's base name), e.g. the name profile gave it"},
			&cli.DurationFlag{Name: "epoch", Value: 100 * time.Millisecond, Usage: "epoch length for --collector (100ms: the profiler's and the migration engine's)"},
			&cli.IntFlag{Name: "parts", Value: 1, Usage: fmt.Sprintf("tell the model in which of this many parts of each epoch a page was written: each trace's epochs are joined this many to one (a trace profiled with --epoch 25ms, served with --parts 4: epochs of 100 ms), and --collector profiles in epochs of --epoch divided by it; 1 to %d", maxParts)},
		},
		Action: holdsOnClosedOutput(runServe),
	}
}

// maxSpeed bounds --speed.
const maxSpeed = 1e6

// Server timeouts: a client that sends nothing, reads nothing or idles on
// a kept-alive connection is dropped.
const (
	serveHeaderTimeout = 5 * time.Second
	serveReadTimeout   = 10 * time.Second
	serveWriteTimeout  = 30 * time.Second
	serveIdleTimeout   = 30 * time.Second
)

func runServe(c *cli.Context) error {
	// One VM named: a trace's, whose file is named otherwise than the VM
	// profile's metrics call it (walk 106: "vm", after vm.pct, beside
	// "src" on one dashboard), or --collector's.
	traces := c.StringSlice("trace")
	named := "" // the trace --name names
	if c.IsSet("name") && c.String("collector") == "" {
		if len(traces) != 1 {
			return errors.New("--name names one VM: the --collector's, or a single --trace's (with several, each is named by its file's base name)")
		}
		named = c.String("name")
	}
	log := slog.Default()
	if len(c.StringSlice("trace")) == 0 && c.String("collector") == "" {
		return errors.New("give --trace FILE or --collector unix:PATH")
	}
	speed := c.Float64("speed")
	if !(speed >= 0 && speed <= maxSpeed) { // also NaN
		return fmt.Errorf("--speed %v: want 0 (at once) or a speed up to %g", speed, maxSpeed)
	}
	if !c.Bool("replay") {
		speed = 0
	}
	if c.IsSet("loop") && c.Bool("loop") && speed == 0 {
		return errors.New("--loop replays a paced trace again: at --speed 0 (or --replay=false) a trace is fed at once, one pass")
	}
	if c.IsSet("epoch") && c.String("collector") == "" {
		return errors.New("--epoch is for --collector: a trace's epochs are the length it was recorded in")
	}
	parts := c.Int("parts")
	if parts < 1 || parts > maxParts {
		return fmt.Errorf("--parts %d: want 1 to %d parts an epoch", parts, maxParts)
	}
	if c.String("listen") == "" {
		// Not every interface on a port the kernel picks, as Go's
		// net.Listen takes "" (walk 134: an unset shell variable).
		return errors.New("--listen \"\": give host:port (the default, 127.0.0.1:9470, is loopback only)")
	}
	if l := c.String("listen"); strings.HasPrefix(l, "unix:") || strings.HasPrefix(l, "tcp:") || strings.Contains(l, "/") {
		// Not "lookup tcp//tmp/s.sock: unknown port" (walk 134).
		return fmt.Errorf("--listen %q: predict serve serves HTTP on TCP: give host:port", l)
	}
	maxConns := c.Int("max-conns")
	if maxConns < 1 {
		return fmt.Errorf("--max-conns %d: want 1 or more", maxConns)
	}
	ctx, cancel := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer cancel()
	svc := service.New(log)

	// Load in the background so that a signal ends a long load at once.
	loaded := make(chan error, 1)
	go func() { loaded <- loadServeTraces(ctx, log, svc, traces, named, parts, speed, c.Bool("loop")) }()
	select {
	case err := <-loaded:
		if err != nil {
			return err
		}
	case <-ctx.Done():
		return errors.New("interrupted while loading traces")
	}
	// Listen before a collector starts: a return on an address in use
	// then closes no collector under its running goroutine.
	l, err := net.Listen("tcp", c.String("listen"))
	if err != nil {
		return fmt.Errorf("--listen: %w", err)
	}
	defer l.Close() // for a failure before it is served; then a no-op
	// A collector that stops (its VM exited) ends the service with its
	// error, read once it is done.
	var colErr error
	colDone := make(chan struct{})
	if spec := c.String("collector"); spec == "" {
		close(colDone)
	} else {
		path, ok := strings.CutPrefix(spec, "unix:")
		if !ok {
			return fmt.Errorf("--collector %q: want unix:PATH", spec)
		}
		epoch := c.Duration("epoch")
		if epoch/time.Duration(parts) < time.Millisecond {
			return fmt.Errorf("--epoch %v in %d parts: want parts of 1ms or more", epoch, parts)
		}
		col, err := attachCollector(ctx, collector.Config{QMP: path, Epoch: epoch / time.Duration(parts), Log: log}, "served")
		if err != nil {
			return err
		}
		defer col.Close()
		t := col.Target()
		// Named as profile and migrate name it: every collector's VM was
		// "live", two VMs' series one (walk 95).
		name := vmName(c, path, col.Monitor())
		vm, err := svc.AddVM(name, t.MaxPages(), 4096, epoch, fmt.Sprintf("%s pid %d", t.Kind, t.PID))
		if err != nil && !c.IsSet("name") && errors.Is(err, service.ErrVMExists) {
			return fmt.Errorf("--collector: %w: a --trace has that name; give --name", err)
		}
		if err != nil {
			return fmt.Errorf("--collector: %w", err)
		}
		vm.SetHook(col.Hook())
		go func() {
			defer close(colDone)
			var got [][]uint64 // the parts of the epoch so far
			// A VM migrated away ends the service, as profile's ends: it
			// served a guest that wrote nothing, and the dashboards'
			// PagecastPredictorDown never fired (walk 129).
			watch := runStateWatch{mon: col.Monitor(), out: c.App.ErrWriter}
			observe := func(e collector.Epoch) error {
				if len(e.Pages) == 0 {
					if err := watch.check(); err != nil {
						return err
					}
				}
				if got = append(got, e.Pages); len(got) == parts {
					vm.ObserveParts(got)
					got = nil
				}
				return nil
			}
			if err := col.Run(ctx, observe); err != nil && ctx.Err() == nil {
				log.Error("collector stopped", "err", err)
				colErr = err
				cancel()
			}
		}()
	}

	srv := newHTTPServer(svc.Handler())
	go func() {
		<-ctx.Done()
		shut, done := context.WithTimeout(context.Background(), 2*time.Second)
		defer done()
		srv.Shutdown(shut)
	}()
	addr := servedAddr(c.String("listen"), l.Addr())
	fmt.Fprintf(c.App.Writer, "serving forecasts on http://%s/v1/vms and metrics on http://%s/metrics%s\n", addr, addr, everyInterface(l.Addr()))
	serveErr := serveLimited(srv, l, maxConns)
	// The collector's goroutine ends before its deferred Close unmaps
	// what it reads (returning at once on a serve error, it went on
	// running over the closed collector; found by a review walk).
	cancel()
	<-colDone
	if serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) {
		return serveErr
	}
	if errors.Is(colErr, errMigratedAway) {
		return fmt.Errorf("--collector: %w (run state postmigrate): its guest runs elsewhere now, and the service ends; serve it there with --collector on the destination's QMP socket", colErr)
	}
	if colErr != nil {
		return fmt.Errorf("--collector: %w", colErr)
	}
	return nil
}

// loadServeTraces reads each trace, adds its VM to svc, named after its
// file or, for a single trace, name where it is not "", and starts its
// replay. A trace of a huge guest is kept on a predictor.PageMap.
func loadServeTraces(ctx context.Context, log *slog.Logger, svc *service.Service, paths []string, name string, parts int, speed float64, loop bool) error {
	for _, path := range paths {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if predictor.IsCSV(path) {
			return fmt.Errorf("%s is a CSV trace: make it a trace file first (pagecast trace import --memory SIZE -o %s.pct %s)", path,
				strings.TrimSuffix(strings.TrimSuffix(filepath.Base(path), ".gz"), ".csv"), path)
		}
		meta, epochs, damage, err := trace.ReadFile(path)
		if err != nil {
			return err
		}
		if len(epochs) == 0 && len(damage) > 0 {
			return fmt.Errorf("%s: no intact epoch to replay (%s; see pagecast trace info)", path, stretches(len(damage)))
		}
		if len(epochs) == 0 {
			return fmt.Errorf("%s: no epoch to replay (an empty recording)", path)
		}
		if len(damage) > 0 {
			log.Warn("trace damaged; serving its intact epochs", "trace", path, "damage", len(damage))
		}
		kept, pm := predictor.MapPages(epochs, meta.Pages())
		if err := checkPredictorMemory(path, kept); err != nil {
			return err
		}
		n := len(epochs)
		epochs, byParts := predictor.GroupEpochs(epochs, parts)
		if len(epochs) == 0 {
			return fmt.Errorf("%s: its %d epochs make no whole epoch of --parts %d (%d of them each)", path, n, parts, parts)
		}
		id := strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
		if name != "" {
			id = name
		}
		vm, err := svc.AddMappedVM(id, meta.Pages(), pm, uint64(meta.PageSize), meta.Epoch*time.Duration(parts), "trace "+path)
		switch {
		case errors.Is(err, service.ErrVMExists):
			return fmt.Errorf("%s: %w (a trace's VM is named after its file name, which another --trace has too: rename one)", path, err)
		case errors.Is(err, service.ErrUnnamable) && name == "":
			return fmt.Errorf("%s: %w (a trace's VM is named after its file name: rename it, or name the VM with --name)", path, err)
		case errors.Is(err, service.ErrUnnamable):
			return fmt.Errorf("--name: %w", err)
		case err != nil:
			return fmt.Errorf("%s: %w", path, err)
		}
		hook := meta.Hook
		if hook == "" {
			hook = "unknown" // a CSV's import, or a trace that does not say
		}
		vm.SetHook(hook)
		go service.Replay(ctx, vm, epochs, byParts, speed, loop)
	}
	return nil
}

// newHTTPServer is the HTTP server of predict serve and of --metrics:
// every phase of a connection has a deadline.
func newHTTPServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: serveHeaderTimeout,
		ReadTimeout:       serveReadTimeout,
		WriteTimeout:      serveWriteTimeout,
		IdleTimeout:       serveIdleTimeout,
		MaxHeaderBytes:    serveHeaderBytes - 4<<10, // Go's server reads 4 KiB past MaxHeaderBytes (walk 133: 431 came at 20 KiB)
	}
}

// serveHeaderBytes is the most a request's line and header may take:
// past it, 431 Request Header Fields Too Large.
const serveHeaderBytes = 16 << 10

// limitListener accepts at most n connections at once. Past that, the
// connection that has waited longest for a request (one not yet sent
// whole, or a kept-alive one between requests) is closed to make room for
// the one that came, and where every one is being answered Accept holds
// that one until one closes: 64 clients that kept their connections alive
// would otherwise hold the --metrics address from Prometheus for as long
// as they liked. srv's ConnState tells it which connections wait
// (serveLimited sets it).
func limitListener(l net.Listener, n int) *limitedListener {
	return &limitedListener{Listener: l, sem: make(chan struct{}, n), closed: make(chan struct{})}
}

// serveLimited serves srv on l, n connections at once (limitListener).
func serveLimited(srv *http.Server, l net.Listener, n int) error {
	ll := limitListener(l, n)
	srv.ConnState = ll.connState
	return srv.Serve(ll)
}

type limitedListener struct {
	net.Listener
	sem       chan struct{}
	closed    chan struct{} // closed by Close: a held connection is let go
	closeOnce sync.Once

	mu      sync.Mutex
	waiting list.List // of *limitedConn waiting for a request, longest first
}

// Accept takes the next connection, once a slot is free: where none is,
// the connection that has waited longest for a request is closed for it,
// and so on every evictEvery while it waits, as busy connections turn idle
// (kept alive, one held every slot until its idle timeout, 30 s, and a
// scrape waiting behind them timed out; found by a review walk). Close
// lets a held connection go, so that a server's Shutdown is not held by it.
func (l *limitedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	for {
		select {
		case l.sem <- struct{}{}:
			return &limitedConn{Conn: c, release: func() { <-l.sem }}, nil
		default:
		}
		l.evict() // for c, which has come
		select {
		case l.sem <- struct{}{}:
			return &limitedConn{Conn: c, release: func() { <-l.sem }}, nil
		case <-time.After(evictEvery):
		case <-l.closed:
			c.Close()
			return nil, net.ErrClosed
		}
	}
}

// evictEvery is how often a connection held for a slot looks again for
// one that waits for a request.
const evictEvery = 50 * time.Millisecond

// Close closes the listener and lets a connection held for a slot go.
func (l *limitedListener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

// connState keeps the list of connections waiting for a request.
func (l *limitedListener) connState(c net.Conn, state http.ConnState) {
	lc, ok := c.(*limitedConn)
	if !ok {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if lc.waiting != nil {
		l.waiting.Remove(lc.waiting)
		lc.waiting = nil
	}
	if state == http.StateNew || state == http.StateIdle {
		lc.waiting = l.waiting.PushBack(lc)
	}
}

// evict closes the connection that has waited longest for a request, if
// any; its Close gives its slot back.
func (l *limitedListener) evict() {
	l.mu.Lock()
	e := l.waiting.Front()
	var lc *limitedConn
	if e != nil {
		lc = l.waiting.Remove(e).(*limitedConn)
		lc.waiting = nil
	}
	l.mu.Unlock()
	if lc != nil {
		lc.Close()
	}
}

type limitedConn struct {
	net.Conn
	once    sync.Once
	release func()
	waiting *list.Element // in limitedListener.waiting; guarded by its mu
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// everyInterface notes that a listener at a answers on every interface of
// the host, unauthenticated: ":9470" was said as localhost only (found by a
// security walk).
func everyInterface(a net.Addr) string {
	if t, ok := a.(*net.TCPAddr); ok && t.IP.IsUnspecified() {
		return " (listening on every interface: anyone who reaches this host reads the forecasts; --listen 127.0.0.1:PORT keeps them to it)"
	}
	return ""
}

// servedAddr is where a listener on listen (as given) answers: its host
// as given, since Go names a listener on 0.0.0.0 [::], and its port, which
// the kernel picks for port 0.
func servedAddr(listen string, got net.Addr) string {
	host, _, err := net.SplitHostPort(listen)
	_, port, err2 := net.SplitHostPort(got.String())
	if err != nil || err2 != nil {
		return got.String()
	}
	if host == "" {
		host = "localhost"
	}
	return net.JoinHostPort(host, port)
}
