package dashboards

import (
	"bytes"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/pagecast/pagecast/collector"
	"github.com/pagecast/pagecast/migrationmetrics"
	"github.com/pagecast/pagecast/predictor/service"
)

// TestCommittedMatchesGenerated fails when the committed JSON is not what
// the code generates: run `make dashboards` and commit the result.
func TestCommittedMatchesGenerated(t *testing.T) {
	files, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range files {
		names = append(names, f.Name)
		got, err := CommittedJSON(f.Name)
		if err != nil {
			t.Errorf("%s is not committed: run make dashboards (%v)", f.Name, err)
			continue
		}
		if !bytes.Equal(got, f.JSON) {
			t.Errorf("%s differs from what dashboards.Generate makes: run make dashboards and commit it", f.Name)
		}
	}
	committed, err := Committed()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range committed {
		if !slices.Contains(names, d.File) {
			t.Errorf("%s is committed but no longer generated", d.File)
		}
	}
}

// knownMetrics is every metric name pagecast's processes export (profile,
// predict serve, migrate and vm run, with Go's and the process's) and the
// recording rules of rules.yml.
func knownMetrics(t *testing.T) map[string]bool {
	t.Helper()
	ch := make(chan *prometheus.Desc, 512)
	for _, c := range []prometheus.Collector{collector.Metrics{}, collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})} {
		c.Describe(ch)
	}
	for _, d := range append(append([]*prometheus.Desc{}, service.Descs...), migrationmetrics.Descs...) {
		ch <- d
	}
	close(ch)
	known := map[string]bool{}
	fq := regexp.MustCompile(`fqName: "([^"]+)"`)
	for d := range ch {
		m := fq.FindStringSubmatch(d.String())
		if m == nil {
			t.Fatalf("no name in %s", d)
		}
		known[m[1]] = true
	}
	for _, m := range regexp.MustCompile(`(?m)^\s*- record: (\S+)`).FindAllSubmatch(Rules, -1) {
		known[string(m[1])] = true
	}
	if !known["pagecast_profiler_events_total"] || !known["pagecast_predicted_dirty_pages"] || !known["pagecast_migration_round"] ||
		!known["process_cpu_seconds_total"] || !known["pagecast:migration_dirty_to_transfer_ratio"] {
		t.Fatalf("known metrics lack some of every source: %v", known)
	}
	return known
}

// units are the Grafana unit ids the dashboards may use (a subset of
// Grafana's list, packages/grafana-data/src/valueFormats/categories.ts).
var units = []string{"none", "short", "bytes", "binBps", "s", "percentunit", "wps"}

var (
	rangeSelector = regexp.MustCompile(`\[([^\]]*)\]`)
	variableRef   = regexp.MustCompile(`\$\{?([a-zA-Z_][a-zA-Z0-9_]*)`)
)

