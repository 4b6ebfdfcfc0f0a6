package main

import (
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
		{"short", 4500, 1e3, "k"},
	} {
		div, label := axisScale(tc.unit, tc.max)
		if div != tc.div || label != tc.label {
			t.Errorf("axisScale(%s, %g) = %g %q, want %g %q", tc.unit, tc.max, div, label, tc.div, tc.label)
		}
	}
}

func TestReportRefusesBadRanges(t *testing.T) {
	for _, args := range [][]string{
		{"report", "--out", t.TempDir(), "--from", "now", "--to", "now-1h"},
		{"report", "--out", t.TempDir(), "--from", "tomorrow"},
		{"report", "--out", t.TempDir(), "--var", "novalue"},
		{"report", "--out", t.TempDir(), "--dashboard", "nope", "--prometheus", "http://127.0.0.1:1"},
		{"report", "--out", t.TempDir(), "--prometheus", "http://" + freeAddr(t)}, // nothing listens
	} {
		if _, _, err := runApp(t, args...); err == nil {
			t.Errorf("pagecast %s: no error", strings.Join(args, " "))
		} else {
			t.Logf("pagecast %s: %v", strings.Join(args, " "), err)
		}
	}
}
