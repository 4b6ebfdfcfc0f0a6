package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/pagecast/pagecast/internal/testutil"
)

// event is one line of `go test -json`: cmd/test2json's TestEvent, with the
// build events cmd/go adds (build-output, build-fail).
type event struct {
	Action      string
	Package     string
	Test        string
	Output      string
	ImportPath  string
	FailedBuild string
	Elapsed     float64 // seconds, on a test's or package's pass or fail
}

// A test is one test or subtest of a package being run.
type test struct {
	name     string
	status   string   // "" while it runs, then "pass", "fail" or "skip"
	output   []string // its own output, without the === framing lines
	children []*test  // subtests, in the order they started
}

// A pkg is a package being run. items holds its top-level tests and its own
// output lines in the order they came, to print them in that order.
type pkg struct {
	tests map[string]*test
	items []item
}

type item struct {
	test *test  // a top-level test, or
	text string // a line of the package's own output
}

// needs are the skip reasons counted by what a test needs, in the order the
// closing line lists them, named by what follows "needs ".
var needs = []string{testutil.NeedKVM, testutil.NeedBPF, testutil.NeedQEMU}

// summary accumulates a run.
type summary struct {
	w       io.Writer
	pkgs    map[string]*pkg
	seen    []string            // packages, in the order they started
	builds  map[string][]string // build output per import path, until its build-fail
	passed  int
	failed  int
	skipped int
	want    map[string]int      // skips per Need* prefix
	other   map[string][]string // other skip reasons → tests (package, name)
	reasons []string            // other skip reasons, in order of first appearance
	failedT [][2]string         // failed tests: package, name
	failedP []string            // failed packages, "[build failed]" appended where it did not build
	slowest []timed             // the slowest top-level tests that ended, slowest first
	// running is the package whose timeout's panic is listing the tests
	// it stopped ("running tests:"), whose top-level tests count among
	// the slowest; "" outside such a list.
	running string
	ok      bool
}

// A timed test is a top-level test that passed or failed, and how long it
// took (a parallel test from when it went on, not from its pause), or one
// the timeout stopped ("did not finish" appended to its name).
type timed struct {
	pkg, name string
	seconds   float64
}

// slowShown is how many of the slowest tests the summary lists, and
// slowAtLeast the time below which a test is not worth listing: the list is
// there to say where a suite's time goes.
const (
	slowShown   = 5
	slowAtLeast = 10.0
)

// timedTest keeps t among the slowest if it is one.
func (s *summary) timedTest(pkgPath, name string, seconds float64) {
	if strings.Contains(name, "/") || seconds < slowAtLeast {
		return
	}
	i, _ := slices.BinarySearchFunc(s.slowest, seconds, func(t timed, sec float64) int {
		switch {
		case t.seconds > sec:
			return -1
		case t.seconds < sec:
			return 1
		}
		return 0
	})
	s.slowest = slices.Insert(s.slowest, i, timed{pkgPath, name, seconds})
	if len(s.slowest) > slowShown {
		s.slowest = s.slowest[:slowShown]
	}
}

// summarize reads `go test -json` from r, writes plain `go test` output and
// the closing summary to w, and reports whether everything passed. Lines
// that are not JSON events are copied through.
func summarize(r io.Reader, w io.Writer) (bool, error) {
	s := &summary{w: w, pkgs: map[string]*pkg{}, builds: map[string][]string{},
		want: map[string]int{}, other: map[string][]string{}, ok: true}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		var e event
		line := sc.Bytes()
		if err := json.Unmarshal(line, &e); err != nil || e.Action == "" {
			fmt.Fprintf(w, "%s\n", line)
			continue
		}
		s.handle(e)
	}
	if err := sc.Err(); err != nil {
		return false, fmt.Errorf("read go test output: %w", err)
	}
	for _, name := range s.seen {
		if _, running := s.pkgs[name]; running {
			s.finishPackage(name, "fail")
			fmt.Fprintf(w, "FAIL\t%s [no result: the output ended first]\n", name)
			s.failedP = append(s.failedP, name+" [no result]")
		}
	}
	if len(s.seen) == 0 && s.ok {
		fmt.Fprintln(w, "testsummary: no package results on stdin (want `go test -json` output)")
		s.ok = false
	}
	s.close()
	return s.ok, nil
}

// runningLine is a test in a timeout's list of those running: its name
// and how long it had run.
var runningLine = regexp.MustCompile(`^\t\t(\S+) \(([0-9hmsµn.]+)\)\n$`)

