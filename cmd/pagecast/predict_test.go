package main

import (
	"encoding/json"
	"fmt"
	"image/png"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pagecast/pagecast/predictor"
	"github.com/pagecast/pagecast/trace"
)

// predictCSV writes a CSV trace of a 16 MiB VM (4096 pages) whose first
// 256 pages are dirtied nine epochs in ten, and 50 random others each
// epoch.
func predictCSV(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "hot.csv")
	var b strings.Builder
	b.WriteString("epoch,page\n")
	rng := rand.New(rand.NewPCG(1, 2))
	for e := range 60 {
		seen := map[int]bool{}
		for p := range 256 {
			if rng.IntN(10) < 9 {
				seen[p] = true
			}
		}
		for range 50 {
			seen[256+rng.IntN(4096-256)] = true
		}
		for p := range 4096 {
			if seen[p] {
				fmt.Fprintf(&b, "%d,%d\n", e, p)
			}
		}
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestPredictEval(t *testing.T) {
	csv := predictCSV(t)
	plots := filepath.Join(t.TempDir(), "plots")
	stdout, stderr, err := runApp(t, "predict", "eval", "--memory", "16M", "--plots", plots, csv)
	if err != nil || stderr != "" {
		t.Fatalf("predict eval: %v %q", err, stderr)
	}
	t.Logf("\n%s", stdout)
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	if !strings.HasPrefix(lines[0], "hot.csv: 4096 pages (16.0 MiB), 60 epochs of 100ms; scored 52 epochs after a warm-up of 8") {
		t.Errorf("first line %q", lines[0])
	}
	header := strings.Fields(lines[1])
	if strings.Join(header, " ") != "predictor precision recall F1 Brier AUC ECE" {
		t.Errorf("header %q", lines[1])
	}
	for i, name := range []string{"model", "last-epoch", "frequency", "markov"} {
		if f := strings.Fields(lines[2+i]); len(f) != 7 || f[0] != name {
			t.Errorf("row %d: %q, want %s and 6 figures", i, lines[2+i], name)
		}
	}
	// The model beats last-epoch on F1 and Brier on a hot set, and the
	// best Brier is marked.
	figure := func(line string, col int) float64 {
		var v float64
		fmt.Sscan(strings.TrimSuffix(strings.Fields(line)[col], "*"), &v)
		return v
	}
	if figure(lines[2], 3) <= figure(lines[3], 3) || figure(lines[2], 4) >= figure(lines[3], 4) {
		t.Errorf("model %q does not beat last-epoch %q", lines[2], lines[3])
	}
	if !strings.HasSuffix(strings.Fields(lines[2])[4], "*") {
		t.Errorf("model row %q: best Brier not marked", lines[2])
	}
	for _, name := range []string{"calibration.png", "per-epoch.png"} {
		f, err := os.Open(filepath.Join(plots, name))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := png.Decode(f); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		f.Close()
	}

	// The same trace as a trace file, further ahead.
	pct := filepath.Join(t.TempDir(), "hot.pct")
	if _, _, err := runApp(t, "trace", "import", "--memory", "16M", "--epoch", "100ms", "-o", pct, csv); err != nil {
		t.Fatal(err)
	}
	stdout, _, err = runApp(t, "predict", "eval", "--horizon", "4", "--warmup", "0", "--threshold", "0.3", pct)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stdout, "scored 57 epochs after a warm-up of 0, the next 4 epochs, threshold 0.3") {
		t.Errorf("horizon 4 printed %q", stdout)
	}

	// --parts 3: epochs of three of the trace's, 60 of 100 ms in 20 of
	// 300 ms.
	stdout, _, err = runApp(t, "predict", "eval", "--parts", "3", "--warmup", "4", pct)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(stdout, "hot.pct: 4096 pages (16.0 MiB), 20 epochs of 300ms (3 of the trace's each, the model told in which a page was written); scored 16 epochs") {
		t.Errorf("--parts 3 printed %q", stdout)
	}
	for _, bad := range []string{"0", "65"} {
		if _, _, err := runApp(t, "predict", "eval", "--parts", bad, pct); err == nil || !strings.Contains(err.Error(), "--parts "+bad+": want 1 to 64") {
			t.Errorf("--parts %s: %v", bad, err)
		}
	}
}

