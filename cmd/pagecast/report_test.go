package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"gonum.org/v1/plot/plotter"

	"github.com/pagecast/pagecast/dashboards"
)

func TestParseReportTime(t *testing.T) {
	now := time.Date(2026, 11, 30, 6, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Time
		err  string
	}{
		{"now", now, ""},
		{"now-15m", now.Add(-15 * time.Minute), ""},
		{"2026-11-30T05:00:00Z", time.Date(2026, 11, 30, 5, 0, 0, 0, time.UTC), ""},
		{"now-", time.Time{}, "now-DURATION"},
		{"now--5m", time.Time{}, "now-DURATION"},
		{"yesterday", time.Time{}, "RFC 3339"},
	} {
		got, err := parseReportTime(tc.in, now)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: %v, want an error mentioning %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || !got.Equal(tc.want) {
			t.Errorf("%q: %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

func TestAxisScale(t *testing.T) {
	for _, tc := range []struct {
		unit  string
		max   float64
		div   float64
		label string
	}{
		{"bytes", 64 << 20, 1 << 20, "MiB"},
		{"binBps", 3 << 30, 1 << 30, "GiB/s"},
		{"bytes", 100, 1, "bytes"},
		{"s", 0.3, 1e-3, "ms"},
		{"s", 1.5e-7, 1e-9, "ns"},
		{"s", 12, 1, "seconds"},
		{"percentunit", 0.95, 0.01, "%"},
		{"wps", 2.5e6, 1e6, "M writes/s"},
		{"short", 4500, 1e3, "thousands"},
		{"short", 45, 1, ""},
	} {
		div, label := axisScale(tc.unit, tc.max)
		if div != tc.div || label != tc.label {
			t.Errorf("axisScale(%s, %g) = %g %q, want %g %q", tc.unit, tc.max, div, label, tc.div, tc.label)
		}
	}
}

func TestReportRefusesBadRanges(t *testing.T) {
	// Answers as Prometheus does to the check report makes first.
	prom := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v1/status/buildinfo" {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte(`{"status":"success","data":{"version":"test"}}`))
	}))
	defer prom.Close()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--from", "now", "--to", "now-1h"}, "is not before --to"},
		{[]string{"--from", "tomorrow"}, "--from"},
		{[]string{"--var", "novalue"}, `--var "novalue": want NAME=VALUE`},
		{[]string{"--step", "-1s"}, "--step -1s: want a positive resolution"},
		{[]string{"--step", "1ms", "--from", "now-1h"}, "--step 1ms: 3600000 points a series from --from to --to, more than the 11 000 Prometheus returns: want --step 328ms or more"},
		{[]string{"--scrape-interval", "0s"}, "--scrape-interval 0s: want the Prometheus's scrape interval"},
		{[]string{"--prometheus", "127.0.0.1:9090"}, `--prometheus "127.0.0.1:9090": want a URL such as http://127.0.0.1:9090`},
		{[]string{"--prometheus", "http://" + freeAddr(t)}, "cannot reach Prometheus at http://"}, // nothing listens
		{[]string{"--prometheus", prom.URL + "/graph"}, "does not answer as Prometheus (404 Not Found from /api/v1/status/buildinfo): give its base URL"},
		{[]string{"--prometheus", prom.URL, "--dashboard", "nope"}, "--dashboard [nope]: the dashboards are"},
		{[]string{"--prometheus", "http://" + freeAddr(t), "--dashboard", "nope"}, "--dashboard [nope]: the dashboards are"}, // said before Prometheus is asked
		{[]string{"--prometheus", "http://" + freeAddr(t), "--var", "bogus=1"}, "--var bogus: the dashboards have no such variable"},
		{[]string{"--prometheus", prom.URL, "--var", "bogus=1"}, "--var bogus: the dashboards have no such variable; they have "},
	} {
		out := filepath.Join(t.TempDir(), "out")
		args := append([]string{"report", "--out", out}, tc.args...)
		if _, _, err := runApp(t, args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("pagecast %s: %v, want %q", strings.Join(args, " "), err, tc.want)
		}
		if _, err := os.Stat(out); !os.IsNotExist(err) {
			t.Errorf("pagecast %s made --out before it failed", strings.Join(args, " "))
		}
	}
}

// fakePrometheus answers report's queries as a Prometheus holding the VMs
// vms would: a selector's vm matchers (vm="V", vm=~"RE") select among vms,
// and a selector that selects none has no series. label_values of vm are
// the VMs selected, of any other label one value; every range query that
// selects some VM returns series series, each with one sample at the start
// of the range. queries returns the selectors and queries asked so far.
func fakePrometheus(t *testing.T, vms []string, series int) (prom *httptest.Server, queries func() []string) {
	t.Helper()
	return fakePrometheusOf(t, vms, series, true)
}