// lint checks a dashboard against the conventions of well-kept dashboards
// (grafana/dashboard-linter's rules) and pagecast's exposition, and
// returns what is wrong.
func lint(d Dashboard, known map[string]bool) []string {
	var errs []string
	bad := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	if d.UID == "" || d.Title == "" || d.Description == "" {
		bad("dashboard %q: uid, title and description are required", d.Title)
	}
	vars := map[string]bool{}
	datasource := false
	exprs := map[string]string{} // expression: where
	instant := map[string]bool{} // expression: asked as an instant query
	for _, v := range d.Templating.List {
		vars[v.Name] = true
		switch v.Type {
		case "datasource":
			datasource = datasource || v.Query == "prometheus"
		case "query":
			q, _ := v.Query.(string)
			if !labelValues.MatchString(q) {
				bad("variable %s: query %q is not label_values(SELECTOR, LABEL)", v.Name, q)
			}
			exprs[q] = "variable " + v.Name
		}
	}
	if !datasource {
		bad("no datasource variable of type prometheus")
	}
	titles := map[string]bool{}
	for _, p := range d.Panels {
		if p.Type == "row" {
			continue
		}
		where := fmt.Sprintf("panel %q", p.Title)
		if p.Title == "" || p.Description == "" {
			bad("%s: a title and a description are required", where)
		}
		if titles[p.Title] {
			bad("%s: title used twice", where)
		}
		titles[p.Title] = true
		if !slices.Contains(units, p.Unit()) {
			bad("%s: unit %q, want one of %v", where, p.Unit(), units)
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			bad("%s: datasource must be the ${datasource} variable", where)
		}
		if len(p.Targets) == 0 {
			bad("%s: no query", where)
		}
		// A stat of info metrics, whose value is always 1, shows its
		// names alone (walk 106: "1" beside the hook's name).
		info := len(p.Targets) > 0
		for _, tg := range p.Targets {
			for _, n := range metricName.FindAllString(tg.Expr, -1) {
				info = info && strings.HasSuffix(n, "_info")
			}
		}
		if p.Type == "stat" && info && p.Options.TextMode != "name" {
			bad("%s: a stat of info metrics shows its values (text mode %q), always 1; want text mode name", where, p.Options.TextMode)
		}
		for _, tg := range p.Targets {
			if tg.Datasource == nil || tg.Datasource.UID != "${datasource}" {
				bad("%s query %s: datasource must be the ${datasource} variable", where, tg.RefID)
			}
			exprs[tg.Expr] = fmt.Sprintf("%s query %s", where, tg.RefID)
			instant[tg.Expr] = tg.Instant
			// A range query gives a table a row per sample (walk 52).
			if p.Type == "table" && !tg.Instant {
				bad("%s query %s: a table's query must be instant", where, tg.RefID)
			}
		}
	}
	for expr, where := range exprs {
		for _, m := range rangeSelector.FindAllStringSubmatch(expr, -1) {
			if m[1] != "$__rate_interval" && !(m[1] == "$__range" && instant[expr]) {
				bad("%s: range [%s] in %s, want [$__rate_interval]", where, m[1], expr)
			}
		}
		for _, m := range variableRef.FindAllStringSubmatch(expr, -1) {
			if !strings.HasPrefix(m[1], "__") && !vars[m[1]] {
				bad("%s: variable $%s is not defined", where, m[1])
			}
		}
		names := metricName.FindAllString(expr, -1)
		if len(names) == 0 {
			bad("%s: no pagecast metric in %s", where, expr)
		}
		for _, n := range names {
			if !known[n] {
				bad("%s: metric %s is not in pagecast's exposition", where, n)
			}
		}
	}
	return errs
}

// TestLint lints every committed dashboard.
func TestLint(t *testing.T) {
	known := knownMetrics(t)
	ds, err := Committed()
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 3 {
		t.Fatalf("%d dashboards committed, want dirtying, migrations and profiler health", len(ds))
	}
	panels := 0
	for _, d := range ds {
		for _, e := range lint(d, known) {
			t.Errorf("%s: %s", d.File, e)
		}
		for _, p := range d.Panels {
			if p.Type != "row" {
				panels++
			}
		}
	}
	t.Logf("%d dashboards, %d panels linted", len(ds), panels)
}

// TestLintCatches: each convention broken once is reported.
func TestLintCatches(t *testing.T) {
	known := knownMetrics(t)
	ds, err := Committed()
	if err != nil {
		t.Fatal(err)
	}
	base := ds[2] // profiler health: rates and variables
	for _, tc := range []struct {
		name   string
		break_ func(d *Dashboard)
		want   string
	}{
		{"no datasource variable", func(d *Dashboard) { d.Templating.List = d.Templating.List[1:] }, "no datasource variable"},
		{"no unit", func(d *Dashboard) { d.Panels[1].FieldConfig.Defaults.Unit = "" }, `unit ""`},
		{"no description", func(d *Dashboard) { d.Panels[1].Description = "" }, "a title and a description"},
		{"fixed rate window", func(d *Dashboard) {
			d.Panels[1].Targets[0].Expr = strings.ReplaceAll(d.Panels[1].Targets[0].Expr, "$__rate_interval", "5m")
		}, "want [$__rate_interval]"},
		{"unknown metric", func(d *Dashboard) { d.Panels[1].Targets[0].Expr = "rate(pagecast_nonsense_total[$__rate_interval])" }, "pagecast_nonsense_total is not in pagecast's exposition"},
		{"undefined variable", func(d *Dashboard) { d.Panels[1].Targets[0].Expr += ` + 0*pagecast_guest_memory_bytes{vm="$nope"}` }, "$nope is not defined"},
		{"fixed datasource", func(d *Dashboard) { d.Panels[1].Datasource = &DataSourceRef{UID: "prom1"} }, "datasource must be"},
		{"info stat's values", func(d *Dashboard) {
			d.Panels[1].Type = "stat"
			d.Panels[1].Targets[0].Expr = "pagecast_profiler_hook_info"
			d.Panels[1].Targets = d.Panels[1].Targets[:1]
		}, "a stat of info metrics shows its values"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := base
			d.Templating.List = slices.Clone(base.Templating.List)
			d.Panels = slices.Clone(base.Panels)
			d.Panels[1].Targets = slices.Clone(base.Panels[1].Targets)
			if d.Panels[1].Type == "row" {
				t.Fatal("panel 1 is a row")
			}
			tc.break_(&d)
			errs := lint(d, known)
			if !slices.ContainsFunc(errs, func(e string) bool { return strings.Contains(e, tc.want) }) {
				t.Errorf("lint did not report %q; reported %v", tc.want, errs)
			}
		})
	}
}

