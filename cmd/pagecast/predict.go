package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/pagecast/pagecast/internal/printable"
	"github.com/pagecast/pagecast/internal/units"
	"github.com/pagecast/pagecast/predictor"
	"github.com/pagecast/pagecast/simulate"
)

func predictCommand() *cli.Command {
	return &cli.Command{
		Name:  "predict",
		Usage: "forecast which pages a VM dirties next: evaluate the model, serve its forecasts",
		Description: "pagecast's predictor gives every guest page the probability that it is dirtied in the next\n" +
			"epoch (or the next few), from the page's own write history and its neighbours', with weights\n" +
			"fitted to each VM as it runs. See the predictor package.",
		Subcommands: []*cli.Command{
			predictEvalCommand(),
			predictServeCommand(),
		},
	}
}

func predictEvalCommand() *cli.Command {
	return &cli.Command{
		Name:      "eval",
		Usage:     "score the model against the baselines on a trace: precision, recall, F1, Brier, AUC, calibration",
		ArgsUsage: "TRACE",
		Description: "Walks the trace forward: before each epoch every predictor forecasts, for every page, the\n" +
			"probability that it is dirtied (within --horizon epochs), then sees the epoch. After --warmup\n" +
			"epochs each (page, epoch) pair is scored. Predictors: the model (temporal and spatial locality,\n" +
			"logistic regression fitted online), last-epoch (dirty last epoch => dirty next; the same at\n" +
			"any horizon), frequency (f, the share of the last 8 epochs dirty; within h epochs 1-(1-f)^h) and\n" +
			"markov (a two-state chain per page, shrunk toward the chain pooled over all pages; within h\n" +
			"epochs, its chance of at least one dirty epoch among the next h).\n\n" +
			"Columns: precision, recall and F1 of predicting dirty the pages at or above --threshold; Brier,\n" +
			"the mean squared error of the probabilities over all pairs (lower is better); AUC, the area under\n" +
			"the ROC curve; ECE, the expected calibration error over 10 equal-width bins. * marks the best in\n" +
			"each column; n/a where a score is undefined (precision where nothing was predicted dirty, recall,\n" +
			"F1 and AUC where nothing was dirtied). With several horizons (--horizon 1,2,4,8,16: what a\n" +
			"pre-copy round asks, \"is this page dirtied again before the round ends?\") there is one table\n" +
			"per horizon, then the model against the best baseline at each. The model keeps its\n" +
			"probabilities calibrated except that, where the epochs after its last refits (the latest\n" +
			"weighing most) show another cut than --threshold gives a clearly better F1, it moves the pages\n" +
			"in between just across it.\n\n" +
			"TRACE is a trace file (pagecast profile --out, pagecast trace import) or, ending in .csv or\n" +
			".csv.gz, a CSV of epoch,page rows, which needs --memory (see pagecast trace import). A walk\n" +
			"that takes longer than 5 s says on stderr how far it is, every 5 s.\n\n" +
			"Examples:\n" +
			"  pagecast predict eval --plots plots/ vm.pct\n" +
			"  pagecast predict eval --memory 256M awk.csv   # an epoch,page CSV (pagecast trace export makes one)\n" +
			"  pagecast predict eval --horizon 1,2,4,8,16 predictor/testdata/real/xz.pct\n" +
			"  pagecast predict eval --parts 4 --horizon 1,8 predictor/testdata/parts/xz.pct   # recorded in epochs of 25 ms, scored in 100 ms",
		Flags: []cli.Flag{
			&cli.Float64Flag{Name: "threshold", Value: predictor.DefaultThreshold,
				Usage: "probability at and above which a page counts as predicted dirty (0 < t < 1); the model moves the pages between its F1-best cut and this one just across it, so that a higher threshold does not buy it precision the way it does a baseline's, and its Brier score grows with the distance moved"},
			&cli.BoolFlag{Name: "as-served",
				Usage: "score the model's probabilities as predict serve serves them: as fitted, none moved across --threshold (its F1 is then what a caller cutting at --threshold gets; its Brier and ECE those of the served forecast)"},
			&cli.IntFlag{Name: "warmup", Value: predictor.DefaultWarmup, Usage: "epochs observed before scoring starts"},
			&cli.StringFlag{Name: "horizon", Value: "1",
				Usage: fmt.Sprintf("forecast dirtying within this many epochs (1-%d); a comma-separated list scores each, e.g. 1,2,4,8,16", predictor.MaxHorizon)},
			&cli.IntFlag{Name: "parts", Value: 1,
				Usage: fmt.Sprintf("score epochs of this many of the trace's, and tell the model in which of them each page was written (a trace profiled with --epoch 25ms, scored with --parts 4: epochs of 100 ms, and when in each a page was written); 1 to %d", maxParts)},
			&cli.BoolFlag{Name: "untold",
				Usage: "with --parts: score the same epochs of N of the trace's, but do not tell the model in which part each page was written (what telling it gains: the table told against whole in docs/predictor.md)"},
			&cli.StringFlag{Name: "plots",
				Usage: "directory to write calibration.png and per-epoch.png to (created if missing); with several horizons, calibration-hN.png and per-epoch-hN.png for each"},
			&cli.StringFlag{Name: "memory", Aliases: []string{"m"},
				Usage: "CSV traces only: guest memory size (K, M, G, T or P suffix); pages must lie below it"},
			&cli.StringFlag{Name: "epoch", Value: "100ms", Usage: "CSV traces only: length of one epoch"},
			pageSizeFlag("CSV traces only: ", false),
			anyPageSizeFlag(),
			&cli.BoolFlag{Name: "json", Usage: "print the scores as one JSON object (per horizon, per predictor: the table's columns and the pair counts; epoch in seconds, memory in bytes) instead of the tables; notes go to stderr"},
		},
		Action: predictEval,
	}
}

