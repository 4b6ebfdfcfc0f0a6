// Command benchtable reads `go test -bench -v` output on stdin, passes it
// through, and then prints the benchmarks' reported metrics as tables: one
// per benchmark (its sub-benchmarks are its rows), under its package, with
// a column per metric; then the benchmarks that skipped, and why (make
// bench). Without -v, go test does not say that a benchmark skipped.
package main

import (
	"fmt"
	"os"
)

func main() {
	t, err := read(os.Stdin, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchtable:", err)
		os.Exit(1)
	}
	t.print(os.Stdout)
	if len(t.rows) == 0 {
		fmt.Fprintln(os.Stderr, "benchtable: no benchmark results")
		os.Exit(1)
	}
}
