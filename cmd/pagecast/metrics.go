package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/urfave/cli/v2"

	"github.com/pagecast/pagecast/migrationmetrics"
	"github.com/pagecast/pagecast/migrator"
	"github.com/pagecast/pagecast/qemu"
)

// migrationMetricsFlags are the flags of a command that can export its
// migrations to Prometheus.
func migrationMetricsFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "metrics", Usage: "serve the migration's Prometheus metrics (pagecast_migration_*) on this address, e.g. 127.0.0.1:9472"},
		&cli.StringFlag{Name: "name", Action: checkName, Usage: "the VM's name in the metrics' vm label (default: QEMU's -name, else the QMP socket's file name without its extension)"},
		&cli.DurationFlag{Name: "metrics-linger", Value: time.Minute, Usage: "with --metrics, once the migration has ended keep serving until Prometheus has scraped the end twice (a migration shorter than a scrape interval may end before its first scrape), at most this long; 0 stops at once"},
	}
}

// vmName is the vm label for a VM whose QMP socket is at path, mon its
// monitor (nil: not asked): --name, QEMU's -name (query-name), or the
// socket's file name without its extension. Under libvirt every QMP
// socket is "monitor.sock", and every VM was "monitor"; libvirt gives
// QEMU the domain's name (-name guest=NAME; walk 76).
// Bytes that are not UTF-8 become U+FFFD: Prometheus refuses such a label
// value, and with it the whole scrape (a 500).
func vmName(c *cli.Context, qmpPath string, mon qemu.Runner) string {
	n := c.String("name")
	if n == "" && mon != nil {
		var r struct {
			Name string `json:"name"`
		}
		if qemu.QMP(mon, "query-name", nil, &r) == nil {
			n = r.Name
		}
	}
	if n == "" {
		base := filepath.Base(qmpPath)
		n = strings.TrimSuffix(base, filepath.Ext(base))
	}
	return strings.ToValidUTF8(n, "\uFFFD")
}

// checkName refuses a --name with a control character or a line break (a
// newline, a tab, U+2028), or not UTF-8: the name is a vm label and goes
// into log lines and the tables, where a newline made two lines of one
// (walk 129).
func checkName(_ *cli.Context, name string) error {
	if !utf8.ValidString(name) {
		// Served as U+FFFD (vmName), the id asked for was not the one
		// served (walk 131).
		return fmt.Errorf("--name %q: not UTF-8: want a name as text, as a vm label is", name)
	}
	if strings.IndexFunc(name, func(r rune) bool { return unicode.IsControl(r) || unicode.In(r, unicode.Zl, unicode.Zp) }) >= 0 {
		return fmt.Errorf("--name %q: want a name without control characters or line breaks such as a newline, a tab or U+2028: it is a vm label, and a line of the tables", name)
	}
	return nil
}

// migrationMetrics starts serving a migration exporter for --metrics; it
// returns nil exporter and a no-op when the flag is not given. finish
// lingers as --metrics-linger says, then stops serving.
func migrationMetrics(c *cli.Context, qmpPath string, mon qemu.Runner) (exp *migrationmetrics.Exporter, finish func(context.Context), err error) {
	addr := c.String("metrics")
	if addr == "" {
		return nil, func(context.Context) {}, nil
	}
	exp = migrationmetrics.New(vmName(c, qmpPath, mon))
	l, err := listenMetrics(addr)
	if err != nil {
		return nil, nil, err
	}
	stop, scrapes := serveMetricsCounted(l, exp)
	return exp, func(ctx context.Context) {
		if linger := c.Duration("metrics-linger"); linger > 0 && ctx.Err() == nil && !exp.Began() {
			// Nothing to linger for: the metrics never held a migration.
			fmt.Fprintf(c.App.ErrWriter, "pagecast: no migration began, so the metrics on %s held none; stopped serving them\n", addr)
		} else if linger > 0 && ctx.Err() == nil {
			before := scrapes()
			if before == 0 && exp.Began() {
				fmt.Fprintf(c.App.ErrWriter, "pagecast: the migration ended before a Prometheus scraped the metrics on %s (a curl or a browser is not counted as one)\n", addr)
			}
			fmt.Fprintf(c.App.ErrWriter, "pagecast: serving the metrics on %s until Prometheus has scraped the migration's end twice, at most %v (--metrics-linger; Ctrl-C stops the wait)\n", addr, linger)
			switch n := migrationmetrics.LingerScrapes(ctx, scrapes, linger); {
			case ctx.Err() != nil:
			case n == 0 && before == 0 && exp.Began():
				fmt.Fprintf(c.App.ErrWriter, "pagecast: no Prometheus scraped %s in %v (a curl or a browser is not counted as one): is Prometheus told of it (a scrape config whose targets hold it)?\n", addr, linger)
			case n < 2:
				fmt.Fprintf(c.App.ErrWriter, "pagecast: the end was scraped %d time(s) of 2 within %v; a longer --metrics-linger outlasts a longer scrape interval\n", n, linger)
			}
		}
		stop()
	}, nil
}