// errEvalInterrupted is predict eval's error when a signal stopped it.
var errEvalInterrupted = errors.New("interrupted: predict eval stopped before the end of the trace, and printed nothing")

func predictEval(c *cli.Context) error {
	defer allowPageSizes(c)()
	path, err := oneArg(c, "trace")
	if err != nil {
		return err
	}
	// A signal stops the walk, said as such: it went unhandled (exit 143,
	// nothing said, an empty --plots directory left), and a script's
	// SIGINT, ignored in the background, not at all (walk 59).
	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	if dir := c.String("plots"); dir != "" {
		if _, serr := os.Stat(dir); errors.Is(serr, fs.ErrNotExist) {
			defer os.Remove(dir) // only if still empty
		}
		if err := os.MkdirAll(dir, 0o755); err != nil { // before an evaluation that may take long
			return fmt.Errorf("--plots: %w", err)
		}
	}
	thr := c.Float64("threshold")
	if !(thr > 0 && thr < 1) {
		return fmt.Errorf("--threshold %v: want a probability between 0 and 1", thr)
	}
	modelThr := thr // the model moves pages across it
	if c.Bool("as-served") {
		modelThr = -1 // never: as predict serve serves them
	}
	warmup := c.Int("warmup")
	if warmup < 0 {
		return fmt.Errorf("--warmup %d: want 0 or more epochs", warmup)
	}
	horizons, err := parseHorizons(c.String("horizon"))
	if err != nil {
		return err
	}
	longest := slices.Max(horizons)
	parts := c.Int("parts")
	if parts < 1 || parts > maxParts {
		return fmt.Errorf("--parts %d: want 1 to %d of the trace's epochs to an epoch scored", parts, maxParts)
	}
	untold := c.Bool("untold")
	if untold && parts == 1 {
		return errors.New("--untold: with --parts N above 1 only (the model is told parts only where epochs are joined)")
	}

	var csv predictor.CSVOptions
	if predictor.IsCSV(path) {
		if !c.IsSet("memory") {
			return fmt.Errorf("%s is a CSV trace: give the guest memory size with --memory (e.g. --memory 256M)", path)
		}
		if csv, err = csvGeometry(c); err != nil {
			return err
		}
	} else {
		for _, f := range []string{"memory", "epoch", "page-size"} {
			if c.IsSet(f) {
				return fmt.Errorf("--%s is for CSV traces; %s is not named .csv or .csv.gz, so it is read as a pagecast trace file, which gives the guest's memory, epoch and page size itself", f, path)
			}
		}
	}

	meta, epochs, damage, err := predictor.ReadTrace(path, csv)
	if err != nil {
		return err
	}
	if len(damage) > 0 {
		fmt.Fprintf(c.App.ErrWriter, "pagecast: warning: %s is damaged: evaluating the epochs that read, skipped %s (see pagecast trace info)\n",
			printable.Line(path), stretches(len(damage)))
	}
	pages, pm := predictor.MapPages(epochs, meta.Pages())
	if err := checkPredictorMemory(path, pages); err != nil {
		return err
	}
	epochs, byParts := predictor.GroupEpochs(epochs, parts)
	if untold {
		byParts = nil
	}
	meta.Epoch *= time.Duration(parts)
	if n, longest, after := predictor.LongGaps(epochs); n > 0 {
		more := ""
		if n > 1 {
			more = fmt.Sprintf(" (the longest of %d gaps over 128)", n)
		}
		fmt.Fprintf(c.App.ErrWriter, "pagecast: warning: %s: its epoch indices skip %d epochs after epoch %d%s: predict eval observes at most 128 empty epochs a gap, as if the rest had not gone by\n",
			printable.Line(path), longest, after, more)
	}
	if n := predictor.CutGaps(epochs); n > 0 {
		fmt.Fprintf(c.App.ErrWriter, "pagecast: warning: %s: its gaps in epoch indices add up to more empty epochs than predict eval observes (up to 128 a gap, and the trace's epochs plus 128 in all): after %d of the gaps, epochs are not scored until 128 have gone by\n",
			printable.Line(path), n)
	}
	if len(epochs) <= warmup+longest-1 {
		grouped := ""
		if parts > 1 {
			// Said, as the trace's own count is not (walk 122: "0
			// epochs" of a trace of 60).
			grouped = fmt.Sprintf(" of %v (--parts %d: %d of the trace's each)", meta.Epoch, parts, parts)
		}
		return fmt.Errorf("%s: %d epochs%s, not enough to score after a warm-up of %d at horizon %d", printable.Line(path), len(epochs), grouped, warmup, longest)
	}
	out := c.App.Writer
	head := fmt.Sprintf("%s: %d pages (%s), %d epochs of %v", printable.Line(filepath.Base(path)), meta.Pages(),
		units.FormatBytes(float64(meta.MemoryBytes)), len(epochs), meta.Epoch)
	switch {
	case parts > 1 && untold:
		head += fmt.Sprintf(" (%d of the trace's each, the model not told in which a page was written: --untold)", parts)
	case parts > 1:
		head += fmt.Sprintf(" (%d of the trace's each, the model told in which a page was written)", parts)
	}
	if c.Bool("as-served") {
		head += "; the model's probabilities as served, none moved across the threshold"
	}
	report := evalReport{Trace: path, Pages: meta.Pages(), Memory: meta.MemoryBytes, Epochs: len(epochs),
		Epoch: meta.Epoch.Seconds(), Parts: parts, Untold: untold, Warmup: warmup, Threshold: thr, AsServed: c.Bool("as-served")}
	if pm != nil {
		report.Kept = &keptPages{Kept: pm.Len(), Dirtied: pm.Dirtied(), Neighbours: pm.Mapped() - pm.Dirtied(),
			NeverDirtied: pm.Len() - pm.Mapped(), Others: pm.Total - pm.Mapped()}
	}
	pagesNote := func() {
		if k := report.Kept; k != nil {
			// The dirtied pages were said to be the mapped ones, their
			// neighbours too (walk 129). Far stands for the guest pages
			// outside the runs, as the scores weigh it; the other
			// never-dirtied pages kept are no guest page's.
			fmt.Fprintf(out, "predictors kept %d pages: the %d the trace dirtied, %d neighbours of them, and %d never dirtied: one stands for the guest's %d other pages, the rest keep it apart from those\n",
				k.Kept, k.Dirtied, k.Neighbours, k.NeverDirtied, k.Others)
		}
	}
	evaluate := func(h int) []predictor.Result {
		eo := predictor.EvalOptions{Threshold: thr, Warmup: warmup, Horizon: h, Pages: pm, Parts: byParts, Context: ctx}
		if warmup == 0 {
			eo.Warmup = -1
		}
		contenders := predictor.Contenders(pages, predictor.Options{Horizon: h, Threshold: modelThr})
		eo.Progress = evalProgress(c.App.ErrWriter, len(contenders), progressEvery)
		return predictor.Evaluate(epochs, pages, contenders, eo)
	}
	dir := c.String("plots")

	if len(horizons) == 1 {
		h := horizons[0]
		results := evaluate(h)
		if ctx.Err() != nil {
			return errEvalInterrupted
		}
		if len(results[0].Epochs) == 0 {
			return noneScored(path, h)
		}
		if c.Bool("json") {
			return writeEvalJSON(c, report, horizons, [][]predictor.Result{results})
		}
		fmt.Fprintf(out, "%s; scored %d epochs after a warm-up of %d, %s, threshold %g\n",
			head, len(results[0].Epochs), warmup, ahead(h), thr)
		pagesNote()
		writeEvalTable(out, results)
		if dir != "" {
			if err := writePlots(dir, filepath.Base(path), "", results); err != nil {
				return err
			}
			fmt.Fprintf(out, "plots: %s, %s\n", filepath.Join(dir, "calibration.png"), filepath.Join(dir, "per-epoch.png"))
		}
		return nil
	}

	// One walk of the trace for every horizon; the model fits each.
	eo := predictor.EvalOptions{Threshold: thr, Warmup: warmup, Pages: pm, Parts: byParts, Context: ctx}
	if warmup == 0 {
		eo.Warmup = -1
	}
	contenders := predictor.Contenders(pages, predictor.Options{Horizon: longest, Threshold: modelThr})
	eo.Progress = evalProgress(c.App.ErrWriter, len(contenders), progressEvery)
	byPredictor := predictor.EvaluateHorizons(epochs, pages, contenders, eo, horizons)
	if ctx.Err() != nil {
		return errEvalInterrupted
	}
	all := make([][]predictor.Result, len(horizons))
	for i, h := range horizons {
		for _, r := range byPredictor {
			all[i] = append(all[i], r[i])
		}
		if len(all[i][0].Epochs) == 0 {
			return noneScored(path, h)
		}
	}
	if c.Bool("json") {
		return writeEvalJSON(c, report, horizons, all)
	}
	fmt.Fprintf(out, "%s; warm-up of %d, threshold %g, horizons %s epochs\n", head, warmup, thr, joinInts(horizons))
	pagesNote()
	for i, h := range horizons {
		fmt.Fprintf(out, "\ndirtied within %s (scored %d epochs):\n", ahead(h), len(all[i][0].Epochs))
		writeEvalTable(out, all[i])
		if dir != "" {
			suffix := fmt.Sprintf("-h%d", h)
			if err := writePlots(dir, fmt.Sprintf("%s, horizon %d", filepath.Base(path), h), suffix, all[i]); err != nil {
				return err
			}
			fmt.Fprintf(out, "plots: %s, %s\n", filepath.Join(dir, "calibration"+suffix+".png"), filepath.Join(dir, "per-epoch"+suffix+".png"))
		}
	}
	fmt.Fprintln(out)
	writeHorizonSummary(out, horizons, all)
	return nil
}

