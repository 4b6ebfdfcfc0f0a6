package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the recorded input")

// The inputs in testdata are recorded `go test -json -count=1 ./...` runs of
// a small module: mixed.json has passing, failing (a subtest, a panic),
// skipped (each Need* prefix, other reasons, none), a build failure and a
// package without tests; timeout.json a package killed by -timeout with a
// subtest still running. The .golden files are the whole output, checked by
// eye once: the plain go test lines (compare `go test ./...` on the same
// module), then the summary.
func TestSummarize(t *testing.T) {
	tests := []struct {
		name   string
		ok     bool
		counts string // the closing two lines
		has    []string
	}{
		{"mixed", false,
			"7 passed, 4 failed, 7 skipped\nskipped for want of: /dev/kvm 2, eBPF 1, QEMU 1; other reasons 3\n",
			[]string{
				"--- FAIL: TestSub (0.00s)\n    --- FAIL: TestSub/broken (0.00s)\n        bad_test.go:14: boom\nFAIL\n",
				"broken/broken_test.go:5:28: undefined: undefined\n",
				"ok  \texample.com/demo/good\t",
				"?   \texample.com/demo/notests\t[no test files]\n",
				"--- FAIL: TestPanic (0.00s)\npanic: assignment to entry in nil map",
				"  boots QEMU; skipped in short mode: good.TestShortToo, good.TestShort\n",
				"  no reason given: bad.TestNoReason\n",
				"failed packages: bad, broken [build failed], panics\n",
			}},
		{"timeout", false,
			"1 passed, 2 failed, 0 skipped\nskipped for want of: /dev/kvm 0, eBPF 0, QEMU 0; other reasons 0\n",
			[]string{
				"--- FAIL: TestHangs (did not finish)\n    --- FAIL: TestHangs/forever (did not finish)\n" +
					"        hangs_test.go:12: waiting for a guest that never answers\npanic: test timed out after 1s\n",
				"failed tests: hangs.TestHangs, hangs.TestHangs/forever\n",
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in, err := os.ReadFile(filepath.Join("testdata", tt.name+".json"))
			if err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			ok, err := summarize(bytes.NewReader(in), &out)
			if err != nil {
				t.Fatal(err)
			}
			if ok != tt.ok {
				t.Errorf("ok = %v, want %v", ok, tt.ok)
			}
			got := out.String()
			if !strings.HasSuffix(got, tt.counts) {
				t.Errorf("output does not close with\n%s", tt.counts)
			}
			for _, s := range tt.has {
				if !strings.Contains(got, s) {
					t.Errorf("output lacks %q", s)
				}
			}
			if strings.Contains(got, "passing tests' logs are not shown") || strings.Contains(got, "hidden") {
				t.Error("output shows a passing test's log")
			}
			golden := filepath.Join("testdata", tt.name+".golden")
			if *update {
				if err := os.WriteFile(golden, out.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if got != string(want) {
				t.Errorf("output differs from %s (go test -run TestSummarize -update rewrites it):\n%s", golden, got)
			}
		})
	}
}

// TestSummarizePassing: a green run exits 0, prints only the ok lines and
// still says what it skipped; lines that are not JSON (a tool's own
// messages) are copied through. No input at all is not a green run.
func TestSummarizePassing(t *testing.T) {
	in := `{"Action":"start","Package":"example.com/m/a"}
{"Action":"run","Package":"example.com/m/a","Test":"TestA"}
{"Action":"output","Package":"example.com/m/a","Test":"TestA","Output":"=== RUN   TestA\n"}
{"Action":"output","Package":"example.com/m/a","Test":"TestA","Output":"    a_test.go:9: needs /dev/kvm: open /dev/kvm: no such file or directory\n"}
{"Action":"output","Package":"example.com/m/a","Test":"TestA","Output":"--- SKIP: TestA (0.00s)\n"}
{"Action":"skip","Package":"example.com/m/a","Test":"TestA"}
{"Action":"run","Package":"example.com/m/a","Test":"TestB"}
{"Action":"output","Package":"example.com/m/a","Test":"TestB","Output":"--- PASS: TestB (0.00s)\n"}
{"Action":"pass","Package":"example.com/m/a","Test":"TestB"}
{"Action":"output","Package":"example.com/m/a","Output":"PASS\n"}
{"Action":"output","Package":"example.com/m/a","Output":"ok  \texample.com/m/a\t0.01s\n"}
{"Action":"pass","Package":"example.com/m/a"}
{"Action":"start","Package":"example.com/m/b"}
{"Action":"output","Package":"example.com/m/b","Output":"testing: warning: no tests to run\n"}
{"Action":"output","Package":"example.com/m/b","Output":"PASS\n"}
{"Action":"output","Package":"example.com/m/b","Output":"ok  \texample.com/m/b\t0.01s [no tests to run]\n"}
{"Action":"pass","Package":"example.com/m/b"}
not json
`
	var out bytes.Buffer
	ok, err := summarize(strings.NewReader(in), &out)
	if err != nil {
		t.Fatal(err)
	}
	want := "ok  \texample.com/m/a\t0.01s\nok  \texample.com/m/b\t0.01s [no tests to run]\nnot json\n\n1 passed, 0 failed, 1 skipped\n" +
		"skipped for want of: /dev/kvm 1, eBPF 0, QEMU 0; other reasons 0\n"
	if !ok || out.String() != want {
		t.Errorf("ok %v, output\n%s\nwant ok and\n%s", ok, out.String(), want)
	}
	ok, err = summarize(strings.NewReader(""), &out)
	if err != nil || ok {
		t.Errorf("empty input: ok %v, err %v; want not ok", ok, err)
	}
}

// TestSlowest: the summary lists the slowest top-level tests of 10 s or
// more, at most five, slowest first, failed ones too, and one the timeout
// stopped (from the panic's list of running tests), and no subtest.
func TestSlowest(t *testing.T) {
	var in strings.Builder
	for i, sec := range []float64{12, 3, 40, 11, 25, 90, 10, 14} {
		name := fmt.Sprintf("Test%d", i)
		action := "pass"
		if i == 5 {
			action = "fail"
		}
		fmt.Fprintf(&in, `{"Action":"run","Package":"example.com/m/a","Test":%q}`+"\n", name)
		fmt.Fprintf(&in, `{"Action":"run","Package":"example.com/m/a","Test":%q}`+"\n", name+"/sub")
		fmt.Fprintf(&in, `{"Action":"pass","Package":"example.com/m/a","Test":%q,"Elapsed":%g}`+"\n", name+"/sub", sec*2)
		fmt.Fprintf(&in, `{"Action":%q,"Package":"example.com/m/a","Test":%q,"Elapsed":%g}`+"\n", action, name, sec)
	}
	in.WriteString(`{"Action":"fail","Package":"example.com/m/a","Elapsed":200}` + "\n")
	var out bytes.Buffer
	if _, err := summarize(strings.NewReader(in.String()), &out); err != nil {
		t.Fatal(err)
	}
	want := "slowest tests: a.Test5 90 s, a.Test2 40 s, a.Test4 25 s, a.Test7 14 s, a.Test0 12 s\n"
	if !strings.Contains(out.String(), want) {
		t.Errorf("output\n%s\nlacks\n%s", out.String(), want)
	}
	// Under 10 s a test is not listed, however few there are.
	in.Reset()
	in.WriteString(`{"Action":"pass","Package":"example.com/m/a","Test":"TestShort","Elapsed":9.9}` + "\n")
	in.WriteString(`{"Action":"pass","Package":"example.com/m/a","Test":"TestLong","Elapsed":10}` + "\n")
	in.WriteString(`{"Action":"pass","Package":"example.com/m/a","Elapsed":20}` + "\n")
	out.Reset()
	if _, err := summarize(strings.NewReader(in.String()), &out); err != nil {
		t.Fatal(err)
	}
	if want := "slowest tests: a.TestLong 10 s\n"; !strings.Contains(out.String(), want) {
		t.Errorf("output\n%s\nlacks\n%s", out.String(), want)
	}
	// A test the timeout stopped has no event to time it by: the
	// panic's list of running tests gives how long it ran.
	in.Reset()
	in.WriteString(`{"Action":"pass","Package":"example.com/m/a","Test":"TestLong","Elapsed":30}` + "\n")
	in.WriteString(`{"Action":"run","Package":"example.com/m/a","Test":"TestHangs"}` + "\n")
	for _, line := range []string{"panic: test timed out after 20m0s\n", "\trunning tests:\n", "\t\tTestHangs (19m58s)\n",
		"\t\tTestHangs/case=1 (19m50s)\n", "\n", "goroutine 7 [running]:\n", "\t\tTestNot (1h0m0s)\n"} {
		fmt.Fprintf(&in, `{"Action":"output","Package":"example.com/m/a","Test":"TestHangs/case=1","Output":%q}`+"\n", line)
	}
	in.WriteString(`{"Action":"fail","Package":"example.com/m/a","Elapsed":1200}` + "\n")
	out.Reset()
	if _, err := summarize(strings.NewReader(in.String()), &out); err != nil {
		t.Fatal(err)
	}
	if want := "slowest tests: a.TestHangs (did not finish) 1198 s, a.TestLong 30 s\n"; !strings.Contains(out.String(), want) {
		t.Errorf("output\n%s\nlacks\n%s", out.String(), want)
	}
}
