package predictor

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/pagecast/pagecast/trace"
)

// A CSV trace and the trace file imported from it read the same, and
// EvaluateFile scores the model and the baselines on the file in one call.
func TestReadTraceAndEvaluateFile(t *testing.T) {
	dir := t.TempDir()
	tr := synthetic("hotset", 40, 3)
	csv := filepath.Join(dir, "t.csv")
	f, err := os.Create(csv)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("epoch,page\n")
	for _, e := range tr {
		for _, p := range e.Pages {
			fmt.Fprintf(f, "%d,%d\n", e.Index, p)
		}
	}
	f.Close()
	meta, fromCSV, damage, err := ReadTrace(csv, CSVOptions{MemoryBytes: synthPages * 4096})
	if err != nil || len(damage) > 0 {
		t.Fatal(err, damage)
	}
	if meta.Pages() != synthPages || meta.Epoch != 100*time.Millisecond || len(fromCSV) != len(tr) {
		t.Fatalf("meta %+v, %d epochs", meta, len(fromCSV))
	}
	for i := range tr {
		if !slices.Equal(fromCSV[i].Pages, tr[i].Pages) {
			t.Fatalf("epoch %d differs", i)
		}
	}
	if _, _, _, err := ReadTrace(csv, CSVOptions{MemoryBytes: 4096}); err == nil {
		t.Error("pages beyond the memory size: no error")
	}

	pct := filepath.Join(dir, "t.pct")
	w, err := trace.Create(pct, meta)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range fromCSV {
		if err := w.Append(e); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	res, err := EvaluateFile(pct, EvalOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := Evaluate(tr, synthPages, Contenders(synthPages, Options{}), EvalOptions{})
	if len(res) != 4 || res[0].Name != "model" || res[0].F1 != want[0].F1 || res[0].Brier != want[0].Brier {
		t.Errorf("EvaluateFile: %+v", res[0])
	}
	if _, err := EvaluateFile(csv, EvalOptions{}); err == nil {
		t.Error("EvaluateFile on a CSV: no error")
	}
}