// noneScored is predict eval's error for a horizon at which no epoch of
// path could be scored: each epoch's horizon reaches past the trace or
// into indices it skips. (It printed a table of zeros and a ratio of NaN;
// walk 53.)
func noneScored(path string, h int) error {
	return fmt.Errorf("%s: no epoch can be scored at horizon %d: after the warm-up, every epoch's next %d reach past the trace's end or into epoch indices it skips (see pagecast trace info)", path, h, h-1)
}

// maxParts bounds predict eval's --parts.
const maxParts = 64

// parseHorizons reads --horizon: one horizon or a comma-separated list,
// each 1 to predictor.MaxHorizon epochs, none twice.
func parseHorizons(s string) ([]int, error) {
	var hs []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		h, err := strconv.Atoi(f)
		if err != nil || h < 1 || h > predictor.MaxHorizon {
			what := fmt.Sprintf("%q", f)
			if f == "" {
				what = "an empty item"
			}
			return nil, fmt.Errorf("--horizon %s: %s: want 1 to %d epochs, or a comma-separated list of them", s, what, predictor.MaxHorizon)
		}
		if slices.Contains(hs, h) {
			return nil, fmt.Errorf("--horizon %s: horizon %d given twice", s, h)
		}
		hs = append(hs, h)
	}
	return hs, nil
}

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = strconv.Itoa(x)
	}
	return strings.Join(s, ",")
}

