package predictor

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/pagecast/pagecast/trace"
)

// CSVOptions describe the VM behind a CSV trace, which, unlike a trace
// file, does not say.
type CSVOptions struct {
	// MemoryBytes is the guest memory size; every page lies below it.
	MemoryBytes uint64
	// PageSize is the guest page size in bytes; 0 means 4096.
	PageSize uint32
	// Epoch is the length of one epoch; 0 means 100 ms.
	Epoch time.Duration
}

// IsCSV reports whether path names a CSV trace (.csv or .csv.gz) rather
// than a trace file.
func IsCSV(path string) bool {
	return strings.HasSuffix(path, ".csv") || strings.HasSuffix(path, ".csv.gz")
}

// ReadTrace reads a whole trace: a pagecast trace file, or, if IsCSV(path),
// an epoch,page CSV trace (gzip'd or not) of a VM that c describes. It
// returns the damage a trace file had; the epochs it returns are the intact
// ones.
func ReadTrace(path string, c CSVOptions) (trace.Meta, []trace.Epoch, []trace.Damage, error) {
	if !IsCSV(path) {
		return trace.ReadFile(path)
	}
	m := trace.Meta{MemoryBytes: c.MemoryBytes, PageSize: c.PageSize, Epoch: c.Epoch, Source: "csv " + path}
	if m.PageSize == 0 {
		m.PageSize = 4096
	}
	if m.Epoch == 0 {
		m.Epoch = 100 * time.Millisecond
	}
	f, err := os.Open(path)
	if err != nil {
		return m, nil, nil, err
	}
	defer f.Close()
	var buf bytes.Buffer
	w, err := trace.NewWriter(&buf, m)
	if err != nil {
		return m, nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	if _, err := trace.ImportCSV(f, w); err != nil {
		return m, nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	if err := w.Close(); err != nil {
		return m, nil, nil, err
	}
	r, err := trace.NewReader(&buf)
	if err != nil {
		return m, nil, nil, err
	}
	epochs, err := r.ReadAll()
	if err != nil {
		return m, nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	return r.Meta(), epochs, nil, nil
}

// Contenders returns the model, with options o, followed by Baselines: the
// predictors `pagecast predict eval` compares.
func Contenders(pages uint64, o Options) []Predictor {
	return append([]Predictor{NewModel(pages, o)}, Baselines(pages)...)
}

// EvaluateFile reads the trace file at path and evaluates Contenders on it
// (the model with default options, fitted for o's horizon). A damaged file
// is evaluated on the epochs that read; the skipped ones are not scored.
func EvaluateFile(path string, o EvalOptions) ([]Result, error) {
	m, epochs, _, err := trace.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if len(epochs) == 0 {
		return nil, fmt.Errorf("%s: no epochs to evaluate", path)
	}
	pages, pm := MapPages(epochs, m.Pages())
	o.Pages = pm
	return Evaluate(epochs, pages, Contenders(pages, Options{Horizon: max(o.Horizon, 1)}), o), nil
}
