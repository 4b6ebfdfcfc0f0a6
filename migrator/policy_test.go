package migrator

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pagecast/pagecast/bitmap"
	"github.com/pagecast/pagecast/trace"
)

// The predictive policy asks the predictor page by page and ranks every
// page for a closing round's cut only when a likely page needs it; its
// verdicts are still those of the plain reading, in which every page is
// forecast at every epoch and the cut ranked at once. Rounds of a real
// program's trace, with budgets that make the cut rise above the
// threshold and budgets that run out.
func TestPredictiveVerdictsAsRankedAtOnce(t *testing.T) {
	meta, epochs, _, err := trace.ReadFile(filepath.Join("..", "predictor", "testdata", "real", "awk.pct"))
	if err != nil {
		t.Fatal(err)
	}
	pages := meta.MemoryBytes / uint64(meta.PageSize)
	const epoch = 100 * time.Millisecond
	clock := NewVirtualClock(time.Unix(0, 0))
	cfg := Config{Clock: clock, Epoch: epoch, Threshold: 0.5}
	lazy, err := newPredictive(cfg, pages)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := newPredictive(cfg, pages)
	if err != nil {
		t.Fatal(err)
	}
	prob := make([]float32, pages)
	var cut float32 // the plain reading's cut
	// forecastAll is the plain reading of plain's last forecast.
	forecastAll := func() {
		if plain.model.Epochs() == 0 {
			return
		}
		plain.model.PredictHorizon(prob, plain.h)
		cut = plain.threshold
		if plain.closing && plain.budget < pages {
			cut = max(plain.threshold, budgetCut(prob, plain.budget))
		}
	}
	e := 224 // awk's boot done
	var held, ranked, rounds int
	for round, budget := range []uint64{40, 150, 300, 600, 150, 1200, 300, 4000, 150, 600} {
		pending := bitmap.New(pages)
		if round == 0 {
			for g := range pages {
				pending.Set(g)
			}
		} else {
			for _, ep := range epochs[e-30 : e] { // what the last rounds left
				for _, g := range ep.Pages {
					pending.Set(g)
				}
			}
		}
		plan := roundPlan{round: round + 1, window: 2 * time.Second, budget: budget, pending: pending, pendingN: pending.Count()}
		lazy.startRound(plan)
		plain.startRound(plan)
		forecastAll()
		if lazy.closing != plain.closing {
			t.Fatalf("round %d: closing %v and %v", round+1, lazy.closing, plain.closing)
		}
		visited := 0
		for g := range pages {
			if !pending.Has(g) {
				continue
			}
			if visited++; visited%300 == 0 && e < len(epochs) { // an epoch passes
				clock.Advance(epoch)
				lazy.observe(epochs[e].Pages)
				plain.observe(epochs[e].Pages)
				forecastAll()
				e++
			}
			want := sendLast
			switch v := prob[g]; {
			case plain.model.Epochs() == 0 || v < plain.threshold/4:
				want = sendNow
			case v >= cut && (!plain.closing || plain.held < plain.budget):
				plain.held++
				want = holdBack
			}
			rankedBefore := lazy.full
			if got := lazy.verdict(g); got != want {
				t.Fatalf("round %d, page %d (probability %v, cut %v, closing %v, %d of %d held): verdict %d, the plain reading's %d",
					round+1, g, prob[g], cut, plain.closing, plain.held, plain.budget, got, want)
			}
			if want == holdBack {
				held++
			}
			if !rankedBefore && lazy.full {
				ranked++
			}
		}
		rounds++
	}
	if held == 0 || ranked == 0 {
		t.Fatalf("%d rounds: %d pages held back, %d rankings: the test does not reach the cut", rounds, held, ranked)
	}
	t.Logf("%d rounds, %d epochs: %d pages held back, %d rankings", rounds, e-224, held, ranked)
}

// A profile warms the predictor in the migration's epochs: one recorded
// in epochs that make them up is joined to them; one in others is fed as
// it is, with a warning.
func TestPredictiveWarmEpochs(t *testing.T) {
	const pages = 64
	for _, tc := range []struct {
		profile time.Duration
		epochs  int  // the model observes
		warns   bool // that the lengths differ
	}{
		{100 * time.Millisecond, 12, false},
		{25 * time.Millisecond, 3, false},
		{50 * time.Millisecond, 6, false},
		{300 * time.Millisecond, 12, true},
		{40 * time.Millisecond, 12, true}, // 2.5 of them an epoch
	} {
		path := writeProfile(t, pages, tc.profile)
		var log bytes.Buffer
		p, err := newPredictive(Config{Epoch: 100 * time.Millisecond, Threshold: DefaultThreshold, Profile: path, Clock: NewVirtualClock(time.Unix(0, 0)),
			Log: slog.New(slog.NewTextHandler(&log, nil))}, pages)
		if err != nil {
			t.Fatal(err)
		}
		if got := p.model.Epochs(); got != tc.epochs {
			t.Errorf("profile of %v epochs: the model observed %d epochs, want %d", tc.profile, got, tc.epochs)
		}
		if warned := strings.Contains(log.String(), "not the migration's"); warned != tc.warns {
			t.Errorf("profile of %v epochs: warned %v, want %v: %s", tc.profile, warned, tc.warns, log.String())
		}
	}
}

// A damaged profile warms the predictor with its intact epochs, and says so.
func TestPredictiveWarmDamaged(t *testing.T) {
	const pages = 64
	path := writeProfile(t, pages, 100*time.Millisecond)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0xff // within an epoch's record
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	p, err := newPredictive(Config{Epoch: 100 * time.Millisecond, Threshold: DefaultThreshold, Profile: path, Clock: NewVirtualClock(time.Unix(0, 0)),
		Log: slog.New(slog.NewTextHandler(&log, nil))}, pages)
	if err != nil {
		t.Fatal(err)
	}
	if got := p.model.Epochs(); got == 0 || got >= 12 {
		t.Errorf("the model observed %d epochs of the damaged profile, want its intact ones (fewer than 12)", got)
	}
	if !strings.Contains(log.String(), "the profile is damaged") {
		t.Errorf("no warning of the damage: %q", log.String())
	}
}

// writeProfile writes a trace of 12 epochs of the given length of a guest
// of pages pages: two pages each, one of four that recur and a new one.
func writeProfile(t *testing.T, pages uint64, epoch time.Duration) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "profile.pct")
	w, err := trace.Create(path, trace.Meta{MemoryBytes: pages * PageSize, PageSize: PageSize, Epoch: epoch})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 12 {
		if err := w.Append(trace.Epoch{Index: uint64(i), Pages: []uint64{uint64(i % 4), 10 + uint64(i)}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}