// --horizon 1,2,4,8,16: a table per horizon, scored as far ahead as it
// says, then the model against the best baseline at each.
// TestPredictEvalKeptPages: on a huge guest, the kept-pages note and
// --json's kept-pages count the pages the trace dirtied apart from their
// neighbours, and the guest's pages add up (walk 129: a trace writing
// pages 1, 2 and 3 was said to have dirtied 20, the pages mapped).
func TestPredictEvalKeptPages(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, rows string
		dirtied    uint64
	}{
		{"pages 1-3", "0,1\n1,2\n2,3\n3,1\n4,2\n5,3\n", 3},
		{"page 100", "0,100\n1,100\n2,100\n3,100\n", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			csv := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "")+".csv")
			if err := os.WriteFile(csv, []byte(tc.rows), 0o644); err != nil {
				t.Fatal(err)
			}
			stdout, _, err := runApp(t, "predict", "eval", "--memory", "4P", "--warmup", "1", "--json", csv)
			if err != nil {
				t.Fatal(err)
			}
			var report struct {
				Pages uint64 `json:"pages"`
				Kept  struct {
					Kept         uint64 `json:"kept"`
					Dirtied      uint64 `json:"dirtied"`
					Neighbours   uint64 `json:"neighbours"`
					NeverDirtied uint64 `json:"never-dirtied"`
					Others       uint64 `json:"others"`
				} `json:"kept-pages"`
			}
			if err := json.Unmarshal([]byte(stdout), &report); err != nil {
				t.Fatal(err)
			}
			k := report.Kept
			if k.Dirtied != tc.dirtied {
				t.Errorf("kept-pages %+v: dirtied %d, want %d", k, k.Dirtied, tc.dirtied)
			}
			if k.Neighbours == 0 || k.NeverDirtied == 0 || k.Dirtied+k.Neighbours+k.NeverDirtied != k.Kept {
				t.Errorf("kept-pages %+v: kept is not dirtied, neighbours and never dirtied", k)
			}
			if k.Dirtied+k.Neighbours+k.Others != report.Pages {
				t.Errorf("kept-pages %+v: dirtied, neighbours and the others are not the guest's %d pages", k, report.Pages)
			}
			stdout, _, err = runApp(t, "predict", "eval", "--memory", "4P", "--warmup", "1", csv)
			want := fmt.Sprintf("predictors kept %d pages: the %d the trace dirtied, %d neighbours of them, and %d never dirtied: one stands for the guest's %d other pages, the rest keep it apart from those\n",
				k.Kept, k.Dirtied, k.Neighbours, k.NeverDirtied, k.Others)
			if err != nil || !strings.Contains(stdout, want) {
				t.Errorf("err %v, stdout:\n%s\nwant %q", err, stdout, want)
			}
		})
	}
}

