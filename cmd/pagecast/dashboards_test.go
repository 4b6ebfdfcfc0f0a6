package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pagecast/pagecast/dashboards"
)

// startPrometheus runs a real Prometheus on loopback that scrapes targets
// (job name: address) every second and evaluates pagecast's rules, and
// returns its URL. It skips the test where Prometheus is not installed.
func startPrometheus(t *testing.T, targets map[string]string) string {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Skip("prometheus not installed (Debian package prometheus)")
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "rules.yml"), dashboards.Rules, 0o644); err != nil {
		t.Fatal(err)
	}
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - %s\nscrape_configs:\n", filepath.Join(dir, "rules.yml"))
	for job, addr := range targets {
		fmt.Fprintf(&cfg, "  - job_name: %s\n    static_configs:\n      - targets: ['%s']\n", job, addr)
	}
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	cmd := exec.Command(bin, "--config.file="+filepath.Join(dir, "prometheus.yml"), "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--log.level=warn")
	var stderr syncBuffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
		}
		if t.Failed() {
			t.Logf("prometheus:\n%s", stderr.String())
		}
	})
	url := "http://" + addr
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if resp, err := http.Get(url + "/-/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return url
			}
		}
		select {
		case <-exited:
			t.Fatalf("prometheus exited:\n%s", stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus not ready after 30s:\n%s", stderr.String())
		}
	}
}