// runningTests reads a timeout's "running tests:" list: its top-level
// tests count among the slowest, marked as stopped (a test killed by
// -timeout has no pass or fail event to time it by).
func (s *summary) runningTests(pkgPath, line string) {
	if line == "\trunning tests:\n" || line == "running tests:\n" {
		s.running = pkgPath
		return
	}
	if s.running != pkgPath {
		return
	}
	m := runningLine.FindStringSubmatch(line)
	if m == nil {
		s.running = ""
		return
	}
	if d, err := time.ParseDuration(m[2]); err == nil {
		s.timedTest(pkgPath, m[1]+" (did not finish)", d.Seconds())
	}
}

func (s *summary) handle(e event) {
	if e.Action == "output" {
		s.runningTests(e.Package, e.Output)
	}
	switch e.Action {
	case "build-output":
		s.builds[e.ImportPath] = append(s.builds[e.ImportPath], e.Output)
		return
	case "build-fail":
		for _, line := range s.builds[e.ImportPath] {
			io.WriteString(s.w, line)
		}
		delete(s.builds, e.ImportPath)
		s.ok = false
		return
	}
	p := s.pkgs[e.Package]
	if p == nil {
		p = &pkg{tests: map[string]*test{}}
		s.pkgs[e.Package] = p
		s.seen = append(s.seen, e.Package)
	}
	if e.Test == "" {
		switch e.Action {
		case "output":
			p.items = append(p.items, item{text: e.Output})
		case "pass", "fail", "skip":
			name := e.Package
			if e.FailedBuild != "" {
				name += " [build failed]"
			}
			s.finishPackage(e.Package, e.Action)
			if e.Action == "fail" {
				s.failedP = append(s.failedP, name)
			}
		}
		return
	}
	t := p.test(e.Test)
	switch e.Action {
	case "output", "bench":
		if !framing(e.Output) {
			t.output = append(t.output, e.Output)
		}
	case "pass":
		t.status = e.Action
		s.passed++
		s.timedTest(e.Package, t.name, e.Elapsed)
	case "fail":
		t.status = e.Action
		s.failed++
		s.failedT = append(s.failedT, [2]string{e.Package, t.name})
		s.timedTest(e.Package, t.name, e.Elapsed)
	case "skip":
		t.status = e.Action
		s.skipped++
		s.skip(e.Package, t)
	}
}

// test finds or adds the test called name. A subtest's parent is the
// longest prefix before a '/' that names a test (a subtest's own name may
// hold a '/').
func (p *pkg) test(name string) *test {
	if t := p.tests[name]; t != nil {
		return t
	}
	t := &test{name: name}
	p.tests[name] = t
	for i := strings.LastIndexByte(name, '/'); i > 0; i = strings.LastIndexByte(name[:i], '/') {
		if parent := p.tests[name[:i]]; parent != nil {
			parent.children = append(parent.children, t)
			return t
		}
	}
	p.items = append(p.items, item{test: t})
	return t
}

// framing says whether a line is one of the === lines of verbose output,
// which plain go test does not print.
func framing(line string) bool {
	for _, f := range []string{"=== RUN ", "=== PAUSE ", "=== CONT ", "=== NAME "} {
		if strings.HasPrefix(line, f) {
			return true
		}
	}
	return false
}

// logPrefix is what t.Log puts before a message: indentation and file:line.
var logPrefix = regexp.MustCompile(`^\s*\S+\.go:\d+: `)

// skip counts a skipped test by its reason: the last message it logged
// (t.Skip's), or any message starting with a Need* prefix.
func (s *summary) skip(pkgPath string, t *test) {
	reason := ""
	for _, line := range t.output {
		if strings.HasPrefix(strings.TrimSpace(line), "--- SKIP: ") {
			continue
		}
		msg := strings.TrimSpace(line)
		if loc := logPrefix.FindString(line); loc != "" {
			msg = strings.TrimSpace(line[len(loc):])
		}
		for _, need := range needs {
			if strings.HasPrefix(msg, need) {
				s.want[need]++
				return
			}
		}
		if msg != "" {
			reason = msg
		}
	}
	if reason == "" {
		reason = "no reason given"
	}
	if _, ok := s.other[reason]; !ok {
		s.reasons = append(s.reasons, reason)
	}
	s.other[reason] = append(s.other[reason], pkgPath+"\x00"+t.name)
}