// fakePrometheusOf is fakePrometheus; without profiles, no label but vm
// has values (no pagecast profile was scraped).
func fakePrometheusOf(t *testing.T, vms []string, series int, profiles bool) (prom *httptest.Server, queries func() []string) {
	t.Helper()
	var mu sync.Mutex
	var asked []string
	matcher := regexp.MustCompile(`\bvm(=~|=)("(?:[^"\\]|\\.)*")`)
	// selected is the VMs the vm matchers of expr select.
	selected := func(expr string) ([]string, error) {
		mu.Lock()
		asked = append(asked, expr)
		mu.Unlock()
		out := vms
		for _, m := range matcher.FindAllStringSubmatch(expr, -1) {
			val, err := strconv.Unquote(m[2])
			if err != nil {
				return nil, fmt.Errorf("%s: %v", m[2], err)
			}
			re, err := regexp.Compile("^(?:" + val + ")$")
			if m[1] == "=" {
				re = regexp.MustCompile("^" + regexp.QuoteMeta(val) + "$")
			} else if err != nil {
				return nil, err
			}
			var keep []string
			for _, vm := range out {
				if re.MatchString(vm) {
					keep = append(keep, vm)
				}
			}
			out = keep
		}
		return out, nil
	}
	prom = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		r.ParseForm()
		switch {
		case r.URL.Path == "/api/v1/status/buildinfo":
			w.Write([]byte(`{"status":"success","data":{"version":"test"}}`))
		case strings.HasPrefix(r.URL.Path, "/api/v1/label/"):
			var sel []string
			for _, m := range r.Form["match[]"] {
				s, err := selected(m)
				if err != nil {
					w.WriteHeader(http.StatusBadRequest)
					fmt.Fprintf(w, `{"status":"error","errorType":"bad_data","error":%q}`, err.Error())
					return
				}
				sel = s
			}
			values := []string{}
			switch {
			case strings.HasSuffix(r.URL.Path, "/vm/values"):
				values = append(values, sel...)
			case len(sel) > 0 && profiles:
				values = append(values, "x1")
			}
			b, _ := json.Marshal(values)
			fmt.Fprintf(w, `{"status":"success","data":%s}`, b)
		case r.URL.Path == "/api/v1/query_range":
			sel, err := selected(r.Form.Get("query"))
			if err != nil {
				w.WriteHeader(http.StatusBadRequest)
				fmt.Fprintf(w, `{"status":"error","errorType":"bad_data","error":%q}`, err.Error())
				return
			}
			var result []string
			for i := range series {
				if len(sel) > 0 {
					result = append(result, fmt.Sprintf(`{"metric":{"region":"0x%08x","state":"s%d"},"values":[[%s,"%d"]]}`, i<<20, i, r.Form.Get("start"), i+1))
				}
			}
			fmt.Fprintf(w, `{"status":"success","data":{"resultType":"matrix","result":[%s]}}`, strings.Join(result, ","))
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(prom.Close)
	return prom, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(asked)
	}
}

// TestReportTooLittleForHeatmap: a heatmap of one time (a step as long as
// the range) is listed as without data, and the other panels are drawn.
func TestReportTooLittleForHeatmap(t *testing.T) {
	prom, _ := fakePrometheus(t, []string{"web1"}, 32)
	out := filepath.Join(t.TempDir(), "out")
	stdout, _, err := runApp(t, "report", "--prometheus", prom.URL, "--from", "now-15m", "--step", "10m", "--out", out)
	if err != nil {
		t.Fatalf("report: %v\n%s", err, stdout)
	}
	want := "pagecast / Dirtying: predicted vs actual / Where in memory it dirties: no data: too little to draw: a heatmap needs two series and two times, have 32 and 1\n"
	if !strings.Contains(stdout, want) {
		t.Errorf("report did not say %q:\n%s", want, stdout)
	}
	if _, err := os.Stat(filepath.Join(out, "dirtying-where-in-memory-it-dirties.png")); !os.IsNotExist(err) {
		t.Errorf("the heatmap's PNG: %v, want none", err)
	}
	// The status timeline, drawn as a heatmap, has one time too.
	if want := "pagecast / Migrations / Status: no data: too little to draw"; !strings.Contains(stdout, want) {
		t.Errorf("report did not say %q:\n%s", want, stdout)
	}
	pngs, _ := filepath.Glob(filepath.Join(out, "*.png"))
	if want := fmt.Sprintf("%d panels rendered, 2 without data, ", len(pngs)); !strings.Contains(stdout, want) || len(pngs) != 26 {
		t.Errorf("%d PNGs written, want the 26 panels other than the heatmap and the status timeline:\n%s", len(pngs), stdout)
	}
}