// ahead says how far a horizon reaches.
func ahead(h int) string {
	if h == 1 {
		return "the next epoch"
	}
	return fmt.Sprintf("the next %d epochs", h)
}

// againstBest is the model's F1, Brier score and AUC against the best
// baseline's in each (results[0] is the model's): the margins the
// predictor is judged by. A baseline whose figure is undefined (NaN) is
// passed over; a figure with no baseline to compare is NaN.
type againstBest struct {
	F1, Brier, AUC                float64 // the best baselines'
	F1By, BrierBy, AUCBy          string
	F1Gain, BrierRatio, AUCGain   float64
	ModelF1, ModelBrier, ModelAUC float64
}

func bestBaselines(results []predictor.Result) againstBest {
	m := results[0]
	a := againstBest{F1: math.NaN(), Brier: math.NaN(), AUC: math.NaN(), ModelF1: m.F1, ModelBrier: m.Brier, ModelAUC: m.AUC}
	for _, b := range results[1:] {
		if !math.IsNaN(b.F1) && (math.IsNaN(a.F1) || b.F1 > a.F1) {
			a.F1, a.F1By = b.F1, b.Name
		}
		if !math.IsNaN(b.Brier) && (math.IsNaN(a.Brier) || b.Brier < a.Brier) {
			a.Brier, a.BrierBy = b.Brier, b.Name
		}
		if !math.IsNaN(b.AUC) && (math.IsNaN(a.AUC) || b.AUC > a.AUC) {
			a.AUC, a.AUCBy = b.AUC, b.Name
		}
	}
	a.F1Gain, a.AUCGain, a.BrierRatio = m.F1-a.F1, m.AUC-a.AUC, math.NaN()
	if a.Brier > 0 {
		a.BrierRatio = m.Brier / a.Brier
	}
	return a
}