// finishPackage prints a package as plain go test would: for a passing one
// only its ok (or "?") line, for a failing one its failing tests' output and
// its own, in the order they came.
func (s *summary) finishPackage(name, action string) {
	p := s.pkgs[name]
	delete(s.pkgs, name)
	if action == "fail" {
		s.ok = false
	}
	for _, it := range p.items {
		switch {
		case action != "fail":
			if strings.HasPrefix(it.text, "ok  ") || strings.HasPrefix(it.text, "?   ") {
				io.WriteString(s.w, it.text)
			}
		case it.test != nil:
			s.printFailed(name, it.test, 0)
		case !framing(it.text):
			io.WriteString(s.w, it.text)
		}
	}
}

// printFailed prints a failed test or one left running when its package
// failed (a panic, a timeout): its --- FAIL line, its output, then its
// failed subtests indented under it. Tests left running count as failed.
func (s *summary) printFailed(pkgPath string, t *test, depth int) {
	if t.status != "fail" && t.status != "" {
		return
	}
	indent := strings.Repeat("    ", depth)
	header := fmt.Sprintf("--- FAIL: %s (did not finish)\n", t.name)
	if t.status == "" {
		s.failed++
		s.failedT = append(s.failedT, [2]string{pkgPath, t.name})
	}
	rest := make([]string, 0, len(t.output))
	for _, line := range t.output {
		if strings.HasPrefix(strings.TrimSpace(line), "--- FAIL: ") {
			header = strings.TrimLeft(line, " ")
			continue
		}
		rest = append(rest, line)
	}
	io.WriteString(s.w, indent+header)
	for _, line := range rest {
		if strings.HasPrefix(line, "    ") { // a log line; panics and other output stay where they are
			line = indent + line
		}
		io.WriteString(s.w, line)
	}
	for _, c := range t.children {
		s.printFailed(pkgPath, c, depth+1)
	}
}

// close prints the other skip reasons, the failures and the counts.
func (s *summary) close() {
	prefix := commonDir(s.seen)
	short := func(pkgPath, test string) string {
		return strings.TrimPrefix(pkgPath, prefix) + "." + test
	}
	fmt.Fprintln(s.w)
	if len(s.reasons) > 0 {
		fmt.Fprintln(s.w, "skipped for other reasons:")
		for _, r := range s.reasons {
			var names []string
			for _, t := range s.other[r] {
				pkgPath, name, _ := strings.Cut(t, "\x00")
				names = append(names, short(pkgPath, name))
			}
			fmt.Fprintf(s.w, "  %s: %s\n", r, strings.Join(names, ", "))
		}
	}
	if len(s.slowest) > 0 {
		var names []string
		for _, t := range s.slowest {
			names = append(names, fmt.Sprintf("%s %.0f s", short(t.pkg, t.name), t.seconds))
		}
		fmt.Fprintf(s.w, "slowest tests: %s\n", strings.Join(names, ", "))
	}
	if len(s.failedT) > 0 {
		var names []string
		for _, t := range s.failedT {
			names = append(names, short(t[0], t[1]))
		}
		fmt.Fprintf(s.w, "failed tests: %s\n", strings.Join(names, ", "))
	}
	if len(s.failedP) > 0 {
		var names []string
		for _, p := range s.failedP {
			names = append(names, strings.TrimPrefix(p, prefix))
		}
		fmt.Fprintf(s.w, "failed packages: %s\n", strings.Join(names, ", "))
	}
	fmt.Fprintf(s.w, "%d passed, %d failed, %d skipped\n", s.passed, s.failed, s.skipped)
	var want []string
	for _, need := range needs {
		want = append(want, fmt.Sprintf("%s %d", strings.TrimPrefix(need, "needs "), s.want[need]))
	}
	others := 0
	for _, tests := range s.other {
		others += len(tests)
	}
	fmt.Fprintf(s.w, "skipped for want of: %s; other reasons %d\n", strings.Join(want, ", "), others)
}

// commonDir is the longest prefix ending in '/' that all paths share, so
// tests can be named by their package's path within the module.
func commonDir(paths []string) string {
	if len(paths) == 0 {
		return ""
	}
	prefix := paths[0]
	for _, p := range paths[1:] {
		n := 0
		for n < len(prefix) && n < len(p) && prefix[n] == p[n] {
			n++
		}
		prefix = prefix[:n]
	}
	if slices.Contains(paths, prefix) { // one package, or a module's root package
		prefix = prefix[:strings.LastIndexByte(prefix, '/')+1]
	}
	return prefix[:strings.LastIndexByte(prefix, '/')+1]
}