// TestReportVarExact: --var vm=VALUE for the multi-value vm takes a VM's
// exact name as that VM alone, though it holds regex characters, and any
// other value as a regex.
func TestReportVarExact(t *testing.T) {
	for _, tc := range []struct {
		vms     []string
		value   string
		matched []string // the VMs the migrations dashboard's queries select
	}{
		{[]string{"web(1)+x"}, "web(1)+x", []string{"web(1)+x"}},
		{[]string{"web(1)+x", "web11x", "web1x"}, "web(1)+x", []string{"web(1)+x"}},
		{[]string{"a.b", "axb"}, "a.b", []string{"a.b"}},
		{[]string{"web1", "web2", "db1"}, "web.*", []string{"web1", "web2"}},
		{[]string{"web1", "web11x", "db1"}, "web(1)+x", []string{"web11x"}}, // no such VM: a regex
	} {
		prom, queries := fakePrometheus(t, tc.vms, 2)
		out := filepath.Join(t.TempDir(), "out")
		stdout, _, err := runApp(t, "report", "--prometheus", prom.URL, "--dashboard", "migrations", "--var", "vm="+tc.value,
			"--from", "now-15m", "--step", "1m", "--out", out)
		if err != nil {
			t.Errorf("vms %q, --var vm=%s: %v\n%s", tc.vms, tc.value, err, stdout)
			continue
		}
		// Every query with a vm matcher selects the VMs wanted.
		n := 0
		for _, q := range queries() {
			if !strings.Contains(q, "vm=") {
				continue
			}
			n++
			m := regexp.MustCompile(`vm=~("(?:[^"\\]|\\.)*")`).FindStringSubmatch(q)
			if m == nil {
				t.Fatalf("query %s: no vm=~ matcher", q)
			}
			re, _ := strconv.Unquote(m[1])
			var got []string
			for _, vm := range tc.vms {
				if regexp.MustCompile("^(?:" + re + ")$").MatchString(vm) {
					got = append(got, vm)
				}
			}
			if !slices.Equal(got, tc.matched) {
				t.Errorf("vms %q, --var vm=%s: query %s selects %q, want %q", tc.vms, tc.value, q, got, tc.matched)
				break
			}
		}
		if n < 10 {
			t.Errorf("vms %q, --var vm=%s: %d queries with a vm matcher, want the migrations dashboard's", tc.vms, tc.value, n)
		}
	}
}

// TestReportNoData: a report with no panel's data fails and takes away the
// --out folder it made; a dashboard named twice is rendered once.
func TestReportNoData(t *testing.T) {
	prom, _ := fakePrometheus(t, nil, 32)
	out := filepath.Join(t.TempDir(), "out")
	stdout, _, err := runApp(t, "report", "--prometheus", prom.URL, "--from", "now-15m", "--out", out)
	if err == nil || !strings.Contains(err.Error(), "no panel had data") {
		t.Fatalf("report with no VMs: %v, want no panel had data\n%s", err, stdout)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("--out after a report with no data: %v, want it gone", err)
	}
	kept := t.TempDir() // a folder the user made stays
	if _, _, err := runApp(t, "report", "--prometheus", prom.URL, "--from", "now-15m", "--out", kept); err == nil {
		t.Fatal("report with no VMs succeeded")
	}
	if _, err := os.Stat(kept); err != nil {
		t.Errorf("the user's --out folder: %v", err)
	}

	prom, _ = fakePrometheus(t, []string{"web1"}, 32)
	stdout, _, err = runApp(t, "report", "--prometheus", prom.URL, "--from", "now-15m", "--out", out, "--dashboard", "dirtying", "--dashboard", "dirtying")
	if err != nil {
		t.Fatalf("report: %v\n%s", err, stdout)
	}
	pngs, _ := filepath.Glob(filepath.Join(out, "*.png"))
	if want := fmt.Sprintf("%d panels rendered, ", len(pngs)); !strings.Contains(stdout, want) || len(pngs) == 0 {
		t.Errorf("%d PNGs written for dirtying named twice:\n%s", len(pngs), stdout)
	}
}

// TestPromScrapeInterval: report takes $__rate_interval's scrape interval
// from the Prometheus's own configuration, as Grafana from its data
// source: the README's prometheus.yml scrapes every 5 s, and report's 15 s
// stretched the rates to a minute (a 500 ms profile's epoch length read
// 2.8-3.8 s).
func TestPromScrapeInterval(t *testing.T) {
	for _, tc := range []struct {
		reply string
		want  time.Duration
		ok    bool
	}{
		// As Prometheus 2.42 answers, for global 5s and a job's 2s.
		{`{"status":"success","data":{"yaml":"global:\n  scrape_interval: 5s\n  scrape_timeout: 5s\n  evaluation_interval: 1m\nscrape_configs:\n- job_name: a\n  honor_timestamps: true\n  scrape_interval: 2s\n"}}`, 5 * time.Second, true},
		{`{"status":"success","data":{"yaml":"global:\n  scrape_interval: 1m30s\n"}}`, 90 * time.Second, true},
		{`{"status":"success","data":{"yaml":"scrape_configs:\n- job_name: a\n  scrape_interval: 2s\n"}}`, 0, false},
		{`not json`, 0, false},
	} {
		prom := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/api/v1/status/config" {
				http.NotFound(w, r)
				return
			}
			w.Write([]byte(tc.reply))
		}))
		got, ok := promScrapeInterval(context.Background(), prom.URL)
		prom.Close()
		if got != tc.want || ok != tc.ok {
			t.Errorf("%s: %v %v, want %v %v", tc.reply, got, ok, tc.want, tc.ok)
		}
	}
}