// writeHorizonSummary prints, per horizon, the model's F1, Brier and AUC
// against the best baseline's in each (results[0] is the model's).
func writeHorizonSummary(out io.Writer, horizons []int, all [][]predictor.Result) {
	fmt.Fprintln(out, "model against the best baseline at each horizon:")
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "horizon\tF1 model\tbest baseline\tgain\tBrier model\tbest baseline\tratio\tAUC model\tbest baseline\t")
	for i, h := range horizons {
		a := bestBaselines(all[i])
		// A baseline all but perfect (Brier 2e-11 on a guest writing all
		// its memory every epoch) made a ratio of nine digits, which
		// widened the column (walk 156): large ones go in exponent form.
		ratio := fmt.Sprintf("%.3f", a.BrierRatio)
		if a.BrierRatio >= 1000 {
			ratio = fmt.Sprintf("%.3g", a.BrierRatio)
		}
		fmt.Fprintf(tw, "%d\t%.4f\t%.4f\t%+.4f\t%.6f\t%.6f\t%s\t%.4f\t%.4f\t\n", h, a.ModelF1, a.F1, a.F1Gain, a.ModelBrier, a.Brier, ratio, a.ModelAUC, a.AUC)
	}
	tw.Flush()
	fmt.Fprintln(out, "gain: F1 model minus best baseline; ratio: Brier model over best baseline (below 1 is better)")
}

