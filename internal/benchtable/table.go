package main

import (
	"bufio"
	"cmp"
	"fmt"
	"io"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
)

var (
	benchLine = regexp.MustCompile(`^Benchmark(\S+?)(-\d+)?\s+\d+\s+(.*)$`)
	skipLine  = regexp.MustCompile(`^\s*--- (SKIP|FAIL): Benchmark(\S+?)(-\d+)?(\s|$)`)
	logLine   = regexp.MustCompile(`^\s+\S+\.go:\d+: (.*)$`)
	nameLine  = regexp.MustCompile(`^Benchmark\S+$`)                     // -v: a benchmark starts
	panicLine = regexp.MustCompile(`^panic: (.*)$`)                      // a benchmark panicked, or the run timed out
	pkgFail   = regexp.MustCompile(`^FAIL\s+(\S+)\s+([0-9.]+s|\[.*\])$`) // a package's summary: its run, or its build, failed
)

// module is what package paths are printed without.
const module = "github.com/pagecast/pagecast/"

type row struct {
	name    string // without Benchmark and the -N of GOMAXPROCS
	metrics map[string]float64
}

// table is one benchmark's rows, in one package.
type table struct {
	pkg, bench string
	units      []string // its rows' metrics, in order of first appearance
	rows       []row
}

// skip is one benchmark (with its sub-benchmarks) that skipped, or failed,
// for one reason.
type skip struct {
	pkg, bench, why string
	n               int
}

type tables struct {
	rows          []*table // in order of first appearance
	skips, failed []skip
}

// read parses go test's output from r, copying every line to pass.
func read(r io.Reader, pass io.Writer) (*tables, error) {
	t := &tables{}
	byKey := map[string]*table{}
	pkg, lastLog, lastPanic := "", "", ""
	br := bufio.NewReader(r) // lines of any length: a benchmark's log may be long (walk 164: a Scanner's 1 MiB stopped the run)
	for {
		line, err := br.ReadString('\n')
		if line == "" && err != nil {
			if err == io.EOF {
				break
			}
			return t, err
		}
		line = strings.TrimSuffix(line, "\n")
		fmt.Fprintln(pass, line)
		if p, ok := strings.CutPrefix(line, "pkg: "); ok {
			pkg, lastLog, lastPanic = strings.TrimPrefix(strings.TrimSpace(p), module), "", ""
			continue
		}
		if nameLine.MatchString(line) {
			lastLog = "" // not a reason for this one's skip (walk 164: a parent's log line was)
			continue
		}
		if m := logLine.FindStringSubmatch(line); m != nil {
			lastLog = m[1]
			continue
		}
		if m := panicLine.FindStringSubmatch(line); m != nil && (lastPanic == "" || strings.HasPrefix(m[1], "test timed out")) {
			// The first, but a timeout's over any line a benchmark
			// printed that starts so (walk 166).
			lastPanic = "panic: " + m[1]
			continue
		}
		if strings.HasPrefix(line, "ok ") {
			lastPanic = "" // a package that passed: not a later one's reason
			continue
		}
		if m := pkgFail.FindStringSubmatch(line); m != nil {
			// A panic or a timeout ends the package's run with no
			// --- FAIL line: its later benchmarks did not run.
			p := strings.TrimPrefix(m[1], module)
			if !slices.ContainsFunc(t.failed, func(s skip) bool { return s.pkg == p }) {
				why := cmp.Or(lastPanic, "its run failed") + "; its benchmarks after that did not run"
				if strings.HasPrefix(m[2], "[") {
					why = m[2] + ": none of its benchmarks ran" // [build failed], [setup failed]
				}
				t.failed = append(t.failed, skip{pkg: p, why: why, n: 1})
			}
			lastPanic = ""
			continue
		}
		if m := skipLine.FindStringSubmatch(line); m != nil {
			list := &t.skips
			if m[1] == "FAIL" {
				list = &t.failed
			}
			add(list, pkg, m[2], cmp.Or(lastLog, "no reason given"))
			lastLog = ""
			continue
		}
		m := benchLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		lastLog = ""
		r := row{name: m[1], metrics: map[string]float64{}}
		bench, _, _ := strings.Cut(r.name, "/")
		key := pkg + " " + bench
		tb := byKey[key]
		if tb == nil {
			tb = &table{pkg: pkg, bench: bench}
			byKey[key] = tb
			t.rows = append(t.rows, tb)
		}
		f := strings.Fields(m[3])
		for i := 0; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil || (f[i+1] == "ns/op" && v == 0) { // 0 ns/op: a benchmark that reports only its own metrics
				continue
			}
			r.metrics[f[i+1]] = v
			if !slices.Contains(tb.units, f[i+1]) {
				tb.units = append(tb.units, f[i+1])
			}
		}
		tb.rows = append(tb.rows, r)
	}
	return t, nil
}

