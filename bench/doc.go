// Package bench holds pagecast's end-to-end benchmarks: each runs the real
// parts (pagecast's monitor, QEMU) side by side in one run and reports the
// figures that matter, and their ratios, with b.ReportMetric. `make bench`
// runs them and prints a table (cmd/benchtable).
package bench