// writeEvalTable prints the results, one row per predictor, the best value
// in each column marked with *.
func writeEvalTable(out io.Writer, results []predictor.Result) {
	type column struct {
		name   string
		format string
		value  func(predictor.Result) float64
		higher bool // higher is better
	}
	cols := []column{
		{"precision", "%.3f", precision, true},
		{"recall", "%.3f", recall, true},
		{"F1", "%.4f", f1, true},
		{"Brier", "%.6f", func(r predictor.Result) float64 { return r.Brier }, false},
		{"AUC", "%.4f", func(r predictor.Result) float64 { return r.AUC }, true},
		{"ECE", "%.5f", func(r predictor.Result) float64 { return r.ECE }, false},
	}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	var head bytes.Buffer
	head.WriteString("predictor\t")
	for _, col := range cols {
		head.WriteString(col.name + " \t")
	}
	fmt.Fprintln(tw, head.String())
	for _, r := range results {
		row := []string{r.Name}
		for _, col := range cols {
			v := col.value(r)
			best := true
			for _, o := range results {
				if ov := col.value(o); col.higher && ov > v || !col.higher && ov < v {
					best = false
				}
			}
			mark := " "
			if best && !math.IsNaN(v) {
				mark = "*"
			}
			if math.IsNaN(v) {
				// AUC with no page dirtied, or all; precision with
				// none predicted dirty, recall and F1 with none dirtied
				row = append(row, "n/a ")
				continue
			}
			row = append(row, fmt.Sprintf(col.format, v)+mark)
		}
		fmt.Fprintln(tw, strings.Join(row, "\t")+"\t")
	}
	tw.Flush()
	fmt.Fprintln(out, "* best in the column; Brier and ECE: lower is better")
}

// precision is r's, NaN where it predicted no page dirty (walk 119: shown
// as 0.000, and starred as the best where no other did better).
func precision(r predictor.Result) float64 {
	if r.TruePositives+r.FalsePositives == 0 {
		return math.NaN()
	}
	return r.Precision
}

// recall is r's, NaN where no page was dirtied.
func recall(r predictor.Result) float64 {
	if r.Positives == 0 {
		return math.NaN()
	}
	return r.Recall
}

// f1 is r's, NaN where no page was dirtied (0.0000, starred for every
// predictor alike; walk 120).
func f1(r predictor.Result) float64 {
	if r.Positives == 0 {
		return math.NaN()
	}
	return r.F1
}

// orNull is v, or nil (JSON's null) where it is NaN: undefined.
func orNull(v float64) *float64 {
	if math.IsNaN(v) {
		return nil
	}
	return &v
}

