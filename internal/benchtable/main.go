// Command benchtable reads `go test -bench` output on stdin, passes it
// through, and then prints the benchmarks' reported metrics as a table, one
// row per benchmark and one column per metric, a table for each set of
// metrics (make bench).
package main

import (
	"bufio"
	"fmt"
	"math"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
)

var benchLine = regexp.MustCompile(`^Benchmark(\S+?)(-\d+)?\s+\d+\s+(.*)$`)

type row struct {
	name    string
	sig     string
	metrics map[string]float64
}

func main() {
	var rows []row
	var order []string             // row signatures, in order of first appearance
	units := map[string][]string{} // signature → its metrics, in order
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		line := sc.Text()
		fmt.Println(line)
		m := benchLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		r := row{name: m[1], metrics: map[string]float64{}}
		var mine []string
		f := strings.Fields(m[3])
		for i := 0; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil || (f[i+1] == "ns/op" && v == 0) { // 0 ns/op: a benchmark that reports only its own metrics
				continue
			}
			r.metrics[f[i+1]] = v
			mine = append(mine, f[i+1])
		}
		sorted := slices.Clone(mine)
		slices.Sort(sorted)
		r.sig = strings.Join(sorted, " ")
		if _, ok := units[r.sig]; !ok {
			units[r.sig] = mine
			order = append(order, r.sig)
		}
		rows = append(rows, r)
	}
	if len(rows) == 0 {
		fmt.Fprintln(os.Stderr, "benchtable: no benchmark results")
		os.Exit(1)
	}
	// One table per set of metrics, so each has only the columns its rows report.
	for _, sig := range order {
		fmt.Println()
		tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprint(tw, "benchmark\t")
		for _, u := range units[sig] {
			fmt.Fprintf(tw, "%s\t", u)
		}
		fmt.Fprintln(tw)
		for _, r := range rows {
			if r.sig != sig {
				continue
			}
			fmt.Fprintf(tw, "%s\t", r.name)
			for _, u := range units[sig] {
				fmt.Fprintf(tw, "%s\t", format(r.metrics[u]))
			}
			fmt.Fprintln(tw)
		}
		tw.Flush()
	}
}

// format gives at least four figures below 1000: a budget's 15.56
// bytes a page against 16 read "16" (walk 70).
func format(v float64) string {
	switch a := math.Abs(v); {
	case v == 0 || a >= 1000:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 100:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
	return strconv.FormatFloat(v, 'f', 3, 64)
}