// TestRules: promtool accepts rules.yml and its unit tests pass.
func TestRules(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not installed (Debian package prometheus)")
	}
	for _, args := range [][]string{{"check", "rules", "rules.yml"}, {"test", "rules", "rules_test.yml"}} {
		out, err := exec.Command(promtool, args...).CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// TestReadmePrometheusConfig: the prometheus.yml the README shows is one
// Prometheus accepts, with the rules it names.
func TestReadmePrometheusConfig(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not installed (Debian package prometheus)")
	}
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)\n```yaml\n(global:.*?)```").FindSubmatch(readme)
	if m == nil {
		t.Fatal("README has no prometheus.yml example (a yaml block starting with global:)")
	}
	abs, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	cfg := strings.ReplaceAll(string(m[1]), "/path/to/pagecast/dashboards", abs)
	path := filepath.Join(t.TempDir(), "prometheus.yml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(promtool, "check", "config", path).CombinedOutput(); err != nil {
		t.Errorf("promtool check config on the README's prometheus.yml: %v\n%s\n%s", err, out, cfg)
	}
	if !strings.Contains(cfg, "rule_files") || !strings.Contains(cfg, "job_name") {
		t.Errorf("the README's prometheus.yml loads no rules or scrapes nothing:\n%s", cfg)
	}
}

