package main

import (
	"strings"
	"testing"
)

// TestFormat: four figures below 1000, so that a budget's 15.56 bytes a
// page is not read as 16 (walk 70); a whole number as one (walk 162: 4.000
// rounds).
func TestFormat(t *testing.T) {
	for v, want := range map[float64]string{0: "0", 15.56: "15.56", 15.06: "15.06", 0.7430: "0.743", 123.45: "123.5",
		62019000: "62019000", -3.5: "-3.500", 1000: "1000", 4: "4", 1: "1", 0.9996: "1.000"} {
		if got := format(v); got != want {
			t.Errorf("format(%v) = %q, want %q", v, got, want)
		}
	}
}

// goTestV is what `go test -bench -v` printed for two packages without
// /dev/kvm (walk 162's make bench, cut down).
const goTestV = `goos: linux
goarch: amd64
pkg: github.com/pagecast/pagecast/bench
cpu: some CPU
BenchmarkModes
BenchmarkModes/converging/precopy
    modes_test.go:42: needs /dev/kvm: open /dev/kvm: no such file or directory
--- SKIP: BenchmarkModes/converging/precopy
BenchmarkModes/converging/predictive
    modes_test.go:42: needs /dev/kvm: open /dev/kvm: no such file or directory
--- SKIP: BenchmarkModes/converging/predictive
BenchmarkQEMUEngine/converging/qemu-precopy-2     	       1	        57.50 MiB	         1.000 bytes/qemu	         1.000 converged	      3130 total-ms	         4.000 rounds
--- BENCH: BenchmarkQEMUEngine/converging/qemu-precopy-2
    qemu_engine_test.go:232: precopy: QEMU total 1831 ms
BenchmarkQEMUEngine/converging/precopy-2          	       1	        61.60 MiB	         1.071 bytes/qemu	         1.000 converged	      2007 total-ms	         3.000 rounds
BenchmarkProfilerOverhead
    profiler_test.go:30: needs eBPF: no /dev/kvm
--- SKIP: BenchmarkProfilerOverhead
BenchmarkRegimes/awk
    regimes_test.go:49: precopy at 7173757 B/s: no such file
--- FAIL: BenchmarkRegimes/awk
--- FAIL: BenchmarkRegimes
FAIL
exit status 1
FAIL	github.com/pagecast/pagecast/bench	914.000s
goos: linux
pkg: github.com/pagecast/pagecast/tcg
BenchmarkPluginOverhead/word-2	1	0	ns/op	0.577 cpu-ratio	4710903 writes/cpu-s-with
BenchmarkPluginOverhead/page-2	1	0	ns/op	0.114 cpu-ratio	67100 writes/cpu-s-with
pkg: github.com/pagecast/pagecast/predictor
BenchmarkClassify-2	1000	713.3 ns/op	713.3 ns/page
BenchmarkPredict-2	1000	20.1 ns/op	49.8 Mpages/s
BenchmarkPredict/horizon8-2	1000	40.2 ns/op	24.9 Mpages/s	3 refits
PASS
`

// TestFailures: a benchmark that panics, or a run that times out, ends its
// package's run with no --- FAIL line, and is listed all the same; a
// parent's log line is not a sub-benchmark's reason to skip; a line of 2
// MiB passes through (walk 164: a panic left the failed list empty, a
// parent's note became a skip's reason, and a line over 1 MiB ended the
// run).
func TestFailures(t *testing.T) {
	long := strings.Repeat("x", 2<<20)
	in := `pkg: github.com/pagecast/pagecast/trace
BenchmarkParent
    bench_test.go:10: parent setup note
BenchmarkParent/sub
--- SKIP: BenchmarkParent/sub
BenchmarkRead-2	10	100 ns/op
    bench_test.go:12: ` + long + `
BenchmarkAfter
panic: printed by a benchmark, not a panic
panic: test timed out after 1m0s
	running tests:
		BenchmarkAfter (1m0s)
panic: a second one, not the first
exit status 2
FAIL	github.com/pagecast/pagecast/trace	60.012s
pkg: github.com/pagecast/pagecast/uffd
BenchmarkFill-2	10	100 ns/op
PASS
ok  	github.com/pagecast/pagecast/uffd	1.000s
FAIL	github.com/pagecast/pagecast/vmm [build failed]
`
	_, got := tablesOf(t, in,
		"  trace: BenchmarkParent: no reason given\n",
		"FAILED (their last log line):\n  trace: panic: test timed out after 1m0s; its benchmarks after that did not run\n",
		"  Fill    100",
		"  vmm: [build failed]: none of its benchmarks ran\n")
	if strings.Contains(got, "parent setup note") || strings.Contains(got, "uffd: panic") {
		t.Errorf("a reason misplaced:\n%s", got)
	}
}

// tablesOf reads go test's output in, checks that it passes through
// whole, prints its tables and checks that they hold each of want.
func tablesOf(t *testing.T, in string, want ...string) (*tables, string) {
	t.Helper()
	var pass, out strings.Builder
	tb, err := read(strings.NewReader(in), &pass)
	if err != nil {
		t.Fatal(err)
	}
	if pass.String() != in {
		t.Errorf("%d bytes passed through of %d", pass.Len(), len(in))
	}
	tb.print(&out)
	got := out.String()
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Errorf("no %q in:\n%s", w, got)
		}
	}
	return tb, got
}

// TestTables: a table per benchmark under its package, whatever metrics
// its sub-benchmarks report; the skipped ones listed with why, which go
// test does not say without -v, and the failed; ns/op left out beside the
// same ns/page.
func TestTables(t *testing.T) {
	tb, got := tablesOf(t, goTestV,
		"\nbench\n", "\ntcg\n", "\npredictor\n",
		"converging/qemu-precopy  57.50           1          1      3130       4",
		"  benchmark  ns/page\n",
		"Predict/horizon8  40.20     24.90       3",
		"Predict  20.10     49.80       –",
		"skipped (these rows are not in the tables above):\n  bench: BenchmarkModes (2 of its sub-benchmarks): needs /dev/kvm: open /dev/kvm: no such file or directory\n  bench: BenchmarkProfilerOverhead: needs eBPF: no /dev/kvm\n",
		"FAILED (their last log line):\n  bench: BenchmarkRegimes: precopy at 7173757 B/s: no such file\n")
	var heads []string
	for _, tab := range tb.rows {
		heads = append(heads, tab.pkg+" "+tab.bench)
	}
	if want := "bench QEMUEngine,tcg PluginOverhead,predictor Classify,predictor Predict"; strings.Join(heads, ",") != want {
		t.Errorf("tables %q, want %q", strings.Join(heads, ","), want)
	}
	if strings.Contains(got, "no reason given") {
		t.Errorf("a parent of a failed benchmark listed as failing too:\n%s", got)
	}
	if strings.Count(got, "cpu-ratio") != 1 {
		t.Errorf("PluginOverhead's word and page not in one table:\n%s", got)
	}
}