// TestTimeTicksZone: the time axis's ticks read in the zone its label
// names (they were UTC under a label naming CET).
func TestTimeTicksZone(t *testing.T) {
	for _, zone := range []string{"Europe/Paris", "America/New_York", "UTC"} {
		loc, err := time.LoadLocation(zone)
		if err != nil {
			t.Skipf("%s: %v", zone, err)
		}
		from := time.Date(2026, 11, 30, 6, 0, 0, 0, loc)
		ticks := timeTicks(from.Location()).Ticks(unixSeconds(from), unixSeconds(from.Add(15*time.Minute)))
		var labels []string
		for _, tk := range ticks {
			if tk.Label != "" {
				labels = append(labels, tk.Label)
			}
		}
		if len(labels) == 0 || labels[0] != "06:00:00" {
			t.Errorf("%s: ticks %q from 06:00 there, want the first 06:00:00", zone, labels)
		}
	}
}

// TestTableLine: a table panel's value is in the panel's unit, scaled as
// its axis would be (it drew a bare "= 0.308" for 308 ms; found by a
// new-user walk).
func TestTableLine(t *testing.T) {
	for _, tc := range []struct {
		unit  string
		value float64
		want  string
	}{
		{"s", 0.308, `{mode="precopy"} = 308 ms`},
		{"s", 4.5, `{mode="precopy"} = 4.5 seconds`},
		{"bytes", 3 << 20, `{mode="precopy"} = 3 MiB`},
		{"percentunit", 0.125, `{mode="precopy"} = 12.5 %`},
		{"none", 7, `{mode="precopy"} = 7`},
	} {
		s := namedSeries{name: `{mode="precopy"}`, Series: dashboards.Series{Values: []float64{1, tc.value}}}
		div, label := axisScale(tc.unit, tc.value)
		if got := tableLine(s, div, label); got != tc.want {
			t.Errorf("%g in %s: %q, want %q", tc.value, tc.unit, got, tc.want)
		}
	}
}

