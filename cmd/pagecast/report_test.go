package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
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

// fakePrometheus answers report's queries as a Prometheus would: every
// label has the values in labels, and every range query returns series
// series, each with one sample at the start of the range.
func fakePrometheus(t *testing.T, labels []string, series int, queries chan<- string) *httptest.Server {
	t.Helper()
	prom := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.URL.Path == "/api/v1/status/buildinfo":
			w.Write([]byte(`{"status":"success","data":{"version":"test"}}`))
		case strings.HasPrefix(r.URL.Path, "/api/v1/label/"):
			if queries != nil {
				r.ParseForm()
				for _, m := range r.Form["match[]"] {
					queries <- m
				}
			}
			b, _ := json.Marshal(labels)
			fmt.Fprintf(w, `{"status":"success","data":%s}`, b)
		case r.URL.Path == "/api/v1/query_range":
			r.ParseForm()
			if queries != nil {
				queries <- r.Form.Get("query")
			}
			var result []string
			for i := range series {
				result = append(result, fmt.Sprintf(`{"metric":{"region":"0x%08x","state":"s%d"},"values":[[%s,"%d"]]}`, i<<20, i, r.Form.Get("start"), i+1))
			}
			fmt.Fprintf(w, `{"status":"success","data":{"resultType":"matrix","result":[%s]}}`, strings.Join(result, ","))
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(prom.Close)
	return prom
}

// TestReportTooLittleForHeatmap: a heatmap of one time (a step as long as
// the range) is listed as without data, and the other panels are drawn.
func TestReportTooLittleForHeatmap(t *testing.T) {
	prom := fakePrometheus(t, []string{"web1"}, 32, nil)
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