// TestPredictEvalUndefined: a predictor that predicts no page dirty has
// no precision: n/a in the table, not starred, and null in JSON, where it
// showed 0.000, starred as the best where no other did better (walk 119).
func TestPredictEvalUndefined(t *testing.T) {
	var csv strings.Builder // every page written once: the baselines predict none again
	for e := range 40 {
		for p := e * 4; p < e*4+4; p++ {
			fmt.Fprintf(&csv, "%d,%d\n", e, p)
		}
	}
	path := filepath.Join(t.TempDir(), "once.csv")
	if err := os.WriteFile(path, []byte(csv.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	stdout, _, err := runApp(t, "predict", "eval", "--memory", "1M", path)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^ +markov +n/a +0\.000 `).MatchString(stdout) {
		t.Errorf("markov, which predicts no page dirty, has a precision:\n%s", stdout)
	}
	stdout, _, err = runApp(t, "predict", "eval", "--memory", "1M", "--json", path)
	if err != nil {
		t.Fatal(err)
	}
	var r struct {
		Horizons []struct {
			Predictors []struct {
				Name      string
				Precision *float64
			}
		}
	}
	if err := json.Unmarshal([]byte(stdout), &r); err != nil || len(r.Horizons) != 1 {
		t.Fatalf("%v: %s", err, stdout)
	}
	for _, p := range r.Horizons[0].Predictors {
		if undefined := p.Name == "markov" || p.Name == "frequency"; undefined != (p.Precision == nil) {
			t.Errorf("%s's precision in JSON: %v", p.Name, p.Precision)
		}
	}
	// Nothing dirtied after the warm-up: no recall, no F1 (walk 120:
	// 0.0000, starred for every predictor).
	csv.Reset()
	for e := range 40 {
		if e < 8 {
			fmt.Fprintf(&csv, "%d,%d\n", e, e)
		} else {
			fmt.Fprintf(&csv, "%d,\n", e)
		}
	}
	if err := os.WriteFile(path, []byte(csv.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	stdout, _, err = runApp(t, "predict", "eval", "--memory", "1M", path)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^ +model +\S+ +n/a +n/a `).MatchString(stdout) || strings.Contains(stdout, "0.0000*") {
		t.Errorf("no page dirtied: the model has a recall or an F1:\n%s", stdout)
	}
}

// TestPredictEvalAsServed: --as-served scores the model's probabilities
// as predict serve serves them, none moved across the threshold: on pages
// written at random, a quarter an epoch, which nothing foretells, the
// move takes them to 0.5 (ECE near 0.25) and served they stay calibrated
// (the README's figures had no recipe: a walk).
func TestPredictEvalAsServed(t *testing.T) {
	path := filepath.Join(t.TempDir(), "random.csv")
	var b strings.Builder
	b.WriteString("epoch,page\n")
	rng := rand.New(rand.NewPCG(3, 4))
	for e := range 80 {
		for p := range 4096 {
			if rng.IntN(4) == 0 {
				fmt.Fprintf(&b, "%d,%d\n", e, p)
			}
		}
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	score := func(args ...string) evalReport {
		t.Helper()
		js, stderr, err := runApp(t, append([]string{"predict", "eval", "--memory", "16M", "--json"}, append(args, path)...)...)
		var r evalReport
		if err != nil || stderr != "" || json.Unmarshal([]byte(js), &r) != nil || len(r.Horizons) != 1 || r.Horizons[0].Predictors[0].Name != "model" {
			t.Fatalf("predict eval %v: %v %q\n%s", args, err, stderr, js)
		}
		return r
	}
	moved, served := score(), score("--as-served")
	m, s := moved.Horizons[0].Predictors[0], served.Horizons[0].Predictors[0]
	t.Logf("moved: ECE %.4f Brier %.4f F1 %.4f; as served: ECE %.4f Brier %.4f F1 %.4f", m.ECE, m.Brier, *m.F1, s.ECE, s.Brier, *s.F1)
	if moved.AsServed || !served.AsServed {
		t.Errorf("as-served in --json: %v without the flag, %v with it", moved.AsServed, served.AsServed)
	}
	if !(s.ECE < 0.03 && m.ECE > 0.15 && s.Brier < m.Brier) {
		t.Errorf("as served: ECE %.4f, Brier %.4f; moved: ECE %.4f, Brier %.4f; want the served calibrated and the moved not", s.ECE, s.Brier, m.ECE, m.Brier)
	}
}

func TestPredictEvalHorizons(t *testing.T) {
	csv := predictCSV(t)
	stdout, stderr, err := runApp(t, "predict", "eval", "--memory", "16M", "--horizon", "1,2,4,8,16", csv)
	if err != nil || stderr != "" {
		t.Fatalf("predict eval: %v %q", err, stderr)
	}
	t.Logf("\n%s", stdout)
	if !strings.HasPrefix(stdout, "hot.csv: 4096 pages (16.0 MiB), 60 epochs of 100ms; warm-up of 8, threshold 0.5, horizons 1,2,4,8,16 epochs\n") {
		t.Errorf("first line of %q", stdout)
	}
	// Epochs whose horizon runs past the trace are not scored: 52-(h-1).
	for _, want := range []string{
		"dirtied within the next epoch (scored 52 epochs):",
		"dirtied within the next 2 epochs (scored 51 epochs):",
		"dirtied within the next 4 epochs (scored 49 epochs):",
		"dirtied within the next 8 epochs (scored 45 epochs):",
		"dirtied within the next 16 epochs (scored 37 epochs):",
		"model against the best baseline at each horizon:",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("no %q in the output", want)
		}
	}
	// The summary: one row per horizon, nine figures, the gain the
	// difference of the first two.
	summary := stdout[strings.Index(stdout, "model against the best baseline"):]
	rows := strings.Split(strings.TrimSpace(summary), "\n")
	if len(rows) != 1+1+5+1 {
		t.Fatalf("summary %q", summary)
	}
	for i, h := range []string{"1", "2", "4", "8", "16"} {
		f := strings.Fields(rows[2+i])
		if len(f) != 9 || f[0] != h {
			t.Fatalf("summary row %q, want horizon %s and 8 figures", rows[2+i], h)
		}
		var model, best, gain float64
		fmt.Sscan(f[1]+" "+f[2]+" "+f[3], &model, &best, &gain)
		if math.Abs(model-best-gain) > 2e-4 {
			t.Errorf("summary row %q: gain is not F1 model minus best baseline", rows[2+i])
		}
	}
	// --json: the same scores, for a script; the summary's figures are
	// the model's and the baselines'.
	js, stderr, err := runApp(t, "predict", "eval", "--memory", "16M", "--horizon", "1,2,4,8,16", "--json", csv)
	if err != nil || stderr != "" {
		t.Fatalf("predict eval --json: %v %q", err, stderr)
	}
	var r evalReport
	dec := json.NewDecoder(strings.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil || dec.More() {
		t.Fatalf("predict eval --json: %v\n%s", err, js)
	}
	if r.Pages != 4096 || r.Memory != 16<<20 || r.Epochs != 60 || r.Epoch != 0.1 || r.Warmup != 8 || r.Threshold != 0.5 || len(r.Horizons) != 5 {
		t.Fatalf("predict eval --json: %+v", r)
	}
	for i, hs := range r.Horizons {
		f := strings.Fields(rows[2+i])
		var model, best float64
		fmt.Sscan(f[1]+" "+f[2], &model, &best)
		var bestJSON float64
		for _, p := range hs.Predictors {
			if p.F1 == nil {
				t.Fatalf("horizon %d: %s's F1 is null on a trace that dirties pages", hs.Horizon, p.Name)
			}
		}
		brier := math.Inf(1)
		for _, p := range hs.Predictors[1:] {
			bestJSON = max(bestJSON, *p.F1)
			brier = min(brier, p.Brier)
		}
		// The margins, said for a script (walk 142 worked them out).
		if g, r := hs.Model.F1Gain, hs.Model.BrierRatio; g == nil || r == nil || math.Abs(*g-(*hs.Predictors[0].F1-bestJSON)) > 1e-9 ||
			math.Abs(*r-hs.Predictors[0].Brier/brier) > 1e-9 || hs.Model.F1By == "" || hs.Model.F1By == "model" || hs.Model.BrierBy == "" {
			t.Errorf("horizon %d: the model against the best baseline %+v, from the predictors' own figures %v", hs.Horizon, hs.Model, hs.Predictors)
		}
		if m := hs.Predictors[0]; m.Name != "model" || hs.Scored != 52-(hs.Horizon-1) || math.Abs(*m.F1-model) > 1e-4 || math.Abs(bestJSON-best) > 1e-4 ||
			m.TruePositives+m.FalseNegatives != m.Positives || len(hs.Predictors) < 4 || m.AUC == nil {
			t.Errorf("horizon %d in --json: %+v; the table's summary row %q", hs.Horizon, hs, rows[2+i])
		}
	}
	// Plots go per horizon (two horizons: encoding a PNG takes seconds
	// under the race detector).
	plots := filepath.Join(t.TempDir(), "plots")
	if _, stderr, err := runApp(t, "predict", "eval", "--memory", "16M", "--horizon", "1,16", "--plots", plots, csv); err != nil || stderr != "" {
		t.Fatalf("predict eval --plots: %v %q", err, stderr)
	}
	for _, name := range []string{"calibration-h1.png", "per-epoch-h16.png"} {
		if _, err := os.Stat(filepath.Join(plots, name)); err != nil {
			t.Error(err)
		}
	}
}

func TestPredictEvalErrors(t *testing.T) {
	csv := predictCSV(t)
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.pct")
	os.WriteFile(bad, []byte("not a trace at all"), 0o644)
	// 100 epochs 1000 indices apart: none has the next 3 beside it.
	gaps := filepath.Join(dir, "gaps.pct")
	var epochs []trace.Epoch
	for i := range uint64(100) {
		epochs = append(epochs, trace.Epoch{Index: 1 + 1000*i, Pages: []uint64{i % 256, (i + 7) % 256}})
	}
	writeTrace(t, gaps, trace.Meta{MemoryBytes: 1 << 20, PageSize: 4096, Epoch: 100 * time.Millisecond, Source: "test"}, epochs...)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{csv}, "is a CSV trace: give the guest memory size with --memory"},
		{[]string{"--memory", "4K", csv}, "beyond the 1 pages"},
		{[]string{"--memory", "16M", "--threshold", "1", csv}, "--threshold 1: want a probability between 0 and 1"},
		{[]string{"--memory", "16M", "--horizon", "0", csv}, `--horizon 0: "0": want 1 to 32 epochs`},
		{[]string{"--memory", "16M", "--horizon", "1,x", csv}, `--horizon 1,x: "x": want 1 to 32 epochs`},
		{[]string{"--memory", "16M", "--horizon", "1,33", csv}, `--horizon 1,33: "33": want 1 to 32 epochs`},
		{[]string{"--memory", "16M", "--horizon", "1,,2", csv}, `--horizon 1,,2: an empty item: want 1 to 32 epochs`},
		{[]string{"--memory", "16M", "--horizon", "4,1,4", csv}, "horizon 4 given twice"},
		{[]string{"--memory", "16M", "--warmup", "50", "--horizon", "1,16", csv}, "not enough to score after a warm-up of 50 at horizon 16"},
		{[]string{"--memory", "16M", "--warmup", "60", csv}, "not enough to score"},
		{[]string{"--memory", "16M", "--parts", "64", csv}, "epochs of 6.4s (--parts 64: 64 of the trace's each), not enough to score"},
		{[]string{"--memory", "16M", bad}, "--memory is for CSV traces"},
		// A table of zeros and a ratio of NaN (walk 53).
		{[]string{"--horizon", "1,4", gaps}, "no epoch can be scored at horizon 4"},
		{[]string{"--horizon", "4", gaps}, "no epoch can be scored at horizon 4"},
		{[]string{bad}, "not a pagecast trace"},
		{[]string{filepath.Join(dir, "missing.pct")}, "no such file"},
		{[]string{}, "want one trace argument"},
	} {
		_, _, err := runApp(t, append([]string{"predict", "eval"}, tc.args...)...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want %q", tc.args, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "\n") {
			t.Errorf("%v: error spans lines: %q", tc.args, err)
		}
		if err != nil && strings.HasPrefix(err.Error(), "pagecast ") { // main prints "pagecast: " before it
			t.Errorf("%v: error names the program: %q", tc.args, err)
		}
	}
}

