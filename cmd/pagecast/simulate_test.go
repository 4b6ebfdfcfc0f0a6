package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pagecast/pagecast/migrator"
	"github.com/pagecast/pagecast/simulate"
	"github.com/pagecast/pagecast/trace"
)

const simTrace = "../../predictor/testdata/hotset.pct" // 16 MiB pagecast guest, 60 epochs of 250 ms

// TestSimulateCLI: every mode gets its row, the comparison with pre-copy
// its line, and --plot its picture; a trace shorter than the migration is
// replayed and the table says so.
func TestSimulateCLI(t *testing.T) {
	dir := t.TempDir()
	stdout, stderr, err := runApp(t, "simulate", "--trace", simTrace, "--bandwidth", "1MiB/s", "--mode", "all", "--plot", dir)
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	t.Log("\n" + stdout)
	for _, mode := range allModes {
		if !containsRow(stdout, mode) {
			t.Errorf("no row for %s", mode)
		}
		if !regexp.MustCompile(`(?m)^  ` + regexp.QuoteMeta(mode) + `: \S+ of migration in (\d+\.\d s|\d+ ms)$`).MatchString(stderr) {
			t.Errorf("no line for %s's end in %q", mode, stderr)
		}
	}
	if !regexp.MustCompile(`(?m)^ +mode +total +downtime +bytes +rounds +pages per round +deferred +throttle +pulled +guest slowed$`).MatchString(stdout) {
		t.Error("the table's header lacks a column")
	}
	if !regexp.MustCompile(`(?m)^ +against precopy +bytes +total +downtime$(\n +\S+( +\d+\.\d+×){3})*\n +predictive( +\d+\.\d+×){3}$`).MatchString(stdout) {
		t.Error("no comparison with pre-copy, or no row in it for predictive")
	}
	// 16 MiB at 1 MiB/s takes longer than the trace's 15 s.
	// (its first epoch, which trace info numbers 1).
	if !strings.Contains(stdout, "ended before the migration did and was replayed from epoch 1: precopy ") {
		t.Error("the table does not say the trace was replayed")
	}
	png, err := os.ReadFile(filepath.Join(dir, "timeline.png"))
	if err != nil || !bytes.HasPrefix(png, []byte("\x89PNG")) {
		t.Fatalf("timeline.png: %v", err)
	}

	stdout, _, err = runApp(t, "simulate", "--trace", simTrace, "--bandwidth", "64MiB/s", "--mode", "precopy,tsmc", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var out []simulation
	if err := json.Unmarshal([]byte(stdout), &out); err != nil {
		t.Fatalf("%v in %s", err, stdout)
	}
	if len(out) != 2 || out[0].Mode != "precopy" || out[1].Mode != "tsmc" || out[0].Info == nil ||
		out[0].Info.Status != migrator.StatusCompleted || out[0].Info.RAM.Total != 16<<20 || out[0].Replays != 0 {
		t.Fatalf("json: %s", stdout)
	}
	// What it ran on, to make the figures again.
	if in := out[0].Inputs; in == nil || in.Workload != "hotset.pct" || in.Start != 1 || in.Bandwidth != 64<<20 || in.DowntimeLimit != 300 ||
		in.MaxRounds != migrator.DefaultMaxRounds || in.ThrottleResponse != "linear" || in.Version == "" || out[1].Inputs == nil {
		t.Errorf("json: inputs %+v", in)
	}
	// Every input, those at their defaults too, and written-content as
	// --written-content takes it (walk 129: three were left out).
	for _, key := range []string{`"written-content": "repeat=0.1,text=0.7,random=0.2"`, `"page-rate": 0,`, `"paused-page-rate": 0,`} {
		if !strings.Contains(stdout, key) {
			t.Errorf("json lacks %s: %s", key, stdout)
		}
	}
	if x := out[1].Info.Pagecast; x == nil || x.VCPUs != 1 || (out[1].Info.RAM.PostcopyRequests > 0) != (x.FaultTime > 0) {
		t.Errorf("json: tsmc's x-pagecast %+v: want vcpus 1, and a fault-time where pages were pulled (%d)", x, out[1].Info.RAM.PostcopyRequests)
	}
}

// TestSimulateShortRounds: where the rounds after the first are shorter
// than the workload's epochs, which makes them meet too little of its
// dirtying, the table says so; where they are not, it does not.
func TestSimulateShortRounds(t *testing.T) {
	const note = "pre-copy rounds shorter than the workload's"
	for _, tc := range []struct {
		epoch string
		warn  bool
	}{{"1s", true}, {"50ms", false}} {
		stdout, _, err := runApp(t, "simulate", "--synthetic", "hotset:hot=2048,p=0.95,rate=8000", "--memory", "64M",
			"--epoch", tc.epoch, "--bandwidth", "32MiB/s", "--mode", "precopy")
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Contains(stdout, note+" "+tc.epoch+" epochs (precopy "); got != tc.warn {
			t.Errorf("--epoch %s: the note is there: %v, want %v:\n%s", tc.epoch, got, tc.warn, stdout)
		}
		if tc.warn && !strings.Contains(stdout, "(pagecast profile --epoch 250ms)") {
			t.Errorf("--epoch %s: the note does not suggest a quarter of the epoch:\n%s", tc.epoch, stdout)
		}
	}
}

// TestSimulateUnconverged: the table says which modes the round cap
// stopped and whose downtime passed the limit; where none did, nothing.
func TestSimulateUnconverged(t *testing.T) {
	for _, tc := range []struct {
		bandwidth string
		want      bool
	}{{"4MiB/s", true}, {"1GiB/s", false}} {
		stdout, _, err := runApp(t, "simulate", "--synthetic", "hotset:hot=2048,p=0.95,rate=8000", "--memory", "64M",
			"--bandwidth", tc.bandwidth, "--mode", "precopy,tsmc")
		if err != nil {
			t.Fatal(err)
		}
		capped := strings.Contains(stdout, "did not converge: precopy (the round cap")
		over := regexp.MustCompile(`over the 300ms downtime limit: precopy [0-9.]+m?s\n`).MatchString(stdout)
		if capped != tc.want || over != tc.want || strings.Contains(stdout, "tsmc (") {
			t.Errorf("--bandwidth %s: said did not converge %v, over the limit %v, want %v (tsmc, which goes on in post-copy, never):\n%s",
				tc.bandwidth, capped, over, tc.want, stdout)
		}
	}
}

func TestRatioString(t *testing.T) {
	for x, want := range map[float64]string{1: "1.00×", 0.5: "0.50×", 0.1: "0.10×", 0.097: "0.10×", 0.0697: "0.07×", 0.00697: "0.007×",
		3.1e-5: "0.00003×", 5e-7: "<0.000001×", 0: "0.00×"} {
		if got := ratioString(x); got != want {
			t.Errorf("ratioString(%v) = %q, want %q", x, got, want)
		}
	}
}

// TestSimulateContentAssumed: the header says when the content mix is
// --content's default, which a trace does not record.
func TestSimulateContentAssumed(t *testing.T) {
	const note = "(--content's default: a trace does not record it; pagecast profile prints a guest's)"
	for _, content := range []string{"", "zero=0.2,repeat=0.1,text=0.3,random=0.4"} {
		args := []string{"simulate", "--trace", simTrace, "--mode", "precopy"}
		if content != "" {
			args = append(args, "--content", content)
		}
		stdout, _, err := runApp(t, args...)
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Contains(stdout, note); got != (content == "") {
			t.Errorf("--content %q: the header says it is the default: %v\n%s", content, got, stdout)
		}
	}
}

// containsRow reports whether the table has a row starting with mode.
func containsRow(table, mode string) bool {
	for line := range strings.SplitSeq(table, "\n") {
		if f := strings.Fields(line); len(f) > 2 && f[0] == mode {
			return true
		}
	}
	return false
}

// TestSimulateInputs: CSV traces and synthetic workloads run; bad ones and
// impossible parameters get one line each.
func TestSimulateInputs(t *testing.T) {
	dir := t.TempDir()
	csv := filepath.Join(dir, "t.csv")
	if err := os.WriteFile(csv, []byte("epoch,page\n0,1\n0,2\n1,2\n2,3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	corrupt := filepath.Join(dir, "bad.pct")
	if err := os.WriteFile(corrupt, []byte("PCTRACE\x00 not a trace at all"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string // in stdout if ok, else in the error
		ok   bool
	}{
		{[]string{"--trace", csv, "--memory", "64M", "--mode", "precopy"}, "t.csv: 64.0 MiB guest", true},
		{[]string{"--trace", csv, "--memory", "64M", "--epoch", "10ms", "--mode", "precopy"}, "epochs of 10ms, ", true},
		{[]string{"--synthetic", "hotset:hot=1G,rate=100k", "--memory", "64G", "--bandwidth", "10Gbit/s", "--mode", "precopy,throttle"}, "hotset:hot=1G,rate=100k: 64.00 GiB guest, 1.16 GiB/s link", true},
		{[]string{"--trace", simTrace, "--bandwidth", "0"}, "--bandwidth 0: a migration needs a link that moves bytes", false},
		{[]string{"--trace", simTrace, "--bandwidth", "0MiB/s"}, "a migration needs a link that moves bytes", false},
		{[]string{"--trace", simTrace, "--bandwidth", "1e30"}, `--bandwidth: rate "1e30" is too large: the most taken is 9223372036854775807 bytes a second`, false},
		{[]string{"--trace", simTrace, "--bandwidth", "18446744073709551615"}, "is too large", false},
		{[]string{"--trace", simTrace, "--downtime-limit", "1us"}, "less than one 4096-byte page, so no migration can meet it", false},
		// --start numbers a trace's epochs as trace info does: from 1 to 60 here.
		{[]string{"--trace", simTrace, "--start", "61"}, "--start 61: the workload's epochs run from 1 to 60", false},
		{[]string{"--trace", simTrace, "--start", "0"}, "--start 0: the workload's epochs run from 1 to 60", false},
		{[]string{"--trace", simTrace, "--start", "60", "--mode", "precopy"}, "from epoch 60 on", true},
		{[]string{"--trace", simTrace, "--mode", "precopy,warp"}, `--mode: migration mode "warp": want precopy, predictive, throttle, tsmc or mecom, then optionally +tsmc (after predictive), +mecom, +postcopy (after precopy, predictive or mecom); or all, or auto`, false},
		{[]string{"--trace", simTrace, "--mode", "auto,precopy"}, `--mode "auto,precopy": auto stands alone, not in a list of modes`, false},
		{[]string{"--trace", simTrace, "--content", "zero=1,blue=1"}, "unknown class", false},
		{[]string{"--trace", simTrace, "--content", "zero=0.5"}, `--content "zero=0.5": the shares sum to 0.5; give every class's share, summing to 1`, false},
		{[]string{"--trace", simTrace, "--mode", "precopy", "--judge"}, "--judge is for --mode auto", false},
		{[]string{"--trace", simTrace, "--mode", "auto", "--plot", "x"}, "--plot is for a run of given modes, not --mode auto", false},
		{[]string{"--trace", simTrace, "--switchover", "-1s"}, "--switchover -1s: want 0 or more", false},
		{[]string{"--trace", simTrace, "--switchover", "1h"}, "--switchover 1h0m0s: the switch-over's fixed cost alone is the downtime limit of 300ms or more", false},
		{[]string{"--trace", simTrace, "--max-rounds", "0"}, "--max-rounds 0: want at least 1 (a simulation needs a round cap", false},
		{[]string{"--trace", simTrace, "--max-rounds", "10001"}, "--max-rounds 10001: want at most 10000", false},
		{[]string{"--trace", simTrace, "--paused-page-rate", "20k"}, "--paused-page-rate is --page-rate while the guest is paused: give --page-rate too", false},
		{[]string{"--trace", simTrace, "--page-rate", "10k", "--paused-page-rate", "fast"}, `--paused-page-rate "fast"`, false},
		{[]string{"--trace", simTrace, "--page-rate", "100k", "--paused-page-rate", "10k"}, "--paused-page-rate 10k: below --page-rate 100k", false},
		{[]string{"--trace", simTrace, "--mode", "precopy", "--page-rate", "10k"}, "the engine, at --page-rate 10k pages a second (39.1 MiB/s, slower than the link), moves", true},
		{[]string{"--trace", simTrace, "--bandwidth", "8MiB/s", "--state-size", "10M"}, "the state alone takes 1.25s at 8.0 MiB/s (with --switchover 0s), more than the downtime limit of 300ms", false},
		{[]string{"--trace", simTrace, "--plot", "/proc/none/x"}, "--plot: mkdir /proc/none", false},
		{[]string{"--trace", simTrace, "--checksum-rate", "fast"}, `--checksum-rate "fast": want a rate of 1MiB/s or more, such as 2GiB/s, or 0`, false},
		{[]string{"--trace", simTrace, "--checksum-rate", "1"}, `--checksum-rate "1": want a rate of 1MiB/s or more`, false},
		{[]string{"--synthetic", "uniform:rate=1", "--memory", "64M", "--epoch", "4h"}, `--epoch "4h": want a positive duration up to 1h0m0s`, false},
		{[]string{"--trace", simTrace, "--checksum-rate", "0", "--mode", "precopy"}, "precopy", true},
		{[]string{"--synthetic", "hotset", "--memory", "256M", "--checksum-rate", "16MiB/s", "--mode", "precopy"}, "total includes the memory check after the switch-over, the paused source reading the memory its guest holds at --checksum-rate (0 leaves it out) while the guest runs on the destination: precopy ", true},
		{[]string{"--trace", simTrace, "--page-rate", "fast"}, `--page-rate "fast": want pages per second`, false},
		{[]string{"--trace", simTrace, "--page-rate", "1"}, "--page-rate 1: the state alone takes 1m15s at 1 pages a second", false},
		// Below a page a second the state's time overflowed, and the
		// rate was taken as no bound.
		{[]string{"--trace", simTrace, "--page-rate", "1e-9"}, `--page-rate "1e-9": want at least 1 page a second`, false},
		{[]string{"--trace", simTrace, "--vcpus", "0"}, "--vcpus 0: want 1 to 4096", false},
		{[]string{"--trace", simTrace, "--downtime-limit", "300"}, "--downtime-limit 300: a duration needs a unit, e.g. 300ms or 300s", false},
		{[]string{"--trace", simTrace, "--downtime-limit", "0.5"}, "--downtime-limit 0.5: a duration needs a unit, e.g. 0.5ms or 0.5s", false},
		{[]string{"--synthetic", "hotset:seed=-1", "--memory", "64M"}, "synthetic workload hotset: seed=-1: want a whole number, 0 or more", false}, // walk 134: strconv's words
		{[]string{"--synthetic", "hotset:seed=99999999999999999999", "--memory", "64M"}, "synthetic workload hotset: seed=99999999999999999999: at most 18446744073709551615", false},
		{[]string{"--trace", simTrace, "--max-rounds", "99999999999999999999"}, "--max-rounds 99999999999999999999: out of range of a number here (see pagecast simulate --help)", false}, // walk 134: Go's "for flag -max-rounds: value out of range"
		{[]string{"--trace", simTrace, "--switchover", "soon"}, "--switchover soon: want a duration such as 500ms, 2s or 1m30s", false},
		{[]string{"--trace", simTrace, "--switchover", "9999999999999h"}, "--switchover 9999999999999h: out of range of a duration (at most 2562047h, about 292 years; see pagecast simulate --help)", false}, // walk 136
		{[]string{"--trace", simTrace, "--switchover", "1h2x"}, "--switchover 1h2x: want a duration such as 500ms, 2s or 1m30s", false},
		{[]string{"--trace", simTrace, "--switchover", "h"}, "--switchover h: want a duration such as 500ms, 2s or 1m30s", false},
		{[]string{"--trace", simTrace, "--start", "-5"}, "--start -5: want a whole number, 0 or more", false},
		{[]string{"--trace", simTrace, "--max-rounds", "many"}, "--max-rounds many: want a whole number", false},
		// Refused before it allocates, not killed by the runtime midway.
		{[]string{"--synthetic", "hotset", "--memory", "4096T", "--mode", "precopy"}, "precopy on a guest of 4.00 PiB needs about 2.50 TiB of memory to simulate", false},
		{[]string{"--trace", simTrace, "--vcpus", "4", "--mode", "tsmc"}, "guest slowed", true},
		{[]string{"--trace", simTrace, "--page-rate", "40k", "--policy-time", "--mode", "predictive"}, "predictive", true},
		{[]string{"--trace", corrupt}, "bad.pct", false},
		{[]string{"--trace", csv}, "is a CSV trace: give the guest's size with --memory", false},
		{[]string{"--synthetic", "hotset"}, "--synthetic needs --memory", false},
		{[]string{"--synthetic", "hotset:hot=8G", "--memory", "1G"}, "hot set of 2097152 pages in a guest of 262144", false},
		{[]string{}, "no workload: give --trace FILE or --synthetic SPEC", false},
		{[]string{"--trace", simTrace, "--memory", "1G"}, "--memory and --epoch are for CSV traces", false},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			stdout, _, err := runApp(t, append([]string{"simulate"}, tc.args...)...)
			if tc.ok {
				if err != nil || !strings.Contains(stdout, tc.want) {
					t.Fatalf("err %v, stdout %s", err, stdout)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("err %v, want one line with %q", err, tc.want)
			}
		})
	}
}

// TestSimulateRefusedForMemory: where no mode asked can be simulated in
// the memory here, simulate says so in one line and prints nothing on
// stdout, with --json or not (walk 104: an empty table, and JSON of the
// error alone). Where some mode can, it runs and the other is listed as
// failed.
func TestSimulateRefusedForMemory(t *testing.T) {
	for _, extra := range [][]string{nil, {"--json"}} {
		args := append([]string{"simulate", "--synthetic", "hotset", "--memory", "4096T", "--mode", "predictive,precopy"}, extra...)
		stdout, _, err := runApp(t, args...)
		if err == nil || stdout != "" || strings.Contains(err.Error(), "\n") ||
			!strings.Contains(err.Error(), "precopy on a guest of 4.00 PiB needs about 2.50 TiB of memory to simulate") ||
			!strings.Contains(err.Error(), "the other modes asked (predictive) need as much or more") {
			t.Errorf("%v: err %v, stdout %q", extra, err, stdout)
		}
	}
}

// TestSimulateAuto: auto predicts every mode from the epochs before the
// start, says what it chose and why, and prints prediction against
// outcome.
func TestSimulateAuto(t *testing.T) {
	stdout, stderr, err := runApp(t, "simulate", "--trace", simTrace, "--bandwidth", "4MiB/s", "--mode", "auto", "--observe", "20", "--judge")
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	t.Log("\n" + stdout)
	// Its epochs named as trace info does: hotset.pct's run from 1.
	for _, want := range []string{"predicted from hotset.pct epochs 1-20:", "auto chose ", "outcome, on the workload from epoch 21:",
		"predicted against outcome: total time ", "in hindsight, every mode on the workload from epoch 21:"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("no %q", want)
		}
	}
	for _, mode := range allModes {
		if !containsRow(stdout, mode) {
			t.Errorf("no prediction for %s", mode)
		}
	}
	if !strings.Contains(stdout, "auto chose the best mode by total time") && !strings.Contains(stdout, "% over the best by total time, ") &&
		!strings.Contains(stdout, "auto's choice broke the ") {
		t.Error("no verdict in hindsight")
	}
	// A synthetic workload too is observed before the start, not over
	// the epochs the migration then runs through.
	stdout, stderr, err = runApp(t, "simulate", "--synthetic", "hotset:hot=256,rate=2k", "--memory", "64M", "--bandwidth", "16MiB/s", "--mode", "auto", "--observe", "10")
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	if !strings.Contains(stdout, "predicted from hotset:hot=256,rate=2k epochs 0-9:") || !strings.Contains(stdout, "outcome, on the workload from epoch 10:") {
		t.Errorf("synthetic auto did not start after what it observed:\n%s", stdout)
	}
	// A sweep's replays go on from where the watch left it, and its
	// prediction comes true.
	stdout, stderr, err = runApp(t, "simulate", "--synthetic", "sweep:rate=6000", "--memory", "64M", "--bandwidth", "12MiB/s", "--mode", "auto", "--observe", "20")
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	if !strings.Contains(stdout, "  on each replay, the 12000 pages it wrote only once in the watch went on 12000 pages further up memory than on the one before: they move as one front") {
		t.Errorf("no sweep going on:\n%s", stdout)
	}
	// Within 1% (-0.5% here: 3.014 s against 3.03 s, once stage 1 named
	// the pages for stage 3; 21% short when the laps were drawn apart).
	if m := regexp.MustCompile(`total time \S+ against \S+ \(([-+]?\d+)%\)`).FindStringSubmatch(stdout); m == nil || m[1] != "0" && m[1] != "-1" && m[1] != "+1" {
		t.Errorf("the sweep's total time, predicted against outcome: %q, want within 1%%", m)
	}
	// query-migrate's shape of the outcome reports the choice and every
	// prediction; --judge adds every mode's outcome and how far the choice
	// was from the best.
	stdout, stderr, err = runApp(t, "simulate", "--trace", simTrace, "--bandwidth", "4MiB/s", "--mode", "auto", "--observe", "20", "--json", "--judge")
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	type outcome struct {
		Mode         string
		Info         *migrator.Info `json:"query-migrate"`
		StoppedShort bool           `json:"stopped-short"` // a bool, as in query-migrate's x-pagecast.auto
		TotalTime    int64          `json:"total-time"`    // ms simulated when stopped, as there
		Transferred  uint64
		Why          string
	}
	var out struct {
		Mode      string
		Outcome   migrator.Info
		Hindsight struct {
			Best     string
			Regret   *float64
			Outcomes []outcome
		}
	}
	if err := json.Unmarshal([]byte(stdout), &out); err != nil {
		t.Fatal(err)
	}
	h := out.Hindsight
	if len(h.Outcomes) != len(allModes) {
		t.Fatalf("hindsight has %d outcomes, want one per mode (%d)", len(h.Outcomes), len(allModes))
	}
	// A mode whose simulation stopped once it could no longer be the best
	// says so, and has no outcome.
	byMode := map[string]*migrator.Info{}
	for _, o := range h.Outcomes {
		switch {
		case o.Info != nil:
			byMode[o.Mode] = o.Info
		case !o.StoppedShort || !strings.Contains(o.Why, "could no longer be the best"):
			t.Errorf("hindsight's %s has neither an outcome nor a reason", o.Mode)
		case o.TotalTime <= 0 || o.Transferred == 0:
			t.Errorf("hindsight's %s stopped short without where: %d ms, %d bytes", o.Mode, o.TotalTime, o.Transferred)
		}
	}
	best, chosen := byMode[h.Best], byMode[out.Mode]
	if best == nil || chosen == nil {
		t.Fatalf("hindsight's best %q or the chosen %q has no outcome", h.Best, out.Mode)
	}
	if chosen.TotalTime != out.Outcome.TotalTime || chosen.RAM.Transferred != out.Outcome.RAM.Transferred {
		t.Errorf("the chosen mode's outcome in hindsight (%d ms, %d bytes) is not the outcome reported (%d ms, %d bytes)",
			chosen.TotalTime, chosen.RAM.Transferred, out.Outcome.TotalTime, out.Outcome.RAM.Transferred)
	}
	for mode, i := range byMode {
		if i.Downtime <= 300 && i.TotalTime < best.TotalTime && best.Downtime <= 300 {
			t.Errorf("%s took %d ms within the downtime limit, less than hindsight's best %s (%d ms)", mode, i.TotalTime, h.Best, best.TotalTime)
		}
	}
	if want := float64(chosen.TotalTime)/float64(best.TotalTime) - 1; h.Regret == nil || math.Abs(*h.Regret-want) > 1e-9 {
		t.Errorf("regret %v, want %.4f (%d ms chosen against %d ms best)", h.Regret, want, chosen.TotalTime, best.TotalTime)
	}
	if a := out.Outcome.Pagecast.Auto; a == nil || a.Mode != out.Mode || len(a.Predictions) != len(allModes) || a.Why == "" {
		t.Errorf("the outcome's query-migrate reports auto as %+v, chosen %s", a, out.Mode)
	} else if p, ok := a.Predicted(); !ok || p.TotalTime <= 0 || p.Transferred == 0 {
		t.Errorf("the chosen mode's prediction: %+v", p)
	}
	if _, _, err := runApp(t, "simulate", "--trace", simTrace, "--mode", "auto", "--observe", "60"); err == nil || !strings.Contains(err.Error(), "only 60 epochs") ||
		!strings.Contains(err.Error(), "give --observe fewer (--observe 30 leaves half to migrate), or --start an epoch") {
		t.Errorf("observing the whole trace: %v, want how to do with it", err)
	}
	// Not asked for: a trace of no more epochs than the default observes
	// (the README's 5 s profile: 50) is observed half (walk 99: refused).
	short := filepath.Join(t.TempDir(), "short.csv")
	var csv strings.Builder
	csv.WriteString("epoch,page\n")
	for e := range 40 {
		for p := range 64 {
			fmt.Fprintf(&csv, "%d,%d\n", e, (e*7+p)%512)
		}
	}
	if err := os.WriteFile(short, []byte(csv.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, stderr, err := runApp(t, "simulate", "--trace", short, "--memory", "2M", "--mode", "auto", "--bandwidth", "64MiB/s"); err != nil ||
		!strings.Contains(stderr, "auto: the workload has only 40 epochs, not more than --observe's default 50: observing the first half") ||
		!strings.Contains(stderr, "auto: observing epochs 0-19, migrating from epoch 20") {
		t.Errorf("auto on a 40-epoch trace: %v\n%s", err, stderr)
	}
	// --start at the first epoch is not taken for none (review 100: it
	// migrated from epoch 20); one epoch cannot be observed and migrated.
	if _, _, err := runApp(t, "simulate", "--trace", short, "--memory", "2M", "--mode", "auto", "--start", "0"); err == nil ||
		!strings.Contains(err.Error(), "--start 0 is the workload's first epoch: auto predicts from the epochs before the start") {
		t.Errorf("auto --start 0: %v", err)
	}
	one := filepath.Join(t.TempDir(), "one.csv")
	if err := os.WriteFile(one, []byte("epoch,page\n0,1\n0,2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := runApp(t, "simulate", "--trace", one, "--memory", "2M", "--mode", "auto"); err == nil || !strings.Contains(err.Error(), "the workload has one epoch") {
		t.Errorf("auto on one epoch: %v", err)
	}
	// Under 1 is refused alike: -3 was called "not 0 or more", and 0
	// was then refused too.
	for _, n := range []string{"0", "-3"} {
		if _, _, err := runApp(t, "simulate", "--trace", simTrace, "--mode", "auto", "--observe", n); err == nil ||
			err.Error() != "--observe "+n+": auto needs at least one epoch observed" {
			t.Errorf("--observe %s: %v", n, err)
		}
	}
}

// watchSims says each mode's result as it ends and, every interval, the
// round, the simulated time, what is left and the pace of those running.
func TestSimProgress(t *testing.T) {
	var b strings.Builder
	now := time.Unix(0, 0)
	clock := func() time.Time { now = now.Add(time.Second); return now }
	var o simulate.Options
	settled := watchSimsClock(&o, &b, "  ", 0, clock)
	o.Progress("precopy", simulate.Point{At: 1500 * time.Millisecond, Round: 1, Remaining: 3 << 30})
	o.Progress("predictive", simulate.Point{At: 500 * time.Millisecond, Round: 1})
	o.Done(simulate.Result{Mode: "precopy", Info: migrator.Info{TotalTime: 2500}, Wall: 3 * time.Second})
	o.Progress("predictive", simulate.Point{At: 3 * time.Second, Round: 2})
	o.Done(simulate.Result{Mode: "predictive", Err: errors.New("no link")})
	want := `  … precopy round 1 at 1.5s, 3.00 GiB left
  … precopy round 1 at 1.5s, 3.00 GiB left (0× real time); predictive round 1 at 500ms
  precopy: 2.500s of migration in 3.0 s
  … predictive round 2 at 3s (2.5× real time)
  predictive failed: no link
`
	if got := b.String(); got != want {
		t.Errorf("%q, want %q", got, want)
	}
	// Auto's cuts, settled once all have ended, cut precopy, said to
	// have ended: that is said too (the tables would otherwise show it
	// cut without a word), once.
	b.Reset()
	cut := simulate.Result{Mode: "precopy", Err: &simulate.CutShort{At: 1200 * time.Millisecond, By: "mecom", Prefer: simulate.PreferTime, Best: 900}}
	settled([]simulate.Result{cut, {Mode: "predictive", Err: errors.New("no link")}})
	settled([]simulate.Result{cut})
	if want := "  precopy: counted as stopped after 1.2s of migration, past mecom's 900ms (where a mode is stopped does not depend on the order the modes end in)\n"; b.String() != want {
		t.Errorf("settled: %q, want %q", b.String(), want)
	}
	// A mode said cut short at one point and counted at another is said
	// again (walk 67: "stopped after 4.347s", then ">877ms"); one counted
	// where it was said is not.
	b.Reset()
	early := &simulate.CutShort{At: 877 * time.Millisecond, By: "mecom", Prefer: simulate.PreferTime, Best: 800}
	late := &simulate.CutShort{At: 4347 * time.Millisecond, By: "throttle", Prefer: simulate.PreferTime, Best: 4029}
	o.Done(simulate.Result{Mode: "precopy", Err: late})
	o.Done(simulate.Result{Mode: "tsmc", Err: early})
	b.Reset()
	settled([]simulate.Result{{Mode: "precopy", Err: early}, {Mode: "tsmc", Err: early}})
	if want := "  precopy: counted as stopped " + early.Where() + " (where a mode is stopped does not depend on the order the modes end in)\n"; b.String() != want {
		t.Errorf("settled after a cut said elsewhere: %q, want %q", b.String(), want)
	}
	if got := pace(412.4); got != "412" {
		t.Errorf("pace 412.4: %q", got)
	}
	b.Reset()
	watchSims(&o, &b, "", time.Hour)
	o.Progress("precopy", simulate.Point{At: time.Second, Round: 1})
	if b.Len() != 0 {
		t.Errorf("%q within the interval", b.String())
	}
}

// TestSlowModesNote: a large guest's predictive modes are said to take
// long before they start, with the modes that do not.
func TestSlowModesNote(t *testing.T) {
	if n := slowModesNote(1<<28, []string{"precopy", "predictive", "predictive+mecom", "tsmc"}); !strings.Contains(n, "the predictive modes (predictive, predictive+mecom) model every page of this 1.00 TiB guest") ||
		!strings.Contains(n, "(--mode precopy,tsmc)") {
		t.Errorf("note %q", n)
	}
	for _, tc := range []struct {
		pages uint64
		modes []string
	}{{1 << 24, []string{"predictive"}}, {1 << 28, []string{"precopy", "tsmc"}}} {
		if n := slowModesNote(tc.pages, tc.modes); n != "" {
			t.Errorf("%d pages, %v: note %q", tc.pages, tc.modes, n)
		}
	}
}

// TestSimulateWrittenContent: --written-content sets what written pages
// hold (a guest writing zeros, as dd if=/dev/zero does, was simulated as
// writing data: 3 to 5 times the bytes and time a live migration took).
func TestSimulateWrittenContent(t *testing.T) {
	bytes := func(extra ...string) float64 {
		t.Helper()
		args := append([]string{"simulate", "--trace", simTrace, "--bandwidth", "16MiB/s", "--mode", "precopy", "--json"}, extra...)
		stdout, stderr, err := runApp(t, args...)
		if err != nil {
			t.Fatalf("%v: %v\n%s", args, err, stderr)
		}
		var out []struct {
			Info migrator.Info `json:"query-migrate"`
		}
		if err := json.Unmarshal([]byte(stdout), &out); err != nil || len(out) != 1 || out[0].Info.RAM == nil {
			t.Fatalf("%v: %v\n%s", args, err, stdout)
		}
		return float64(out[0].Info.RAM.Transferred)
	}
	data, zeros := bytes(), bytes("--written-content", "zero=0.9,text=0.1")
	t.Logf("written pages as --content's data: %.1f MiB; 90%% zero: %.1f MiB", data/(1<<20), zeros/(1<<20))
	// Round 1 sends every page as --content has it either way; the
	// rounds after, the pages written: 0.79 of the bytes when written.
	if zeros > 0.85*data {
		t.Errorf("written pages 90%% zero sent %.0f bytes, against %.0f as data: want fewer", zeros, data)
	}
	for _, bad := range []string{"zero=0.5", "zero=x", "purple=1"} {
		if _, _, err := runApp(t, "simulate", "--trace", simTrace, "--bandwidth", "16MiB/s", "--mode", "precopy", "--written-content", bad); err == nil || !strings.Contains(err.Error(), "--written-content") {
			t.Errorf("--written-content %s: %v, want an error naming the flag", bad, err)
		}
	}
	// The table's heading says what written pages hold where it is not
	// the content's data classes (walk 157: zero=1 said nothing).
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--content", "zero=1"}, "content zero=1, written pages text=1\n"},
		{[]string{"--written-content", "zero=0.9,text=0.1"}, "(--content's default: a trace does not record it; pagecast profile prints a guest's), written pages zero=0.9,text=0.1\n"},
		{nil, "(--content's default: a trace does not record it; pagecast profile prints a guest's)\n"},
	} {
		args := append([]string{"simulate", "--trace", simTrace, "--bandwidth", "16MiB/s", "--mode", "precopy"}, tc.args...)
		stdout, _, err := runApp(t, args...)
		if first, _, _ := strings.Cut(stdout, "\n"); err != nil || !strings.HasSuffix(first+"\n", tc.want) {
			t.Errorf("%v: %v, heading %q, want it to end %q", tc.args, err, first, tc.want)
		}
	}
}

// TestWallTime: a simulation that takes milliseconds says so, not "in 0.0 s".
func TestWallTime(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0:                       "1 ms",
		12 * time.Millisecond:   "12 ms",
		999 * time.Millisecond:  "999 ms",
		time.Second:             "1.0 s",
		3 * time.Second:         "3.0 s",
		1500 * time.Millisecond: "1.5 s",
	} {
		if got := wallTime(d); got != want {
			t.Errorf("wallTime(%v) = %q, want %q", d, got, want)
		}
	}
}

// TestSimulateAutoQEMUTrace: simulate --mode auto on a trace of a QEMU VM
// (profile's header: source qemu pid N) says where its choice is a mode
// pagecast migrate cannot run there, and the best of those it can (walk
// 86: migrate refused simulate's predictive+tsmc+mecom), at a link where
// the choice's own runs stopped every such mode short too (review 88: the
// note ended without one); a trace of another source gets no such note.
func TestSimulateAutoQEMUTrace(t *testing.T) {
	slowUnderRace(t, "5 s")
	for _, tc := range []struct {
		trace, bw string
		judge     bool
	}{{"gcc", "64MiB/s", true}, {"bzip2", "8MiB/s", false}} {
		args := []string{"simulate", "--trace", "../../predictor/testdata/real/" + tc.trace + ".pct", "--mode", "auto", "--bandwidth", tc.bw}
		if tc.judge {
			args = append(args, "--judge")
		}
		stdout, stderr, err := runApp(t, args...)
		if err != nil {
			t.Fatal(err)
		}
		chose := regexp.MustCompile(`(?m)^auto chose (\S+): `).FindStringSubmatch(stdout)
		if chose == nil {
			t.Fatalf("%s: no choice:\n%s", tc.trace, stdout)
		}
		_, planErr := migrator.PlanQEMU(migrator.Params{Mode: chose[1]}, 64<<20)
		if !migrator.NeedsPostcopy(chose[1]) || planErr == nil {
			t.Logf("%s at %s: auto chose %s, which migrate runs on a QEMU source: the note is not exercised", tc.trace, tc.bw, chose[1])
			continue
		}
		m := regexp.MustCompile(`(?m)^note: the trace is of a QEMU VM \(qemu pid \d+\), on which pagecast migrate cannot run ` + regexp.QuoteMeta(chose[1]) +
			` with either engine; the best of the modes it can run there is (\S+): `).FindStringSubmatch(stdout)
		if m == nil {
			t.Errorf("%s at %s: auto chose %s, which migrate cannot run on QEMU, and the note does not name another:\n%s", tc.trace, tc.bw, chose[1], stdout)
			continue
		}
		if _, err := migrator.PlanQEMU(migrator.Params{Mode: m[1]}, 64<<20); migrator.NeedsPostcopy(m[1]) && err != nil {
			t.Errorf("%s at %s: the note names %s, which migrate cannot run on QEMU either", tc.trace, tc.bw, m[1])
		}
		// The traces are of QEMUs under TCG, where QEMU's own migration,
		// which runs a post-copy mode there, loses writes before 9.0
		// (walk 116: the note named tsmc without a word of it).
		if migrator.NeedsPostcopy(m[1]) && !strings.Contains(stdout, "this trace's QEMU ran under TCG, where QEMU's own migration before QEMU 9.0 loses some of the guest's writes") {
			t.Errorf("%s at %s: the note names %s, QEMU's own migration, and not that it loses writes under TCG:\n%s", tc.trace, tc.bw, m[1], stdout)
		}
		// Judged, the best of those migrate runs there is judged among
		// them too (walk 135: the verdict named only modes the note had
		// said migrate cannot run there).
		if tc.judge {
			j := regexp.MustCompile(`(?m)^on the trace's QEMU VM, among the modes pagecast migrate runs there \(([^)]*)\), where it would run ` + regexp.QuoteMeta(m[1]) + `: (.*)$`).FindStringSubmatch(stdout)
			if j == nil {
				t.Errorf("%s at %s, judged: no verdict among the modes migrate runs on QEMU:\n%s", tc.trace, tc.bw, stdout)
			} else {
				runs := strings.Split(j[1], ", ")
				if slices.Contains(runs, chose[1]) || !slices.Contains(runs, m[1]) {
					t.Errorf("%s at %s, judged: the modes migrate runs on QEMU listed as %v, with the choice %s, without %s", tc.trace, tc.bw, runs, chose[1], m[1])
				}
				if best := regexp.MustCompile(`over the best by [a-z ]+, (\S+)$`).FindStringSubmatch(j[2]); best != nil && !slices.Contains(runs, best[1]) {
					t.Errorf("%s at %s, judged among the modes migrate runs on QEMU: the best named, %s, is not one of them: %s", tc.trace, tc.bw, best[1], j[0])
				}
			}
		}
		// The second choice's progress lines are said (walk 109).
		if !strings.Contains(stderr, "auto: the trace is of a QEMU VM: choosing again among the modes pagecast migrate runs there (") {
			t.Errorf("%s at %s: the choice again is not said:\n%s", tc.trace, tc.bw, stderr)
		}
	}
	stdout, _, err := runApp(t, "simulate", "--trace", "../../predictor/testdata/real/awk.pct", "--mode", "auto", "--bandwidth", "64MiB/s")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(stdout, "note: the trace is of a QEMU VM") {
		t.Errorf("a CSV import's trace said to be a QEMU VM's:\n%s", stdout)
	}
}

// TestSimulateLostEpochs: a damaged trace's lost epochs, replayed as idle,
// are named, and so are the modes whose migrations ran through them (walk
// 107: three lost epochs took precopy from 15.5 s to 824 ms, said only as
// a stretch skipped); a migration from after them is not warned of.
func TestSimulateLostEpochs(t *testing.T) {
	data, err := os.ReadFile(simTrace)
	if err != nil {
		t.Fatal(err)
	}
	records := recordOffsets(data)
	if len(records) != 60 {
		t.Fatalf("found %d records", len(records))
	}
	for _, r := range records[2:5] { // epochs 3 to 5
		data[r+10] ^= 0xff
	}
	path := filepath.Join(t.TempDir(), "damaged.pct")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	_, stderr, err := runApp(t, "simulate", "--trace", path, "--bandwidth", "4MiB/s", "--mode", "precopy,predictive")
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	for _, want := range []string{"simulating the intact epochs, and those lost with the damage (epochs 3-5) as idle",
		"pagecast: warning: precopy, predictive ran through epochs 3-5, lost with the damage and replayed as idle"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	// --json carries them per mode too, where only stderr did.
	stdout, stderr, err := runApp(t, "simulate", "--trace", path, "--bandwidth", "4MiB/s", "--mode", "precopy", "--json")
	var sims []struct {
		Mode string `json:"mode"`
		Lost []struct {
			From, To uint64
			Damaged  bool
		} `json:"lost-epochs-run-through"`
	}
	if err != nil || json.Unmarshal([]byte(stdout), &sims) != nil || len(sims) != 1 || len(sims[0].Lost) != 1 ||
		sims[0].Lost[0].From != 3 || sims[0].Lost[0].To != 5 || !sims[0].Lost[0].Damaged {
		t.Errorf("--json: %v, %+v, want precopy to have run through epochs 3 to 5\n%s\n%s", err, sims, stdout, stderr)
	}
	stdout, stderr, err = runApp(t, "simulate", "--trace", path, "--bandwidth", "64MiB/s", "--mode", "precopy", "--start", "10", "--json")
	if err != nil || strings.Contains(stdout, "lost-epochs") {
		t.Errorf("--json from after the damage: %v\n%s", err, stdout)
	}
	_, stderr, err = runApp(t, "simulate", "--trace", path, "--bandwidth", "64MiB/s", "--mode", "precopy", "--start", "10")
	if err != nil || strings.Contains(stderr, "ran through") || !strings.Contains(stderr, "lost with the damage (epochs 3-5) as idle") {
		t.Errorf("from after the damage: %v\n%s", err, stderr)
	}
	// Replayed from its start (epoch 2), a migration goes through them.
	_, stderr, err = runApp(t, "simulate", "--trace", path, "--bandwidth", "4MiB/s", "--mode", "precopy", "--start", "2")
	if err != nil || !strings.Contains(stderr, "precopy ran through epochs 3-5") {
		t.Errorf("replayed through the damage: %v\n%s", err, stderr)
	}
	_, stderr, err = runApp(t, "simulate", "--trace", path, "--bandwidth", "4MiB/s", "--mode", "auto", "--observe", "8")
	if err != nil || !strings.Contains(stderr, "auto observes epochs 3-5, lost with the damage and replayed as idle") {
		t.Errorf("auto observing the damage: %v\n%s", err, stderr)
	}

	// Damage before the first intact record and after the last: their
	// epochs cannot be counted, and are not "no whole epoch" (walk 157).
	data, err = os.ReadFile(simTrace)
	if err != nil {
		t.Fatal(err)
	}
	data[records[0]+10] ^= 0xff
	data = append(data, bytes.Repeat([]byte{0xa5}, 100)...)
	ends := filepath.Join(t.TempDir(), "ends.pct")
	if err := os.WriteFile(ends, data, 0o644); err != nil {
		t.Fatal(err)
	}
	_, stderr, err = runApp(t, "simulate", "--trace", ends, "--bandwidth", "64MiB/s", "--mode", "precopy")
	for _, want := range []string{"2 damaged stretches skipped; simulating the intact epochs (none is missing between them)",
		"what came before epoch 2 went with the damage (how many epochs, if any, cannot be told): the trace begins there",
		"what came after epoch 60 went with the damage"} {
		if err != nil || !strings.Contains(stderr, want) {
			t.Errorf("damage at both ends: %v, stderr lacks %q:\n%s", err, want, stderr)
		}
	}

	// A trace followed by a copy of its records lost nothing after its
	// last epoch: said so (review walk 161).
	data, err = os.ReadFile(simTrace)
	if err != nil {
		t.Fatal(err)
	}
	twice := filepath.Join(t.TempDir(), "twice.pct")
	if err := os.WriteFile(twice, append(data, data[records[0]:]...), 0o644); err != nil {
		t.Fatal(err)
	}
	_, stderr, err = runApp(t, "simulate", "--trace", twice, "--bandwidth", "64MiB/s", "--mode", "precopy")
	if err != nil || !strings.Contains(stderr, "; after epoch 60, the trace ends in damage or records that do not follow it (written again, or out of order") ||
		strings.Contains(stderr, "went with the damage") {
		t.Errorf("a trace written twice: %v\n%s", err, stderr)
	}

	// Indices a trace never recorded, without damage, are replayed as
	// idle too, and said (walk 157: a trace of epochs 1000 apart was
	// replayed as 3 million idle epochs without a word).
	gaps := filepath.Join(t.TempDir(), "gaps.pct")
	var epochs []trace.Epoch
	for i := range uint64(20) {
		epochs = append(epochs, trace.Epoch{Index: 1 + 100*i, Pages: []uint64{i, i + 1000}})
	}
	writeTrace(t, gaps, trace.Meta{MemoryBytes: 1 << 24, PageSize: 4096, Epoch: 100 * time.Millisecond, Source: "test"}, epochs...)
	_, stderr, err = runApp(t, "simulate", "--trace", gaps, "--bandwidth", "64MiB/s", "--mode", "precopy")
	for _, want := range []string{"lacks 1881 epoch indices between its first and last (epochs 2-100, 102-200, ",
		", … (19 stretches, 1881 epochs in all)), not damaged but never recorded: simulating them as idle",
		"precopy ran through epochs 2-100, missing from the trace and replayed as idle"} {
		if err != nil || !strings.Contains(stderr, want) {
			t.Errorf("a trace with gaps: %v, stderr lacks %q:\n%s", err, want, stderr)
		}
	}
	// Damage besides a gap never recorded: each said for what it is
	// (review walk 161: every gap was said lost with the damage).
	data, err = os.ReadFile(gaps)
	if err != nil {
		t.Fatal(err)
	}
	records = recordOffsets(data)
	data[records[3]+10] ^= 0xff // the record of epoch 301
	both := filepath.Join(t.TempDir(), "both.pct")
	if err := os.WriteFile(both, data, 0o644); err != nil {
		t.Fatal(err)
	}
	_, stderr, err = runApp(t, "simulate", "--trace", both, "--bandwidth", "64MiB/s", "--mode", "precopy")
	if err != nil || !strings.Contains(stderr, "and those lost with the damage or never recorded (epochs 2-100, 102-200, 202-400, 402-500,") ||
		!strings.Contains(stderr, "precopy ran through epochs 2-100, missing from the trace and replayed as idle") {
		t.Errorf("damage and a gap: %v\n%s", err, stderr)
	}
	stdout, _, err = runApp(t, "simulate", "--trace", both, "--bandwidth", "64MiB/s", "--mode", "precopy", "--start", "250", "--json")
	sims = nil
	if err != nil || json.Unmarshal([]byte(stdout), &sims) != nil || len(sims) != 1 || len(sims[0].Lost) == 0 ||
		sims[0].Lost[0].From != 202 || !sims[0].Lost[0].Damaged {
		t.Errorf("--json from epoch 251 of a trace damaged at 301: %v, %+v, want 202-400 first, damaged", err, sims)
	}
	// Nothing intact: refused in one line.
	for _, r := range records {
		data[r+10] ^= 0xff
	}
	data[records[3]+10] ^= 0xff // flipped back twice: damaged again
	none := filepath.Join(t.TempDir(), "none.pct")
	if err := os.WriteFile(none, data, 0o644); err != nil {
		t.Fatal(err)
	}
	_, stderr, err = runApp(t, "simulate", "--trace", none, "--bandwidth", "64MiB/s", "--mode", "precopy")
	if err == nil || !strings.Contains(err.Error(), "no intact epoch: 1 damaged stretch skipped") || strings.Contains(stderr, "simulating the intact epochs") {
		t.Errorf("a trace with nothing intact: %v\n%s", err, stderr)
	}
}

// TestWarnLostSpan: a migration of 735 ms from epoch 38, in epochs of 250
// ms, ran through epochs 38 to 40, not 41 (walk 108: one past its last);
// one stopped short ran through those it came to.
func TestWarnLostSpan(t *testing.T) {
	w, err := simulate.ParseSynthetic("hotset", 16384, 250*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	done := simulate.Result{Mode: "precopy"}
	done.Info.TotalTime = 735
	cut := simulate.Result{Mode: "tsmc", Err: &simulate.CutShort{At: 1100 * time.Millisecond}}
	for _, tc := range []struct {
		lost []lostSpan
		want string
	}{
		{[]lostSpan{{from: 41, to: 41}}, "tsmc ran through epoch 41"},
		{[]lostSpan{{from: 40, to: 40}}, "precopy, tsmc ran through epoch 40"},
		{[]lostSpan{{from: 43, to: 50}}, ""},
	} {
		var b strings.Builder
		warnLost(&b, w, 38, tc.lost, []simulate.Result{done, cut})
		if got := b.String(); tc.want == "" && got != "" || !strings.Contains(got, tc.want) {
			t.Errorf("lost %v: %q, want %q", tc.lost, got, tc.want)
		}
	}
}

// simulate --throttle-response: a trace's guest is taken for a Linux
// guest when throttled (LinuxResponse), a synthetic workload's and a
// trace of pagecast's own guest's for pagecast's own; the table says which; a throttled Linux guest's rounds
// hold more pages than a linear one's; bad values are refused.
func TestSimulateThrottleResponse(t *testing.T) {
	rows := map[string]string{}
	for _, r := range []string{"", "linear", "0.01:0.5,0.5:0.9"} {
		args := []string{"simulate", "--trace", "../../predictor/testdata/real/awk.pct", "--bandwidth", "4MiB/s", "--mode", "throttle"}
		if r != "" {
			args = append(args, "--throttle-response", r)
		}
		stdout, _, err := runApp(t, args...)
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]string{"": "145ms unthrottled (--throttle-response linux)", "linear": "10ms unthrottled (--throttle-response linear)",
			"0.01:0.5,0.5:0.9": "500ms unthrottled (--throttle-response 0.01:0.5,0.5:0.9)"}[r]
		if !strings.Contains(stdout, "the throttle's response taken: a guest throttled 99% writes in a second what it writes in "+want) {
			t.Errorf("--throttle-response %q: the table does not say %q:\n%s", r, want, stdout)
		}
		for _, line := range strings.Split(stdout, "\n") {
			if f := strings.Fields(line); len(f) > 0 && f[0] == "throttle" {
				rows[r] = line
			}
		}
	}
	// The heavier the response, the more pages its later rounds hold.
	if rows[""] == rows["linear"] || rows["0.01:0.5,0.5:0.9"] == rows[""] {
		t.Errorf("the response changed nothing:\n%s\n%s\n%s", rows["linear"], rows[""], rows["0.01:0.5,0.5:0.9"])
	}
	stdout, _, err := runApp(t, "simulate", "--synthetic", "hotset:hot=2048,p=0.95,rate=8000", "--memory", "64M", "--bandwidth", "16MiB/s", "--mode", "throttle")
	if err != nil || !strings.Contains(stdout, "(--throttle-response linear)") {
		t.Errorf("a synthetic workload's guest: %v\n%s", err, stdout)
	}
	// A trace whose recorder says it is pagecast's own guest's (profile
	// of pagecast's monitor or of a QEMU whose guest's status page says
	// so, the demo's).
	meta, epochs, _, err := trace.ReadFile("../../predictor/testdata/real/awk.pct")
	if err != nil {
		t.Fatal(err)
	}
	meta.Extra = map[string]string{trace.ExtraGuest: trace.GuestPagecast}
	own := filepath.Join(t.TempDir(), "own.pct")
	w, err := trace.Create(own, meta)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range epochs {
		if err := w.Append(e); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if stdout, _, err := runApp(t, "trace", "info", own); err != nil || !strings.Contains(stdout, "guest        pagecast's own (simulate throttles it as such: --throttle-response linear)") ||
		strings.Contains(stdout, "extra        guest=") {
		t.Errorf("trace info of a trace of pagecast's own guest: %v\n%s", err, stdout)
	}
	stdout, _, err = runApp(t, "simulate", "--trace", own, "--bandwidth", "4MiB/s", "--mode", "throttle")
	if err != nil || !strings.Contains(stdout, "(--throttle-response linear)") {
		t.Errorf("a trace of pagecast's own guest: %v\n%s", err, stdout)
	}
	for _, bad := range []string{"fast", "0.5:0.9,0.1:0.2", "1:1"} {
		_, _, err := runApp(t, "simulate", "--trace", "../../predictor/testdata/real/awk.pct", "--mode", "throttle", "--throttle-response", bad)
		if err == nil || !strings.HasPrefix(err.Error(), "--throttle-response: throttle response") {
			t.Errorf("--throttle-response %q: %v", bad, err)
		}
	}
}

// TestNotSimulatedRow: a mode whose simulation had not begun when auto's
// predictions ran out of time reads "not simulated", not ">>0s" (walk
// 131).
func TestNotSimulatedRow(t *testing.T) {
	w, err := simulate.ParseSynthetic("uniform", 4096, 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	never := &simulate.CutShort{Prefer: simulate.PreferTime, Budget: 2 * time.Minute}
	var b strings.Builder
	writeSimulationTableWith(&b, w, []simulate.Result{{Mode: "predictive", Err: never}}, "", "", autoCheckRate)
	if !strings.Contains(b.String(), "predictive  not simulated") || strings.Contains(b.String(), ">>0s") {
		t.Errorf("table:\n%s", b.String())
	}
	if got := never.Error(); !strings.HasPrefix(got, "not simulated: auto's predictions had taken 2m0s of real time, their most, before it began") {
		t.Errorf("error %q", got)
	}
}