// writePlots writes calibration<suffix>.png and per-epoch<suffix>.png into
// dir.
func writePlots(dir, title, suffix string, results []predictor.Result) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, p := range []struct {
		name string
		draw func(io.Writer, string, []predictor.Result) error
	}{{"calibration" + suffix + ".png", predictor.PlotCalibration}, {"per-epoch" + suffix + ".png", predictor.PlotEpochs}} {
		if err := writeOutput(filepath.Join(dir, p.name), func(w io.Writer) error {
			return p.draw(w, title, results)
		}); err != nil {
			return fmt.Errorf("plot %s: %w", p.name, err)
		}
	}
	return nil
}

// progressEvery is how often long work (predict eval, simulate) says on
// stderr how far it has come.
const progressEvery = 5 * time.Second

// evalProgress returns an EvalOptions.Progress that says on w, every
// interval, how many of their epochs the preds predictors have walked
// between them, and nothing once they are done (a short walk says
// nothing at all). Each call is one epoch
// walked by one of them. (It said how far the slowest was: as the
// predictors walk GOMAXPROCS at a time, one not yet started held it at 0%
// for half the walk on 2 cores, walk 129.)
func evalProgress(w io.Writer, preds int, interval time.Duration) func(done, total int) {
	var mu sync.Mutex
	walked, start := 0, time.Now()
	last := start
	return func(_, total int) {
		mu.Lock()
		defer mu.Unlock()
		walked++
		all := preds * total
		if now := time.Now(); now.Sub(last) >= interval && walked < all {
			last = now
			fmt.Fprintf(w, "predict eval: the %d predictors have walked %d of their %d × %d epochs (%.0f%%) in %.0f s\n",
				preds, walked, preds, total, 100*float64(walked)/float64(all), now.Sub(start).Seconds())
		}
	}
}

// freeMemory is simulate.FreeMemory: a test's seam.
var freeMemory = simulate.FreeMemory

// evalBytesPerPage is what predict eval's predictors and scores take for
// each page they keep, with a quarter to spare: a walk's scattered trace
// kept 19.8 M pages in 1.43 GB (72 bytes a page).
const evalBytesPerPage = 100

// checkPredictorMemory refuses, in one line, a trace whose kept pages
// would take more memory than this machine has free: a 5.6 MB trace of
// pages scattered over a 4 PiB guest kept 46 M of them, and predict eval
// ran out of memory in the Go runtime, with a goroutine dump.
func checkPredictorMemory(path string, kept uint64) error {
	free, where, ok := freeMemory()
	if need := kept * evalBytesPerPage; ok && need > free {
		return fmt.Errorf("%s: its predictors would keep %d pages (those the trace dirtied and their neighbours), about %s of memory at %d bytes a page, more than the %s %s",
			path, kept, units.FormatBytes(float64(need)), evalBytesPerPage, units.FormatBytes(float64(free)), where)
	}
	return nil
}

// evalReport is predict eval --json's output.
type evalReport struct {
	Trace     string          `json:"trace"`
	Pages     uint64          `json:"pages"`            // the guest's
	Memory    uint64          `json:"memory"`           // bytes
	Epochs    int             `json:"epochs"`           // walked, of Epoch each
	Epoch     float64         `json:"epoch"`            // seconds
	Parts     int             `json:"parts"`            // the trace's epochs to one walked (--parts)
	Untold    bool            `json:"untold,omitempty"` // --untold: the model not told the parts
	Warmup    int             `json:"warmup"`
	Threshold float64         `json:"threshold"`
	AsServed  bool            `json:"as-served,omitempty"` // the model's probabilities unmoved (--as-served)
	Kept      *keptPages      `json:"kept-pages,omitempty"`
	Horizons  []horizonScores `json:"horizons"`
	Plots     []string        `json:"plots,omitempty"`
}