// evalProgress says how many of their epochs the predictors have walked
// between them, every interval, and nothing once they are done: each call
// is one more, whichever predictor walked it.
func TestEvalProgress(t *testing.T) {
	var b strings.Builder
	progress := evalProgress(&b, 2, 0)
	for i := range 10 { // one predictor walks the trace, then the other
		progress(i+1, 10)
	}
	for i := range 10 {
		progress(i+1, 10)
	}
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 19 {
		t.Fatalf("%d lines for 20 steps, want 19 (none once done):\n%s", len(lines), b.String())
	}
	for i, l := range lines {
		want := fmt.Sprintf("predict eval: the 2 predictors have walked %d of their 2 × 10 epochs (%d%%) in ", i+1, 5*(i+1))
		if !strings.HasPrefix(l, want) {
			t.Errorf("line %d %q, want %q…", i, l, want)
		}
	}
}

// TestEvalProgressQuiet: on a quiet trace walked by predictors one at a
// time (as 4 are on 2 cores), the progress advances as the first one
// walks: it said 0% until the last had started, half the run or more
// (walk 129: 0% after 20 s of a 39 s walk).
func TestEvalProgressQuiet(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1)) // the walks one after another
	const pages, n = 1 << 16, 200
	epochs := make([]trace.Epoch, n)
	for i := range epochs {
		epochs[i].Index = uint64(i)
	}
	epochs[0].Pages = []uint64{1}
	contenders := predictor.Contenders(pages, predictor.Options{Horizon: 1})
	var b strings.Builder
	eo := predictor.EvalOptions{Horizon: 1, Progress: evalProgress(&b, len(contenders), 0)}
	predictor.Evaluate(epochs, pages, contenders, eo)
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) < n {
		t.Fatalf("%d progress lines for %d predictors of %d epochs", len(lines), len(contenders), n)
	}
	percent := regexp.MustCompile(`\((\d+)%\)`)
	previous := -1
	for i, l := range lines {
		m := percent.FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("line %d %q: no percentage", i, l)
		}
		p, _ := strconv.Atoi(m[1])
		if p < previous {
			t.Fatalf("line %d %q: back from %d%%", i, l, previous)
		}
		previous = p
		// Once the first predictor has walked every epoch, a quarter of
		// the work is done.
		if i == n-1 && p < 100/len(contenders) {
			t.Fatalf("line %d %q: under %d%% with one of %d walks done:\n%s", i, l, 100/len(contenders), len(contenders), strings.Join(lines[:n], "\n"))
		}
	}
}