// serveCollectors serves cs, with Go's and the process's metrics, on addr
// at /metrics until stop is called.
func serveCollectors(addr string, cs ...prometheus.Collector) (stop func(), err error) {
	l, err := listenMetrics(addr)
	if err != nil {
		return nil, err
	}
	return serveMetrics(l, cs...), nil
}

// listenMetrics opens --metrics' address. A command that has more to set
// up than its metrics calls it first, and serveMetrics once its
// collectors exist, so an address in use or malformed fails it before it
// has changed anything.
func listenMetrics(addr string) (net.Listener, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics: %w", err)
	}
	return l, nil
}

// serveMetrics serves cs, with Go's and the process's metrics, on l at
// /metrics until stop is called; stop closes l. Every phase of a
// connection has a deadline, as predict serve's do, and at most
// metricsConns are held at once (limitListener): a kept-alive connection
// was kept for ever, and 20 000 of them used up migrate's file
// descriptors, which failed its switch-over ("too many open files").
func serveMetrics(l net.Listener, cs ...prometheus.Collector) (stop func()) {
	stop, _ = serveMetricsCounted(l, cs...)
	return stop
}

// labelled is a collector whose metrics serveMetrics serves with labels
// besides their own.
type labelled struct {
	labels prometheus.Labels
	prometheus.Collector
}

// serveMetricsCounted is serveMetrics that also counts the scrapes served.
func serveMetricsCounted(l net.Listener, cs ...prometheus.Collector) (stop func(), scrapes func() uint64) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, c := range cs {
		if l, ok := c.(labelled); ok {
			prometheus.WrapRegistererWith(l.labels, reg).MustRegister(l.Collector)
			continue
		}
		reg.MustRegister(c)
	}
	mux := http.NewServeMux()
	var n atomic.Uint64
	h := promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
	// GET and HEAD: another method is answered 405, as predict serve does
	// (walk 52: a POST or DELETE got the metrics).
	mux.Handle("GET /metrics", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r)
		if isScrape(r) {
			n.Add(1)
		}
	}))
	srv := newHTTPServer(mux)
	go serveLimited(srv, l, metricsConns)
	slog.Info("serving metrics", "addr", "http://"+l.Addr().String()+"/metrics")
	return func() {
		// Let a scrape under way finish: it may be the one that sees the end.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}, n.Load
}

// isScrape says whether r is a scraper's (Prometheus, or an agent that
// scrapes as it does): one that asks for the exposition formats by name,
// as a health check or a curl does not. --metrics-linger waits for these:
// counting every GET, a curl every 0.25 s ended its wait at once, and a
// failed migration's end never reached Prometheus (found by a new-user
// walk).
func isScrape(r *http.Request) bool {
	if r.Method != http.MethodGet {
		return false
	}
	a := r.Header.Get("Accept")
	for _, format := range []string{"application/openmetrics-text", "text/plain;version=", "io.prometheus.client"} { // OpenMetrics, Prometheus text (0.0.4, 1.0.0), protobuf
		if strings.Contains(a, format) {
			return true
		}
	}
	return false
}

// metricsConns bounds the connections a --metrics address holds at once;
// past it, the one that has waited longest for a request is closed
// (limitListener). Prometheus keeps one per target.
const metricsConns = 64

// followMigrations exports the migrations out of pagecast's monitor that
// ctl starts, polling it every interval until ctx ends, and as each
// scrape begins.
func followMigrations(ctx context.Context, ctl *migrator.Controller, exp *migrationmetrics.Exporter, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	var mu sync.Mutex // the poll and scrapes
	var last *migrator.Migration
	look := func() {
		mu.Lock()
		defer mu.Unlock()
		m := ctl.Current()
		if m == nil {
			return
		}
		info := m.Info()
		if m != last {
			last = m
			var mode string
			var bw uint64
			if x := info.Pagecast; x != nil {
				mode, bw = x.Mode, x.Bandwidth
			}
			exp.Begin(time.Now().Add(-time.Duration(info.TotalTime)*time.Millisecond), migrationmetrics.EnginePagecast, mode, bw)
		}
		exp.Observe(info)
	}
	exp.SetRefresh(look)
	defer exp.SetRefresh(nil)
	for {
		look()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