// keptPages: the predictors kept the pages the trace dirtied and their
// neighbours, and never-dirtied pages of their own, one of which stands
// for all the guest's others. Dirtied+Neighbours+NeverDirtied is Kept, and
// Dirtied+Neighbours+Others the guest's pages. (Dirtied was the mapped
// pages, the neighbours counted too, until walk 129.)
type keptPages struct {
	Kept         uint64 `json:"kept"`
	Dirtied      uint64 `json:"dirtied"`
	Neighbours   uint64 `json:"neighbours"`
	NeverDirtied uint64 `json:"never-dirtied"`
	Others       uint64 `json:"others"`
}

// horizonScores are every predictor's scores at one horizon, the model's
// first.
type horizonScores struct {
	Horizon    int         `json:"horizon"`
	Scored     int         `json:"scored-epochs"`
	Predictors []scoreJSON `json:"predictors"`
	// Model is the model against the best baseline in each figure, as
	// the text's summary has it (walk 142: a script worked it out).
	Model modelJSON `json:"model-against-best-baseline"`
}

// modelJSON is the model's margins over the best baselines: each
// baseline's name, and null where no baseline's figure is defined.
type modelJSON struct {
	F1Gain     *float64 `json:"f1-gain"`
	F1By       string   `json:"f1-baseline"`
	BrierRatio *float64 `json:"brier-ratio"`
	BrierBy    string   `json:"brier-baseline"`
	AUCGain    *float64 `json:"auc-gain"`
	AUCBy      string   `json:"auc-baseline"`
}

// scoreJSON is one predictor's row of the table, with its pair counts.
type scoreJSON struct {
	Name           string   `json:"name"`
	Precision      *float64 `json:"precision"` // null where no pair was predicted dirty
	Recall         *float64 `json:"recall"`    // null where no pair was dirtied
	F1             *float64 `json:"f1"`        // null where no pair was dirtied
	Brier          float64  `json:"brier"`
	AUC            *float64 `json:"auc"` // null where no pair was dirtied, or every one
	ECE            float64  `json:"ece"`
	Pairs          uint64   `json:"pairs"`
	Positives      uint64   `json:"positives"`
	TruePositives  uint64   `json:"true-positives"`
	FalsePositives uint64   `json:"false-positives"`
	FalseNegatives uint64   `json:"false-negatives"`
}

// writeEvalJSON prints r with the scores at each horizon (all[i] at
// horizons[i]) as one JSON object on stdout, after writing --plots.
func writeEvalJSON(c *cli.Context, r evalReport, horizons []int, all [][]predictor.Result) error {
	for i, h := range horizons {
		a := bestBaselines(all[i])
		hs := horizonScores{Horizon: h, Scored: len(all[i][0].Epochs), Model: modelJSON{F1Gain: orNull(a.F1Gain), F1By: a.F1By,
			BrierRatio: orNull(a.BrierRatio), BrierBy: a.BrierBy, AUCGain: orNull(a.AUCGain), AUCBy: a.AUCBy}}
		for _, res := range all[i] {
			s := scoreJSON{Name: res.Name, Precision: orNull(precision(res)), Recall: orNull(recall(res)), F1: orNull(f1(res)), Brier: res.Brier, ECE: res.ECE,
				Pairs: res.Pairs, Positives: res.Positives, TruePositives: res.TruePositives, FalsePositives: res.FalsePositives, FalseNegatives: res.FalseNegatives}
			s.AUC = orNull(res.AUC)
			hs.Predictors = append(hs.Predictors, s)
		}
		r.Horizons = append(r.Horizons, hs)
		if dir := c.String("plots"); dir != "" {
			suffix, title := "", filepath.Base(r.Trace)
			if len(horizons) > 1 {
				suffix, title = fmt.Sprintf("-h%d", h), fmt.Sprintf("%s, horizon %d", title, h)
			}
			if err := writePlots(dir, title, suffix, all[i]); err != nil {
				return err
			}
			r.Plots = append(r.Plots, filepath.Join(dir, "calibration"+suffix+".png"), filepath.Join(dir, "per-epoch"+suffix+".png"))
		}
	}
	enc := json.NewEncoder(c.App.Writer)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}