// TestProgressHeldAtAnyStep: the panels of a migration's progress draw its
// end, all it sent and its last round, at any step. The walk's migration
// (walk 129): 2.7 s, scraped every second, its bytes sent 25256293,
// 58955481, 89704998, 89704998, then stale as its exporter stopped;
// report's default step, 3 s, fell at 1 s and 4 s, and "Data sent and
// remaining" showed one dot, 56 MiB sent. Each query of these panels is
// run by promtool at 4 s, the step after the series went stale, with
// $__rate_interval as report and Grafana make it (a scrape interval of 1 s
// and a step of 3 s: 4 s), and must give the last sample.
func TestProgressHeldAtAnyStep(t *testing.T) {
	ds, err := Committed()
	if err != nil {
		t.Fatal(err)
	}
	// The last sample of each series, as the walk's Prometheus held them.
	series := map[string]struct{ values, last string }{
		"pagecast_migration_data_processed_bytes": {"25256293 58955481 89704998 89704998 stale", "89704998"},
		"pagecast_migration_data_remaining_bytes": {"64437683 30738495 0 0 stale", "0"},
		"pagecast_migration_data_total_bytes":     {"134217728 134217728 134217728 134217728 stale", "134217728"},
		"pagecast_migration_round":                {"1 2 3 3 stale", "3"},
	}
	from := time.Date(2026, 12, 6, 22, 1, 29, 0, time.UTC)
	src := &Source{From: from, To: from.Add(15 * time.Minute), Step: 3 * time.Second, ScrapeInterval: time.Second}
	vars := map[string]string{"vm": ".*", "migration": ".*"}
	var tests strings.Builder
	tests.WriteString("rule_files: []\nevaluation_interval: 1s\ntests:\n  - interval: 1s\n    input_series:\n")
	for _, name := range slices.Sorted(maps.Keys(series)) {
		fmt.Fprintf(&tests, "      - series: '%s{vm=\"web2\",migration=\"2026-12-06T22:01:29.798Z\"}'\n        values: '%s'\n", name, series[name].values)
	}
	tests.WriteString("    promql_expr_test:\n")
	checked := 0
	for _, d := range ds {
		for _, p := range d.Panels {
			if d.File != "migrations.json" || (p.Title != "Data sent and remaining" && p.Title != "Round") {
				continue
			}
			for _, tg := range p.Targets {
				if !strings.HasPrefix(tg.Expr, "last_over_time(") || !strings.HasSuffix(tg.Expr, "[$__rate_interval])") {
					t.Errorf("%s / %s: %s, want last_over_time(…[$__rate_interval]): its end at any step", d.File, p.Title, tg.Expr)
				}
				ms := MetricsIn(tg.Expr)
				if len(ms) != 1 || series[ms[0]].last == "" {
					t.Fatalf("%s / %s: %s names %v, want one of %v", d.File, p.Title, tg.Expr, ms, slices.Sorted(maps.Keys(series)))
				}
				fmt.Fprintf(&tests, "      - expr: '%s'\n        eval_time: 4s\n        exp_samples:\n          - labels: '%s{vm=\"web2\",migration=\"2026-12-06T22:01:29.798Z\"}'\n            value: %s\n",
					strings.ReplaceAll(src.Expand(tg.Expr, vars), "'", "''"), ms[0], series[ms[0]].last)
				checked++
			}
		}
	}
	if checked != 4 {
		t.Fatalf("%d queries of Data sent and remaining and Round, want 4", checked)
	}
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not installed (Debian package prometheus): the queries not run")
	}
	path := filepath.Join(t.TempDir(), "progress_test.yml")
	if err := os.WriteFile(path, []byte(tests.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(promtool, "test", "rules", path).CombinedOutput(); err != nil {
		t.Errorf("the progress panels' queries at the step after the migration's series went stale: %v\n%s\n%s", err, out, tests.String())
	}
}

// TestExpectedDowntimeHeld: "Expected vs actual downtime" shows a
// completed migration's last estimate at a step coarser than the
// migration (walk 133: a 1.24 s migration at a 15 s step showed the
// actual downtime but no estimate), and none for a failed migration once
// it failed, whose estimate the exporter drops (walk 96).
func TestExpectedDowntimeHeld(t *testing.T) {
	ds, err := Committed()
	if err != nil {
		t.Fatal(err)
	}
	var expr string
	for _, d := range ds {
		for _, p := range d.Panels {
			if d.File == "migrations.json" && p.Title == "Expected vs actual downtime" {
				for _, tg := range p.Targets {
					if strings.HasSuffix(tg.LegendFormat, " expected") {
						expr = tg.Expr
					}
				}
			}
		}
	}
	if expr == "" {
		t.Fatal("no expected downtime query in migrations.json's Expected vs actual downtime")
	}
	from := time.Date(2026, 12, 7, 5, 40, 0, 0, time.UTC)
	src := &Source{From: from, To: from.Add(15 * time.Minute), Step: 15 * time.Second, ScrapeInterval: time.Second}
	expr = src.Expand(expr, map[string]string{"vm": ".*", "migration": ".*"})
	// ok completed, its estimate kept until the exporter went; bad failed
	// at 2 s, its estimate dropped then.
	tests := `rule_files: []
evaluation_interval: 1s
tests:
  - interval: 1s
    input_series:
      - series: 'pagecast_migration_expected_downtime_seconds{vm="ok",migration="a"}'
        values: '0.308 0.12 0.094 0.094 stale'
      - series: 'pagecast_migration_failed{vm="ok",migration="a"}'
        values: '0 0 0 0 stale'
      - series: 'pagecast_migration_expected_downtime_seconds{vm="bad",migration="b"}'
        values: '5 6 stale'
      - series: 'pagecast_migration_failed{vm="bad",migration="b"}'
        values: '0 0 1 1 stale'
    promql_expr_test:
      - expr: '` + strings.ReplaceAll(expr, "'", "''") + `'
        eval_time: 5s
        exp_samples:
          - labels: 'pagecast_migration_expected_downtime_seconds{vm="ok",migration="a"}'
            value: 0.094
      - expr: '` + strings.ReplaceAll(expr, "'", "''") + `'
        eval_time: 1s
        exp_samples:
          - labels: 'pagecast_migration_expected_downtime_seconds{vm="ok",migration="a"}'
            value: 0.12
          - labels: 'pagecast_migration_expected_downtime_seconds{vm="bad",migration="b"}'
            value: 6
`
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not installed (Debian package prometheus): the query not run")
	}
	path := filepath.Join(t.TempDir(), "expected_test.yml")
	if err := os.WriteFile(path, []byte(tests), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(promtool, "test", "rules", path).CombinedOutput(); err != nil {
		t.Errorf("the expected downtime's query: %v\n%s\n%s", err, out, tests)
	}
}