// TestRenderHugeValues: a panel whose values come near 1e308 (a hostile
// or broken Prometheus) is not drawn, and said to be so, at once: its
// axis's ticks were sought for good at full CPU (found by a hostile-input
// walk). No file is left for it.
func TestRenderHugeValues(t *testing.T) {
	now := time.Now()
	s := namedSeries{name: "x", Series: dashboards.Series{Times: []time.Time{now.Add(-2 * time.Minute), now.Add(-time.Minute), now},
		Values: []float64{1, 1e308, -1e308}}}
	name := filepath.Join(t.TempDir(), "panel.png")
	done := make(chan error, 1)
	go func() {
		done <- renderPanel(name, dashboards.Panel{Type: "timeseries", Title: "x"}, []namedSeries{s}, now.Add(-3*time.Minute), now)
	}()
	select {
	case err := <-done:
		if !errors.Is(err, errUndrawable) {
			t.Errorf("a panel of values near 1e308: %v, want it not drawn", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("a panel of values near 1e308 still drawing after 20 s")
	}
	if _, err := os.Stat(name); !os.IsNotExist(err) {
		t.Errorf("a file was left for the panel not drawn (%v)", err)
	}
}

// TestLegendFirst: a line panel of more series than its legend's 8 puts
// the highest first, ties as they came, so that a failed migration (1
// among 0s) is in the legend (the 10th of 10 was not, and was drawn as
// another's colour; found by a new-user walk); 8 or fewer keep their
// order.
func TestLegendFirst(t *testing.T) {
	var ss []namedSeries
	for i := range 10 {
		v := 0.0
		if i == 9 {
			v = 1
		}
		ss = append(ss, namedSeries{name: fmt.Sprint(i), Series: dashboards.Series{Values: []float64{0, v}}})
	}
	got := legendFirst(ss)
	var names []string
	for _, s := range got {
		names = append(names, s.name)
	}
	if want := []string{"9", "0", "1", "2", "3", "4", "5", "6", "7", "8"}; !slices.Equal(names, want) {
		t.Errorf("order %v, want %v", names, want)
	}
	if few := legendFirst(ss[:8]); few[0].name != "0" {
		t.Errorf("8 series reordered: %v first", few[0].name)
	}
}

// TestReportGaps: where a series has no samples, report draws nothing: a
// heatmap's (state timeline's) cell is as wide as the query's step, not
// halfway to the next time any series has, and a line is cut where
// samples are missing (walk 52: a "completed" held for 2 samples was red
// for 40 s, and a line sloped across 4 minutes without a sample).
func TestReportGaps(t *testing.T) {
	t0 := time.Date(2026, 12, 5, 2, 0, 0, 0, time.UTC)
	at := func(secs ...int) dashboards.Series {
		var s dashboards.Series
		for _, x := range secs {
			s.Times = append(s.Times, t0.Add(time.Duration(x)*time.Second))
			s.Values = append(s.Values, 1)
		}
		return s
	}
	active := namedSeries{"active", at(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10)}
	completed := namedSeries{"completed", at(50, 51)}
	g, _, _, _, err := newHeatGrid([]namedSeries{active, completed}, 1)
	if err != nil {
		t.Fatal(err)
	}
	cols, _ := g.Dims()
	if cols != 52 {
		t.Fatalf("%d columns, want 52 (a second each from 0 to 51 s)", cols)
	}
	var red []float64
	for c := range cols {
		if !math.IsNaN(g.Z(c, 1)) {
			red = append(red, g.X(c)-unixSeconds(t0))
		}
	}
	if !slices.Equal(red, []float64{50, 51}) {
		t.Errorf("completed drawn at %v s, want at 50 and 51 only", red)
	}
	xy := plotter.XYs{{X: 0, Y: 1}, {X: 1, Y: 1}, {X: 2, Y: 1}, {X: 240, Y: 2}, {X: 241, Y: 2}}
	if runs := splitRuns(xy, 1); len(runs) != 2 || len(runs[0]) != 3 || len(runs[1]) != 2 {
		t.Errorf("runs %v, want the samples to 2 s and those from 240 s apart", runs)
	}
	if runs := splitRuns(xy[:3], 1); len(runs) != 1 {
		t.Errorf("runs %v of samples a step apart, want one", runs)
	}
}

// TestReportSaysWhichVM: the dirtying dashboard draws one VM; report says
// which, of how many, and how to draw another, where none was given (walk
// 95: it took the first unsaid), from the values it asked Prometheus for
// once (it asked twice).
func TestReportSaysWhichVM(t *testing.T) {
	prom, queries := fakePrometheus(t, []string{"db1", "web1"}, 2)
	stdout, _, err := runApp(t, "report", "--prometheus", prom.URL, "--dashboard", "dirtying", "--from", "now-15m", "--step", "1m", "--out", filepath.Join(t.TempDir(), "out"))
	if want := "vm=db1, one of 2 (db1, web1); --var vm=NAME draws another"; err != nil || !strings.Contains(stdout, want) {
		t.Errorf("report of the dirtying dashboard: %v, want %q:\n%s", err, want, stdout)
	}
	// label_values(pagecast_predictor_epochs_total, vm): its selector.
	if n := strings.Count(strings.Join(queries(), "\n")+"\n", "pagecast_predictor_epochs_total\n"); n != 1 {
		t.Errorf("the vm variable's values asked %d times, want once: %q", n, queries())
	}
	stdout, _, err = runApp(t, "report", "--prometheus", prom.URL, "--dashboard", "dirtying", "--var", "vm=web1", "--from", "now-15m", "--step", "1m", "--out", filepath.Join(t.TempDir(), "out"))
	if err != nil || strings.Contains(stdout, "one of") {
		t.Errorf("report --var vm=web1: %v\n%s", err, stdout)
	}
}

// TestReportEscapesLabels: label values are Prometheus's, anyone's text;
// report prints them escaped (walk 122: a vm named with escapes set the
// terminal's title and cleared it, one with a newline forged a line).
func TestReportEscapesLabels(t *testing.T) {
	prom, _ := fakePrometheus(t, []string{"vm\x1b]0;OWNED\x07\x1b[2J", "x\nfake"}, 2)
	stdout, _, err := runApp(t, "report", "--prometheus", prom.URL, "--dashboard", "dirtying", "--from", "now-15m", "--step", "1m", "--out", filepath.Join(t.TempDir(), "out"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.ContainsAny(stdout, "\x1b\x07") || strings.Contains(stdout, "\nfake") {
		t.Errorf("report printed a label's control characters:\n%q", stdout)
	}
	if want := `one of 2 (vm\x1b]0;OWNED\x07\x1b[2J, x; fake)`; !strings.Contains(stdout, want) {
		t.Errorf("report lacks %q:\n%s", want, stdout)
	}
}

// TestPlainTicks: an axis's tick labels carry no trailing zeros.
func TestPlainTicks(t *testing.T) {
	var labels []string
	for _, tk := range (plainTicks{}).Ticks(0, 500) {
		if tk.Label != "" {
			labels = append(labels, tk.Label)
		}
	}
	if !slices.Contains(labels, "500") || slices.ContainsFunc(labels, func(l string) bool { return strings.HasSuffix(l, ".00") || strings.HasSuffix(l, ".0") }) {
		t.Errorf("ticks of 0 to 500: %q", labels)
	}
	for _, tk := range (plainTicks{}).Ticks(0, 2.5) {
		if strings.HasSuffix(tk.Label, "0") && strings.Contains(tk.Label, ".") {
			t.Errorf("ticks of 0 to 2.5: %q", tk.Label)
		}
	}
}

// TestReportDrawsWhatHasData: a panel whose queries use a variable without
// values draws its other queries (walk 96: "Hook in use", profile's and
// predict serve's, was listed without data where no profile ran).
func TestReportDrawsWhatHasData(t *testing.T) {
	prom, _ := fakePrometheusOf(t, []string{"web1"}, 1, false)
	stdout, _, err := runApp(t, "report", "--prometheus", prom.URL, "--dashboard", "dirtying", "--from", "now-15m", "--step", "1m", "--out", filepath.Join(t.TempDir(), "out"))
	for _, want := range []string{"pagecast / Dirtying: predicted vs actual / Hook in use: 1 series", "/ Guest memory: no data: variable instance has no values"} {
		if err != nil || !strings.Contains(stdout, want) {
			t.Errorf("report without a profile: %v, want %q:\n%s", err, want, stdout)
		}
	}
}

// TestReportHeatmapOranges: report draws the heatmap in the colours
// Grafana draws the panel in (its scheme, Oranges: pale for the fewest,
// dark orange for the most), not blue to red.
func TestReportHeatmapOranges(t *testing.T) {
	if p := oranges(64).Colors(); len(p) != 64 || p[0] != (color.RGBA{0xff, 0xf5, 0xeb, 0xff}) || p[63] != (color.RGBA{0x7f, 0x27, 0x04, 0xff}) {
		t.Fatalf("oranges(64): %d colours from %v to %v", len(p), p[0], p[len(p)-1])
	}
	t0 := time.Date(2026, 12, 5, 2, 0, 0, 0, time.UTC)
	var series []namedSeries
	for r := range 4 {
		var s dashboards.Series
		for c := range 60 {
			s.Times = append(s.Times, t0.Add(time.Duration(c)*time.Second))
			s.Values = append(s.Values, float64(r*c))
		}
		series = append(series, namedSeries{fmt.Sprintf("0x%08x", r<<21), s})
	}
	name := filepath.Join(t.TempDir(), "heat.png")
	if err := renderPanel(name, dashboards.Panel{Type: "heatmap", Title: "where"}, series, t0, t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	darkest, blue := 0, 0
	eachPixel(t, name, func(r, g, b uint32) {
		if r == 0x7f && g == 0x27 && b == 0x04 {
			darkest++
		}
		if b > r+40 {
			blue++
		}
	})
	if darkest == 0 || blue > 0 {
		t.Errorf("heatmap: %d pixels of Oranges' darkest, %d bluish ones; want some and none", darkest, blue)
	}
}

// TestReportHeatmapBlanksZeros: cells of 1e-9 or less are left blank, as
// the dashboard's heatmap filter (le 1e-9) leaves them in Grafana; they
// were drawn in the palest orange (review 105).
func TestReportHeatmapBlanksZeros(t *testing.T) {
	t0 := time.Date(2026, 12, 5, 2, 0, 0, 0, time.UTC)
	var series []namedSeries
	for r := range 4 {
		var s dashboards.Series
		for c := range 30 {
			s.Times = append(s.Times, t0.Add(time.Duration(c)*time.Second))
			s.Values = append(s.Values, float64(min(r, 1)*100)) // row 0 all zero
		}
		series = append(series, namedSeries{fmt.Sprintf("0x%08x", r<<21), s})
	}
	name := filepath.Join(t.TempDir(), "heat.png")
	if err := renderPanel(name, dashboards.Panel{Type: "heatmap", Title: "where"}, series, t0, t0.Add(30*time.Second)); err != nil {
		t.Fatal(err)
	}
	palest, darkest := 0, 0
	eachPixel(t, name, func(r, g, b uint32) {
		switch [3]uint32{r, g, b} {
		case [3]uint32{0xff, 0xf5, 0xeb}:
			palest++
		case [3]uint32{0x7f, 0x27, 0x04}:
			darkest++
		}
	})
	if palest > 0 || darkest == 0 {
		t.Errorf("%d pixels in the palest orange (the zero row, want none: blank), %d in the darkest (want some)", palest, darkest)
	}
}

// eachPixel calls fn with each pixel's red, green and blue (0-255) of the
// PNG at path.
func eachPixel(t *testing.T, path string, fn func(r, g, b uint32)) {
	t.Helper()
	img := readPNG(t, path)
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, _ := img.At(x, y).RGBA()
			fn(r>>8, g>>8, bl>>8)
		}
	}
}

// readPNG decodes the PNG at path.
func readPNG(t *testing.T, path string) image.Image {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// walkPredictions are the series of the walk's "Every mode's prediction"
// (walk 129): mode auto's prediction for 6 modes of one migration, with
// the labels Prometheus adds (instance, job), and vm named vm.
func walkPredictions(vm string) []namedSeries {
	now := time.Date(2026, 12, 6, 22, 5, 0, 0, time.UTC)
	var out []namedSeries
	for i, mode := range []string{"precopy", "predictive", "throttle", "tsmc", "mecom", "postcopy"} {
		labels := map[string]string{"__name__": "pagecast_migration_predicted_total_time_seconds", "chosen": "0", "instance": "127.0.0.1:47272",
			"job": "pagecast-migrate", "migration": "2026-12-06T22:01:29.798Z", "mode": mode, "vm": vm}
		out = append(out, namedSeries{dashboards.Legend("", labels), dashboards.Series{Labels: labels, Times: []time.Time{now}, Values: []float64{1.242 + float64(i)}}})
	}
	return out
}

// committedPanel is the panel titled title of the committed dashboard file.
func committedPanel(t *testing.T, file, title string) dashboards.Panel {
	t.Helper()
	ds, err := dashboards.Committed()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range ds {
		for _, p := range d.Panels {
			if d.File == file && p.Title == title {
				return p
			}
		}
	}
	t.Fatalf("%s has no panel %q", file, title)
	return dashboards.Panel{}
}

// TestReportTableDrawsLongRows: a table or stat panel whose lines are
// wider than the picture is drawn with every row, inside the picture (walk
// 129: "Every mode's prediction", 6 lines of about 150 characters, came
// out as its title alone and was counted as drawn; gonum's labels were
// all dropped where one overflowed).
func TestReportTableDrawsLongRows(t *testing.T) {
	long := walkPredictions("web2-frontend-0001")
	line := tableLine(long[0], 1, "seconds")
	if n := len(line); n < 140 {
		t.Fatalf("a line of %d characters, want the walk's ~150", n)
	}
	from, to := long[0].Times[0].Add(-6*time.Minute), long[0].Times[0]
	for _, kind := range []string{"table", "stat"} {
		// No organize transformation: every label shown, as wide as the
		// walk's lines.
		p := dashboards.Panel{Type: kind, Title: "Every mode's prediction"}
		p.FieldConfig.Defaults.Unit = "s"
		dir := t.TempDir()
		one, six := filepath.Join(dir, "one.png"), filepath.Join(dir, "six.png")
		if err := renderPanel(one, p, long[:1], from, to); err != nil {
			t.Fatal(err)
		}
		if err := renderPanel(six, p, long, from, to); err != nil {
			t.Fatal(err)
		}
		ink1, bands1, _ := textInk(t, one)
		ink6, bands6, edge := textInk(t, six)
		if bands6 < 6 || ink6 < 4*ink1 || ink1 == 0 {
			t.Errorf("%s of 6 lines of %d characters: %d lines of ink below the title, %d inked pixels (one line: %d lines, %d pixels); want 6 lines or more, 4 times the one's ink",
				kind, len(line), bands6, ink6, bands1, ink1)
		}
		if edge {
			t.Errorf("%s of 6 lines of %d characters: ink at the picture's right edge, want the lines fitted inside it", kind, len(line))
		}
	}
}

// textInk measures the ink of a report PNG below its title: inked pixels,
// the runs of pixel rows with ink (lines of text), and whether any touches
// the right edge.
func textInk(t *testing.T, path string) (ink, bands int, edge bool) {
	t.Helper()
	img := readPNG(t, path)
	b := img.Bounds()
	inBand := false
	for y := b.Min.Y + 25; y < b.Max.Y; y++ { // the title is above
		inked := false
		for x := b.Min.X; x < b.Max.X; x++ {
			if r, g, bl, _ := img.At(x, y).RGBA(); r>>8 < 0xc0 || g>>8 < 0xc0 || bl>>8 < 0xc0 {
				ink++
				inked = true
				edge = edge || x >= b.Max.X-2
			}
		}
		if inked && !inBand {
			bands++
		}
		inBand = inked
	}
	return ink, bands, edge
}

// TestTableCutsWhatCannotFit: a table too wide for the picture at its
// smallest font has its widest column cut in the middle, with an
// ellipsis, and every other cell whole.
func TestTableCutsWhatCannotFit(t *testing.T) {
	vm := strings.Repeat("a-very-long-vm-name-", 20) + "end"
	p := dashboards.Panel{Type: "table"}
	div, label := axisScale("s", 7)
	tbl, err := newTextTable(p, walkPredictions(vm), div, label)
	if err != nil {
		t.Fatal(err)
	}
	width := pictureWidth - 10
	size, lines := tbl.fit(width)
	if _, total := columnWidths(tableStyle(size), lines); total > width {
		t.Errorf("lines %v wide, want at most the picture's %v", total, width)
	}
	vmAt := slices.Index(tbl.header, "vm")
	for i, line := range lines[1:] {
		for k, cell := range line {
			switch {
			case k == vmAt && (!strings.HasPrefix(cell, "a-very") || !strings.HasSuffix(cell, "end") || !strings.Contains(cell, "…")):
				t.Errorf("row %d: vm %q, want it cut in the middle", i, cell)
			case k != vmAt && cell != tbl.rows[i][k]:
				t.Errorf("row %d: %q cut, want %q whole", i, cell, tbl.rows[i][k])
			}
		}
	}
}

// TestTableOrganize: a table panel shows the columns its organize
// transformation leaves, in its order, under its names, as Grafana does:
// not instance and job (walk 129: every label of the series was in the
// lines), and Value only where it is kept.
func TestTableOrganize(t *testing.T) {
	div, label := axisScale("s", 7)
	for _, tc := range []struct {
		panel  string
		header []string
		row    []string
	}{
		{"Every mode's prediction", []string{"vm", "migration", "mode", "chosen", "predicted total time"},
			[]string{"web2", "2026-12-06T22:01:29.798Z", "precopy", "0", "1.242 seconds"}},
		{"Mode and engine", []string{"vm", "migration", "mode", "chosen"}, // no engine label here, and no value
			[]string{"web2", "2026-12-06T22:01:29.798Z", "precopy", "0"}},
	} {
		tbl, err := newTextTable(committedPanel(t, "migrations.json", tc.panel), walkPredictions("web2"), div, label)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(tbl.header, tc.header) || len(tbl.rows) != 6 || !slices.Equal(tbl.rows[0], tc.row) {
			t.Errorf("%s: header %q, %d rows, the first %q; want %q, 6, %q", tc.panel, tbl.header, len(tbl.rows), tbl.rows[0], tc.header, tc.row)
		}
		for _, row := range tbl.rows {
			for _, cell := range row {
				if strings.Contains(cell, "127.0.0.1") || strings.Contains(cell, "pagecast-migrate") {
					t.Errorf("%s: a cell %q of a label the panel excludes", tc.panel, cell)
				}
			}
		}
	}
	// A table whose organize leaves nothing is not drawn, and not
	// counted as drawn.
	p := dashboards.Panel{Type: "table", Title: "nothing"}
	var none dashboards.Transformation
	none.ID = "organize"
	none.Options.ExcludeByName = map[string]bool{"Value": true}
	for k := range walkPredictions("web2")[0].Labels {
		none.Options.ExcludeByName[k] = true
	}
	p.Transformations = []dashboards.Transformation{none}
	name := filepath.Join(t.TempDir(), "nothing.png")
	if err := renderPanel(name, p, walkPredictions("web2"), time.Now().Add(-time.Minute), time.Now()); !errors.Is(err, errTooLittleToDraw) {
		t.Errorf("a table of no column: %v, want it not drawn (errTooLittleToDraw)", err)
	}
	if _, err := os.Stat(name); !os.IsNotExist(err) {
		t.Errorf("a file was left for the table not drawn (%v)", err)
	}
}

// TestReportUndrawableSaid: panels whose values no axis holds (±1e308)
// are said not drawn, apart from those without data, and the end says
// so, not that Prometheus scraped nothing (walk 153).
func TestReportUndrawableSaid(t *testing.T) {
	prom := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		r.ParseForm()
		switch {
		case r.URL.Path == "/api/v1/status/buildinfo":
			w.Write([]byte(`{"status":"success","data":{"version":"test"}}`))
		case strings.HasPrefix(r.URL.Path, "/api/v1/label/"):
			w.Write([]byte(`{"status":"success","data":["web1"]}`))
		case r.URL.Path == "/api/v1/query_range":
			start, _ := strconv.ParseFloat(r.Form.Get("start"), 64)
			fmt.Fprintf(w, `{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"vm":"web1"},"values":[[%.0f,"1"],[%.0f,"1e308"],[%.0f,"-1e308"]]}]}}`,
				start, start+60, start+120)
		default:
			http.NotFound(w, r)
		}
	}))
	defer prom.Close()
	stdout, _, err := runApp(t, "report", "--prometheus", prom.URL, "--from", "now-15m", "--out", filepath.Join(t.TempDir(), "out"), "--dashboard", "dirtying")
	if err == nil || !strings.Contains(err.Error(), "no panel could be drawn") || strings.Contains(err.Error(), "is Prometheus scraping") ||
		!strings.Contains(stdout, ": not drawn: ") || !strings.Contains(stdout, "with data no axis holds") {
		t.Errorf("report of values no axis holds: %v\n%s", err, stdout)
	}
}
