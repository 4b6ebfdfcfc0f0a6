// Command partstable makes the table of docs/predictor.md, "When in the
// epoch a page was written": each trace recorded in epochs of 25 ms
// (predictor/testdata/parts) scored in epochs of 4 of them, as predict
// eval --parts 4 --horizon 1,8 scores it (its "told" columns, which that
// command prints), beside the same model shown the epochs whole, not told
// in which part a page was written (its "whole" columns, which no command
// prints: a walk found them without a recipe).
//
//	go run ./predictor/testdata/partstable [-parts 4] [-h 1,8] predictor/testdata/parts/*.pct
package main

import (
	"flag"
	"fmt"
	"log"
	"math"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/pagecast/pagecast/predictor"
	"github.com/pagecast/pagecast/trace"
)

// sets are the traces' roles in the model's making (docs/predictor.md).
var sets = map[string]string{
	"xz": "dev", "perl": "dev", "sqlite": "held out", "gcc": "held out", "node": "held out",
	"zstd": "clean held out", "bzip2": "clean held out",
}

// whole is the model not told the parts: it has no ObserveParts, so the
// evaluation shows it each epoch whole.
type whole struct{ m *predictor.Model }

func (w whole) Name() string                        { return "model (epochs whole)" }
func (w whole) Observe(dirty []uint64)              { w.m.Observe(dirty) }
func (w whole) Predict(dst []float32)               { w.m.Predict(dst) }
func (w whole) PredictHorizon(dst []float32, h int) { w.m.PredictHorizon(dst, h) }

func main() {
	hs := flag.String("h", "1,8", "horizons")
	parts := flag.Int("parts", 4, "the trace's epochs to one scored")
	flag.Parse()
	var horizons []int
	for _, s := range strings.Split(*hs, ",") {
		h, err := strconv.Atoi(s)
		if err != nil || h < 1 || h > 32 {
			log.Fatalf("bad horizon %q", s)
		}
		horizons = append(horizons, h)
	}
	longest := horizons[len(horizons)-1]
	for _, h := range horizons {
		longest = max(longest, h)
	}
	fmt.Println("| trace | set | h | F1 told | F1 whole | best baseline F1 | gain told | Brier told | Brier whole | best baseline Brier | ratio told (whole) | AUC told | best baseline AUC | ECE told |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
	for _, path := range flag.Args() {
		m, fine, damage, err := trace.ReadFile(path)
		if err != nil {
			log.Fatal(err)
		}
		if len(damage) > 0 {
			log.Fatalf("%s: damaged", path)
		}
		pages, pm := predictor.MapPages(fine, m.Pages())
		epochs, byParts := predictor.GroupEpochs(fine, *parts)
		o := predictor.Options{Horizon: longest, Threshold: 0.5}
		preds := append(predictor.Contenders(pages, o), whole{predictor.NewModel(pages, o)})
		res := predictor.EvaluateHorizons(epochs, pages, preds, predictor.EvalOptions{Threshold: 0.5, Warmup: 8, Pages: pm, Parts: byParts}, horizons)
		name := strings.TrimSuffix(filepath.Base(path), ".pct")
		for k, h := range horizons {
			told, w := res[0][k], res[len(res)-1][k]
			f1, brier, auc := bestBaselines(res[1:len(res)-1], k)
			fmt.Printf("| %s | %s | %d | %.4f | %.4f | %.4f (%s) | %+.4f | %.6f | %.6f | %.6f (%s) | %.3f (%.3f) | %.4f | %.4f (%s) | %.4f |\n",
				name, sets[name], h, told.F1, w.F1, f1.F1, f1.Name, told.F1-f1.F1, told.Brier, w.Brier, brier.Brier, brier.Name,
				told.Brier/brier.Brier, w.Brier/brier.Brier, told.AUC, auc.AUC, auc.Name, told.ECE)
		}
	}
}

// bestBaselines are the baselines best at horizon k on F1, Brier and AUC.
func bestBaselines(bs [][]predictor.Result, k int) (f1, brier, auc predictor.Result) {
	f1.F1, brier.Brier, auc.AUC = -1, math.Inf(1), -1
	for _, b := range bs {
		r := b[k]
		if r.F1 > f1.F1 {
			f1 = r
		}
		if r.Brier < brier.Brier {
			brier = r
		}
		if r.AUC > auc.AUC {
			auc = r
		}
	}
	return f1, brier, auc
}