// add counts a skipped or failed benchmark under its top-level benchmark
// and reason; a top-level one whose sub-benchmarks are counted already is
// not counted again (go test says the parent of a failed one failed).
func add(list *[]skip, pkg, name, why string) {
	bench, _, sub := strings.Cut(name, "/")
	if !sub && slices.ContainsFunc(*list, func(s skip) bool { return s.pkg == pkg && s.bench == bench }) {
		return
	}
	for i := range *list {
		if s := &(*list)[i]; s.pkg == pkg && s.bench == bench && s.why == why {
			s.n++
			return
		}
	}
	*list = append(*list, skip{pkg: pkg, bench: bench, why: why, n: 1})
}

// print writes the tables, a package's under its name, then the skipped
// and the failed.
func (t *tables) print(w io.Writer) {
	pkg := "\x00"
	for _, tb := range t.rows {
		if tb.pkg != pkg {
			pkg = tb.pkg
			fmt.Fprintf(w, "\n%s\n", cmp.Or(pkg, "(package not said)"))
		}
		units := tb.shown()
		fmt.Fprintln(w)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprint(tw, "  benchmark\t")
		for _, u := range units {
			fmt.Fprintf(tw, "%s\t", u)
		}
		fmt.Fprintln(tw)
		for _, r := range tb.rows {
			fmt.Fprintf(tw, "  %s\t", r.name)
			for _, u := range units {
				if v, ok := r.metrics[u]; ok {
					fmt.Fprintf(tw, "%s\t", format(v))
				} else {
					fmt.Fprint(tw, "–\t")
				}
			}
			fmt.Fprintln(tw)
		}
		tw.Flush()
	}
	list(w, "skipped (these rows are not in the tables above):", t.skips)
	list(w, "FAILED (their last log line):", t.failed)
}

// list prints a heading and the benchmarks in l, if any.
func list(w io.Writer, heading string, l []skip) {
	if len(l) == 0 {
		return
	}
	fmt.Fprintf(w, "\n%s\n", heading)
	for _, s := range l {
		if s.bench == "" { // the package's run
			fmt.Fprintf(w, "  %s: %s\n", cmp.Or(s.pkg, "(package not said)"), s.why)
			continue
		}
		what := "Benchmark" + s.bench
		if s.n > 1 {
			what += fmt.Sprintf(" (%d of its sub-benchmarks)", s.n)
		}
		fmt.Fprintf(w, "  %s: %s: %s\n", cmp.Or(s.pkg, "(package not said)"), what, s.why)
	}
}

// shown is the table's columns: its metrics but ns/op where another
// metric gives the same figure on every row (a benchmark of one page an
// op: ns/op beside ns/page).
func (tb *table) shown() []string {
	i := slices.Index(tb.units, "ns/op")
	if i < 0 {
		return tb.units
	}
	for _, u := range tb.units {
		if u == "ns/op" || !strings.HasPrefix(u, "ns/") {
			continue
		}
		same := true
		for _, r := range tb.rows {
			a, okA := r.metrics["ns/op"]
			b, okB := r.metrics[u]
			if okA != okB || math.Abs(a-b) > 1e-9*math.Max(math.Abs(a), 1) {
				same = false
				break
			}
		}
		if same {
			return slices.Delete(slices.Clone(tb.units), i, i+1)
		}
	}
	return tb.units
}

// format gives at least four figures below 1000, so that a budget's 15.56
// bytes a page against 16 does not read "16" (walk 70), and a whole number
// as one: a count of rounds is 4, not 4.000 (walk 162).
func format(v float64) string {
	switch a := math.Abs(v); {
	case v == math.Trunc(v) || a >= 1000:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 100:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
	return strconv.FormatFloat(v, 'f', 3, 64)
}