// TestDashboardsAgainstPrometheus is the dashboards' acceptance test: a
// real Prometheus scrapes a real pagecast profile of a QEMU TCG guest, a
// predict serve --replay of the trace it recorded, and a migration of the
// guest (pagecast migrate --metrics); then every query of every panel, and
// every variable, of every dashboard runs through Prometheus's HTTP API
// and must return data, every metric the dashboards name must be in what
// Prometheus scraped, and pagecast report renders every panel.
func TestDashboardsAgainstPrometheus(t *testing.T) {
	slowUnderRace(t, "19 s")
	if testing.Short() {
		t.Skip("boots QEMUs and a Prometheus; skipped in short mode")
	}
	profileAddr, serveAddr, migrateAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	promURL := startPrometheus(t, map[string]string{"pagecast-profile": profileAddr, "pagecast-predict": serveAddr, "pagecast-migrate": migrateAddr})
	from := time.Now()
	// A 4 MiB hot set that predictive defers within the 24 MiB/s link's
	// budget, so that the migration converges in a few seconds; 128 MiB so
	// that its rounds last long enough for several scrapes.
	src := startQEMURun(t, "--memory", "128M", "--workload", "hotset:hot=1024,p=0.95,delay=25000")
	to := "tcp:" + freeAddr(t)
	dir := t.TempDir()
	// A second QMP socket at the destination, for migrate --dest-qmp:
	// the guest's own pause (STOP to RESUME) needs its RESUME.
	destQMP := filepath.Join(dir, "dest-extra.sock")
	startQEMURun(t, "--memory", "128M", "--incoming", to, "--qmp-extra", "unix:"+destQMP)
	tracePath := filepath.Join(dir, "hotset.pct")

	// 1. Profile the guest with the TCG plugin.
	out, err := exec.Command(binary, "--log-level", "warn", "profile", "--qmp", "unix:"+src.sock, "--duration", "6s",
		"--epoch", "500ms", "--out", tracePath, "--metrics", profileAddr, "--quiet").CombinedOutput()
	if err != nil {
		t.Fatalf("pagecast profile: %v\n%s", err, out)
	}

	// 2. Replay its trace in real time, through the migration and after.
	serve := exec.Command(binary, "--log-level", "warn", "predict", "serve", "--trace", tracePath, "--replay", "--listen", serveAddr)
	var serveOut syncBuffer
	serve.Stdout, serve.Stderr = &serveOut, &serveOut
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { serve.Process.Signal(os.Interrupt); serve.Wait() })

	// 3. Migrate the guest with pagecast's engine in mode auto (it watches
	// the guest for 1 s and chooses), warmed by the trace if it chooses
	// predictive.
	migrate := exec.Command(binary, "--log-level", "warn", "migrate", "--qmp", "unix:"+src.sock, "--to", to, "--mode", "auto", "--observe", "10",
		"--profile", tracePath, "--bandwidth", "24MiB/s", "--dest-qmp", "unix:"+destQMP, "--metrics", migrateAddr, "--name", "hotset", "--quiet")
	var migrateOut syncBuffer
	migrate.Stdout, migrate.Stderr = &migrateOut, &migrateOut
	if err := migrate.Start(); err != nil {
		t.Fatal(err)
	}
	// The metrics begin as auto starts to watch the guest. (Before they
	// did, they began only once auto had watched, measured the engine's
	// pace and simulated every mode: on two cores under the race detector,
	// beside other packages' QEMUs, that took more than 20 s once.)
	exposition, err := scrapeWithin("http://"+migrateAddr+"/metrics", "pagecast_migration_info", 2*time.Minute)
	if err != nil {
		t.Fatalf("%v\npagecast migrate so far:\n%s", err, migrateOut.String())
	}
	// It is first seen while auto watches the guest (1 s at least): in
	// setup, as mode auto.
	for _, want := range []string{`pagecast_migration_info\{[^}]*mode="auto"[^}]*\} 1`, `pagecast_migration_status\{[^}]*status="setup"[^}]*\} 1`} {
		if !regexp.MustCompile(want).MatchString(exposition) {
			t.Errorf("pagecast migrate --mode auto --metrics, first seen, lacks %s:\n%s", want, exposition)
		}
	}
	if err := migrate.Wait(); err != nil {
		t.Fatalf("pagecast migrate: %v\n%s", err, migrateOut.String())
	}
	if !strings.Contains(migrateOut.String(), "status           completed") {
		t.Fatalf("migration did not complete:\n%s", migrateOut.String())
	}
	t.Logf("pagecast migrate:\n%s", migrateOut.String())
	if promtool, err := exec.LookPath("promtool"); err == nil {
		check := exec.Command(promtool, "check", "metrics")
		check.Stdin = strings.NewReader(exposition)
		if msg, err := check.CombinedOutput(); err != nil || len(bytes.TrimSpace(msg)) > 0 {
			t.Errorf("promtool check metrics on pagecast migrate --metrics: %v\n%s", err, msg)
		}
	}
	time.Sleep(3 * time.Second) // a few more scrapes of the replay
	until := time.Now()

	// Every variable has values, every query of every panel returns data.
	ctx := context.Background()
	source, err := dashboards.NewSource(promURL, from, until, time.Second, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	scraped, err := source.MetricNames(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ds, err := dashboards.Committed()
	if err != nil {
		t.Fatal(err)
	}
	queries, panels := 0, 0
	for _, d := range ds {
		vars, values, err := source.Variables(ctx, d, nil)
		if err != nil {
			t.Errorf("%s: %v", d.File, err)
			continue
		}
		for _, v := range d.Templating.List {
			if v.Type == "query" {
				vals := values[v.Name]
				if len(vals) == 0 {
					t.Errorf("%s: variable %s: no values", d.File, v.Name)
				}
				t.Logf("%s: $%s = %s (of %v)", d.File, v.Name, vars[v.Name], vals)
			}
		}
		for _, p := range d.Panels {
			if p.Type == "row" {
				continue
			}
			panels++
			for _, tg := range p.Targets {
				queries++
				expr := source.Expand(tg.Expr, vars)
				series, err := source.Range(ctx, expr)
				if err != nil {
					t.Errorf("%s panel %q query %s: %v", d.File, p.Title, tg.RefID, err)
					continue
				}
				if len(series) == 0 {
					t.Errorf("%s panel %q query %s returned no data: %s", d.File, p.Title, tg.RefID, expr)
					continue
				}
				var last []string
				for _, s := range series {
					last = append(last, fmt.Sprintf("%s=%.4g (%d points)", dashboards.Legend(tg.LegendFormat, s.Labels), s.Values[len(s.Values)-1], len(s.Values)))
				}
				t.Logf("%s / %s / %s: %s", d.File, p.Title, tg.RefID, strings.Join(last, "; "))
				for _, name := range dashboards.MetricsIn(tg.Expr) {
					if !scraped[name] {
						t.Errorf("%s panel %q names %s, which Prometheus never scraped from pagecast", d.File, p.Title, name)
					}
				}
			}
		}
	}
	t.Logf("%d dashboards, %d panels, %d queries, all with data, over %s", len(ds), panels, queries, until.Sub(from).Round(time.Second))

	// At a coarse step, as a dashboard over an hour draws, the outcome is
	// still there: plain, a step saw the migration's last samples only
	// while its exporter lingered, a second or two (walk 95: succeeded 0
	// at a step of 12 s, no downtime at 10 s).
	coarse, err := dashboards.NewSource(promURL, from, until.Add(15*time.Second), 15*time.Second, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// All the migration sent, its last sample: drawn at the coarse step
	// too (walk 129: a sample from the migration's middle).
	sentSeries, err := source.Range(ctx, "pagecast_migration_data_processed_bytes")
	if err != nil || len(sentSeries) != 1 {
		t.Fatalf("the bytes sent: %d series, %v", len(sentSeries), err)
	}
	sent := sentSeries[0].Values[len(sentSeries[0].Values)-1]
	for _, d := range ds {
		if d.File != "migrations.json" {
			continue
		}
		vars, _, err := coarse.Variables(ctx, d, nil)
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		for _, p := range d.Panels {
			for _, tg := range p.Targets {
				series, err := coarse.Range(ctx, coarse.Expand(tg.Expr, vars))
				if err != nil {
					t.Fatalf("migrations.json panel %q at a 15 s step: %v", p.Title, err)
				}
				for _, s := range series {
					legend := dashboards.Legend(tg.LegendFormat, s.Labels)
					for _, v := range s.Values {
						switch {
						case p.Title == "Succeeded or failed" && strings.HasSuffix(legend, " succeeded") && v == 1:
							seen["succeeded"] = true
						case p.Title == "Status" && s.Labels["status"] == "completed" && v == 1:
							seen["completed"] = true
						case p.Title == "Expected vs actual downtime" && strings.HasSuffix(legend, " actual") && v > 0:
							seen["downtime"] = true
						case p.Title == "Data sent and remaining" && strings.HasSuffix(legend, " sent") && v == sent:
							seen["all it sent"] = true
						}
					}
				}
			}
		}
		for _, want := range []string{"succeeded", "completed", "downtime", "all it sent"} {
			if !seen[want] {
				t.Errorf("migrations.json at a 15 s step: no %s drawn for the completed migration", want)
			}
		}
	}

	// pagecast report renders every panel.
	pngs := filepath.Join(dir, "report")
	if keep := os.Getenv("PAGECAST_REPORT_DIR"); keep != "" {
		pngs = keep // to look at them, or to refresh the README's
	}
	out, err = exec.Command(binary, "report", "--prometheus", promURL, "--from", from.UTC().Format(time.RFC3339),
		"--to", until.Add(time.Second).UTC().Format(time.RFC3339), "--step", "1s", "--scrape-interval", "1s", "--out", pngs).CombinedOutput()
	if err != nil {
		t.Fatalf("pagecast report: %v\n%s", err, out)
	}
	if want := fmt.Sprintf("%d panels rendered, 0 without data", panels); !strings.Contains(string(out), want) {
		t.Errorf("pagecast report did not say %q:\n%s", want, out)
	}
	// Mode auto's migration is one row, the mode it chose (walk 95: two,
	// auto and the chosen).
	if want := "pagecast / Migrations / Mode and engine: 1 series"; !strings.Contains(string(out), want) {
		t.Errorf("pagecast report did not say %q:\n%s", want, out)
	}
	files, _ := filepath.Glob(filepath.Join(pngs, "*.png"))
	if len(files) != panels {
		t.Errorf("%d PNGs for %d panels", len(files), panels)
	}
	for _, f := range files {
		if b, err := os.ReadFile(f); err != nil || !bytes.HasPrefix(b, []byte("\x89PNG")) {
			t.Errorf("%s is not a PNG (%v)", f, err)
		}
	}
	// A variable given a value nothing has: the variables that follow
	// from it have no values, the message names the value given, the
	// panels using them are listed without data and the rest are drawn
	// (a dashboard was skipped whole, its profiler panels, fed by
	// instance, with it).
	out, _ = exec.Command(binary, "report", "--prometheus", promURL, "--from", from.UTC().Format(time.RFC3339),
		"--to", until.Add(time.Second).UTC().Format(time.RFC3339), "--step", "1s", "--scrape-interval", "1s",
		"--var", "vm=nosuch", "--out", filepath.Join(dir, "nosuch")).CombinedOutput()
	if !strings.Contains(string(out), "no values with vm=nosuch") {
		t.Errorf("pagecast report --var vm=nosuch does not name the value that left none:\n%s", out)
	}
	if m := regexp.MustCompile(`(\d+) panels rendered`).FindStringSubmatch(string(out)); m == nil || m[1] == "0" || strings.Contains(string(out), "skipped") {
		t.Errorf("pagecast report --var vm=nosuch drew none of the panels that do not follow from vm:\n%s", out)
	}
}
