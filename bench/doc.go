// Package bench holds pagecast's end-to-end benchmarks: most run the real
// parts (pagecast's monitor, QEMU) side by side in one run; others run the
// simulator at sizes no test can (BenchmarkSimulate1TiB,
// BenchmarkSimulatePredictive64GiB) or over the real programs' traces
// (BenchmarkPredictiveRegimes). Each reports the figures that matter, and
// their ratios, with b.ReportMetric. `make bench` runs them and prints a
// table (internal/benchtable).
package bench