// TestPredictEvalInterrupted: SIGTERM or SIGINT stops predict eval, which
// says so, fails and leaves no empty --plots directory it made (it went
// unhandled: exit 143, nothing said, the directory left; walk 59).
func TestPredictEvalInterrupted(t *testing.T) {
	for _, sig := range []os.Signal{syscall.SIGTERM, os.Interrupt} {
		plots := filepath.Join(t.TempDir(), "plots")
		cmd := exec.Command(binary, "predict", "eval", "--plots", plots, "--horizon", "1,2,4,8,16", filepath.Join("..", "..", "predictor", "testdata", "real", "node.pct"))
		var stdout, stderr strings.Builder
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		cmd.Process.Signal(sig)
		if exited, _ := waitExit(cmd, 10*time.Second); !exited {
			t.Fatalf("%v: predict eval ran on 10 s after it", sig)
		}
		if code := cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(stderr.String(), "interrupted: predict eval stopped before the end of the trace") || stdout.Len() != 0 {
			t.Errorf("%v: exit %d\nstdout %q\nstderr %q", sig, code, stdout.String(), stderr.String())
		}
		if _, err := os.Stat(plots); err == nil {
			t.Errorf("%v: the --plots directory it made is left", sig)
		}
	}
}

// TestPredictEvalUntold: --untold scores the same joined epochs with the
// model not told the parts, the "whole" column of docs/predictor.md's
// table (perl at horizon 1: F1 0.5415 told, 0.4954 whole); the baselines
// are scored alike either way.
func TestPredictEvalUntold(t *testing.T) {
	if testing.Short() {
		t.Skip("scores a real trace twice")
	}
	pct := filepath.Join("..", "..", "predictor", "testdata", "parts", "perl.pct")
	eval := func(args ...string) evalReport {
		t.Helper()
		out, _, err := runApp(t, append(append([]string{"predict", "eval", "--json", "--parts", "4"}, args...), pct)...)
		if err != nil {
			t.Fatal(err)
		}
		var r evalReport
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatal(err)
		}
		return r
	}
	told, untold := eval(), eval("--untold")
	if told.Untold || !untold.Untold {
		t.Errorf("untold said %v and %v, want false and true", told.Untold, untold.Untold)
	}
	f1 := func(r evalReport, name string) float64 {
		for _, p := range r.Horizons[0].Predictors {
			if p.Name == name && p.F1 != nil {
				return *p.F1
			}
		}
		t.Fatalf("no %s in %+v", name, r.Horizons[0])
		return 0
	}
	if got, want := math.Round(f1(told, "model")*1e4)/1e4, 0.5415; got != want {
		t.Errorf("F1 told %.4f, want %.4f", got, want)
	}
	if got, want := math.Round(f1(untold, "model")*1e4)/1e4, 0.4954; got != want {
		t.Errorf("F1 untold %.4f, want %.4f (the model shown the epochs whole)", got, want)
	}
	for _, b := range []string{"last-epoch", "frequency", "markov"} {
		if f1(told, b) != f1(untold, b) {
			t.Errorf("%s: F1 %v told, %v untold: a baseline is never told", b, f1(told, b), f1(untold, b))
		}
	}
	if _, _, err := runApp(t, "predict", "eval", "--untold", pct); err == nil || !strings.Contains(err.Error(), "--untold: with --parts N above 1 only") {
		t.Errorf("--untold without --parts: %v", err)
	}
}

// TestHorizonSummaryHugeRatio: a baseline all but perfect makes a Brier
// ratio of nine digits, printed in exponent form so the column keeps its
// width (walk 156: 239068846.854 on a guest writing all its memory).
func TestHorizonSummaryHugeRatio(t *testing.T) {
	var b strings.Builder
	writeHorizonSummary(&b, []int{1}, [][]predictor.Result{{
		{Name: "model", F1: 0.5, Brier: 0.004847, AUC: 0.9},
		{Name: "frequency", F1: 0.6, Brier: 2.0275e-11, AUC: 0.95},
	}})
	if !strings.Contains(b.String(), " 2.39e+08 ") || strings.Contains(b.String(), "239068") {
		t.Errorf("summary:\n%s\nwant the ratio as 2.39e+08", b.String())
	}
}
