package migrator

import (
	"fmt"
	"strings"
	"time"

	"github.com/pagecast/pagecast/predictor"
	"github.com/pagecast/pagecast/trace"
)

// Modes a migration runs in.
const (
	ModePrecopy    = "precopy"
	ModePredictive = "predictive"
	ModeThrottle   = "throttle"
	// MECOM is not a mode of its own: "+mecom" after a mode compresses
	// its pages (Jin et al. 2009), e.g. "predictive+mecom".
	MECOM = "mecom"
)

// Modes lists the modes with a line on each, for --help.
var Modes = []struct{ Name, Description string }{
	{ModePrecopy, "Clark et al.: resend every dirtied page each round until the rest fits the downtime limit"},
	{ModePredictive, "Wei et al.: hold back pages the predictor expects to be dirtied again before the round ends"},
	{ModeThrottle, "Jin et al. 2011: pre-copy that slows the vCPUs each round so the dirty pages left fit the downtime limit by a chosen round"},
	{ModeTSMC, "Song et al. 2014: copy all once, stop and send the dirty bitmap, run on the destination and fetch dirty pages there"},
	{MECOM, "Jin et al. 2009: precopy with adaptive compression per page class; also as MODE+mecom, e.g. predictive+mecom"},
	{ModePredictive + "+" + ModeTSMC, "tsmc whose copy of all memory leaves out the pages the predictor expects to be dirtied before the switch-over: they go once, in stage 3"},
}

// mode is a parsed mode string: a page policy and whether pages are
// compressed.
type mode struct {
	policy string
	mecom  bool
	// postcopy: predictive+tsmc, TSMC's stages with the predictive
	// policy choosing what stage 1 leaves for stage 3.
	postcopy bool
}

// threeStage reports whether m runs TSMC's stages.
func (m mode) threeStage() bool { return m.policy == ModeTSMC || m.postcopy }

// CheckMode reports whether s names a mode Config.Mode accepts.
func CheckMode(s string) error {
	_, err := parseMode(s)
	return err
}

// parseMode reads "precopy", "predictive", "throttle", "mecom" (precopy
// with compression) and "MODE+mecom".
func parseMode(s string) (mode, error) {
	base, extra, combined := strings.Cut(s, "+")
	m := mode{policy: base}
	if base == MECOM && !combined {
		return mode{policy: ModePrecopy, mecom: true}, nil
	}
	if combined && base == ModePredictive && extra == ModeTSMC {
		return mode{policy: ModePredictive, postcopy: true}, nil
	}
	if combined {
		if extra != MECOM {
			return mode{}, fmt.Errorf("migration mode %q: only +%s combines with a mode", s, MECOM)
		}
		m.mecom = true
	}
	switch base {
	case ModePrecopy, ModePredictive, ModeThrottle:
		return m, nil
	case ModeTSMC:
		if m.mecom {
			return mode{}, fmt.Errorf("migration mode %q: %s does not combine with %s", s, ModeTSMC, MECOM)
		}
		return m, nil
	}
	return mode{}, fmt.Errorf("migration mode %q: want %s, %s, %s, %s or %s, optionally +%s, or %s+%s", s,
		ModePrecopy, ModePredictive, ModeThrottle, ModeTSMC, MECOM, MECOM, ModePredictive, ModeTSMC)
}

// A policy chooses, page by page, what a pre-copy round sends now. The
// engine tells it each epoch's dirty set and when rounds start; send is
// asked for every page the round covers, and a page it declines is kept
// for a later round (the stop-and-copy sends whatever is left).
type policy interface {
	observe(dirty []uint64)
	startRound(round int, window time.Duration, budget uint64)
	send(gfn uint64) bool
}

func newPolicy(cfg Config, m mode, pages uint64) (policy, error) {
	if m.policy == ModePredictive {
		return newPredictive(cfg, pages)
	}
	return precopy{}, nil
}

// precopy sends everything it is asked about.
type precopy struct{}

func (precopy) observe([]uint64)                      {}
func (precopy) startRound(int, time.Duration, uint64) {}
func (precopy) send(uint64) bool                      { return true }

// predictive defers a page when the predictor's probability that it is
// dirtied before the current round ends is at or above Threshold — sending
// it now would be wasted, it would go again next round. So that the
// stop-and-copy stays within the downtime limit, at most budget pages
// (what the link moves in the downtime limit, less a margin) are held back:
// when more pages than that are likely, the cut rises to the budget's most
// likely pages.
type predictive struct {
	model     *predictor.Model
	clock     Clock
	epoch     time.Duration
	threshold float32
	prob      []float32
	cut       float32
	horizon   int
	deadline  time.Time // when the current round is expected to end
	budget    uint64
	held      uint64 // pages deferred in the current round
}

func newPredictive(cfg Config, pages uint64) (*predictive, error) {
	p := &predictive{
		model:     predictor.NewModel(pages, predictor.Options{Threshold: -1}),
		clock:     cfg.Clock,
		epoch:     cfg.Epoch,
		threshold: float32(cfg.Threshold),
		prob:      make([]float32, pages),
		cut:       2, // nothing deferred before the first forecast
		horizon:   1,
	}
	if cfg.Profile != "" {
		if err := p.warm(cfg.Profile, pages); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// warm feeds the model a recorded profile of this VM (pagecast profile
// --out).
func (p *predictive) warm(path string, pages uint64) error {
	meta, epochs, _, err := trace.ReadFile(path)
	if err != nil {
		return fmt.Errorf("profile %s: %w", path, err)
	}
	if meta.MemoryBytes/uint64(meta.PageSize) != pages || meta.PageSize != PageSize {
		return fmt.Errorf("profile %s: recorded from a VM with %d pages of %d bytes, this one has %d of %d",
			path, meta.MemoryBytes/uint64(meta.PageSize), meta.PageSize, pages, PageSize)
	}
	for _, e := range epochs {
		p.model.Observe(e.Pages)
	}
	p.forecast()
	return nil
}

func (p *predictive) observe(dirty []uint64) {
	p.model.Observe(dirty)
	p.forecast()
}

func (p *predictive) startRound(_ int, window time.Duration, budget uint64) {
	p.deadline = p.clock.Now().Add(window)
	p.budget = budget
	p.held = 0
	p.forecast()
}

// forecast recomputes the probabilities for the time left in the round,
// in whole epochs (rounded up to a power of two so the model fits few
// horizons), and the cut that keeps deferrals within the budget.
func (p *predictive) forecast() {
	if p.model.Epochs() == 0 {
		return
	}
	left := p.deadline.Sub(p.clock.Now())
	h := 1
	for time.Duration(h)*p.epoch < left && h < predictor.MaxHorizon {
		h *= 2
	}
	p.horizon = h
	p.model.PredictHorizon(p.prob, h)
	p.cut = max(p.threshold, budgetCut(p.prob, p.budget))
}

// budgetCut is the probability of the budget-th most likely page, to a
// 1/1024 resolution: pages below it are not deferred. (Pages at it may be
// more than the budget; send stops deferring when the budget is used.)
func budgetCut(prob []float32, budget uint64) float32 {
	const buckets = 1024
	var hist [buckets + 1]uint64
	for _, v := range prob {
		hist[min(int(v*buckets), buckets)]++ // bucket b holds b/1024 <= v, so the cut below is exact
	}
	var n uint64
	for b := buckets; b >= 0; b-- {
		n += hist[b]
		if n >= budget {
			return float32(b) / buckets
		}
	}
	return 0
}

func (p *predictive) send(gfn uint64) bool {
	if p.prob[gfn] < p.cut || p.held >= p.budget {
		return true
	}
	p.held++
	return false
}
