package migrator

import (
	"fmt"
	"log/slog"
	"math/bits"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/pagecast/pagecast/bitmap"
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
	// Postcopy is not a mode of its own either: "+postcopy" after
	// precopy, predictive or mecom runs that mode's rounds while they
	// converge and switches to post-copy when they stop (a round that
	// does not halve the pages left, or the round cap), as QEMU's
	// postcopy-ram with migrate-start-postcopy does, or KubeVirt's
	// allowPostCopy.
	Postcopy = "postcopy"
)

// Modes lists the modes with a line on each, for --help.
var Modes = []struct{ Name, Description string }{
	{ModePrecopy, "Clark et al.: resend every dirtied page each round until the rest fits the downtime limit"},
	{ModePredictive, "Wei et al.: hold back pages the predictor expects to be dirtied again before the round ends"},
	{ModeThrottle, "Jin et al. 2011: pre-copy that slows the vCPUs each round so the dirty pages left fit the downtime limit by a chosen round"},
	{ModeTSMC, "Song et al. 2014: copy all once, stop and send the dirty bitmap, run on the destination and fetch dirty pages there"},
	{MECOM, "Jin et al. 2009: precopy with adaptive compression per page class; also as MODE+mecom, e.g. predictive+mecom or tsmc+mecom (tsmc: stages 1 and 2 compressed)"},
	{ModePredictive + "+" + ModeTSMC, "tsmc whose copy of all memory leaves out the pages the predictor expects to be dirtied before the switch-over: they go once, in stage 3"},
	{"MODE+" + Postcopy, "precopy, predictive or mecom (also predictive+mecom) rounds while they converge; once a round fails to halve the pages left, or at the round cap, stop, send the state and the dirty bitmap, and run on the destination as tsmc's stage 3 does"},
}

// mode is a parsed mode string: a page policy and whether pages are
// compressed.
type mode struct {
	policy string
	mecom  bool
	// postcopy: predictive+tsmc, TSMC's stages with the predictive
	// policy choosing what stage 1 leaves for stage 3.
	postcopy bool
	// fallback: MODE+postcopy, pre-copy rounds that switch to post-copy
	// (TSMC's stages 2 and 3) when they stop converging.
	fallback bool
}

// stalled reports whether pre-copy has stopped converging, for
// MODE+postcopy's switch (pagecast's engine and QEMU's alike): a pass
// that set out with before pages left more than half of them pending
// (after). Each further pass would then send about what post-copy sends
// once, and at that pace would need several more.
func stalled(before, after uint64) bool { return 2*after > before }

// threeStage reports whether m runs TSMC's stages.
func (m mode) threeStage() bool { return m.policy == ModeTSMC || m.postcopy }

// CheckMode reports whether s names a mode Config.Mode accepts.
func CheckMode(s string) error {
	_, err := parseMode(s)
	return err
}

// NeedsPostcopy reports whether mode s may run the guest on the
// destination before all its memory is there (tsmc, predictive+tsmc,
// MODE+postcopy), which the destination must support.
func NeedsPostcopy(s string) bool {
	m, err := parseMode(s)
	return err == nil && (m.threeStage() || m.fallback)
}

// StartsPostcopyOnDemand reports whether a migration in mode s takes
// migrate-start-postcopy while in pre-copy (MODE+postcopy).
func StartsPostcopyOnDemand(s string) bool {
	m, err := parseMode(s)
	return err == nil && m.fallback
}

// Codes reports whether mode s compresses pages with MECOM (mecom,
// MODE+mecom).
func Codes(s string) bool {
	m, err := parseMode(s)
	return err == nil && m.mecom
}

// Throttles reports whether mode s slows the guest's vCPUs (throttle,
// throttle+mecom), which a QEMU source's guest needs privileges for.
func Throttles(s string) bool {
	m, err := parseMode(s)
	return err == nil && m.policy == ModeThrottle
}

// parseMode reads a mode: "precopy", "predictive", "throttle", "tsmc" or
// "mecom" (precopy with compression), then, in this order, "+tsmc"
// (predictive only), "+mecom" (any but mecom itself) and "+postcopy"
// (precopy, predictive or mecom, without +tsmc).
func parseMode(s string) (mode, error) {
	parts := strings.Split(s, "+")
	m := mode{policy: parts[0]}
	if m.policy == MECOM {
		m = mode{policy: ModePrecopy, mecom: true}
	}
	bad := func(why string) (mode, error) {
		return mode{}, fmt.Errorf("migration mode %q: %s", s, why)
	}
	switch parts[0] {
	case ModePrecopy, ModePredictive, ModeThrottle, ModeTSMC, MECOM:
	default:
		return bad(fmt.Sprintf("want %s, %s, %s, %s or %s, then optionally +%s (after %s), +%s, +%s (after %s, %s or %s)",
			ModePrecopy, ModePredictive, ModeThrottle, ModeTSMC, MECOM, ModeTSMC, ModePredictive, MECOM, Postcopy,
			ModePrecopy, ModePredictive, MECOM))
	}
	order := []string{ModeTSMC, MECOM, Postcopy}
	next := 0
	for _, extra := range parts[1:] {
		i := slices.Index(order[next:], extra)
		if i < 0 {
			return bad(fmt.Sprintf("+%s: want +%s, +%s or +%s, each once and in that order", extra, ModeTSMC, MECOM, Postcopy))
		}
		next += i + 1
		switch extra {
		case ModeTSMC:
			if m.policy != ModePredictive {
				return bad(fmt.Sprintf("+%s combines with %s only (%s is three-stage copy itself)", ModeTSMC, ModePredictive, ModeTSMC))
			}
			m.postcopy = true
		case MECOM:
			if m.mecom {
				return bad("+" + MECOM + " twice")
			}
			m.mecom = true
		case Postcopy:
			if m.policy != ModePrecopy && m.policy != ModePredictive || m.postcopy {
				return bad(fmt.Sprintf("+%s follows %s, %s or %s: %s slows the guest until pre-copy converges, and %s switches to post-copy after one pass already",
					Postcopy, ModePrecopy, ModePredictive, MECOM, ModeThrottle, ModeTSMC))
			}
			m.fallback = true
		}
	}
	return m, nil
}

// A policy chooses, page by page, when a pre-copy round sends a page. The
// engine tells it each epoch's dirty set and when rounds start, and asks
// it about every page the round covers: send it now (in address order),
// last (after every page sent now, so it has the least time to be dirtied
// again before the round ends), or not in this round (it stays pending for
// a later round or the stop-and-copy, which sends whatever is left).
type policy interface {
	observe(dirty []uint64)
	startRound(plan roundPlan)
	verdict(gfn uint64) verdict
}

// A verdict is a policy's answer for one page in a pre-copy pass.
type verdict uint8

const (
	sendNow verdict = iota
	sendLast
	holdBack
)

// roundPlan is what the engine knows as a pre-copy round starts.
type roundPlan struct {
	round    int
	window   time.Duration  // how long sending everything pending takes at the link's rate
	budget   uint64         // pages the stop-and-copy may hold within the downtime limit
	pending  *bitmap.Bitmap // the pages the round covers
	pendingN uint64
	last     bool // the stop-and-copy follows this round whatever is left
}

func newPolicy(cfg Config, m mode, pages uint64) (policy, error) {
	if m.policy == ModePredictive {
		return newPredictive(cfg, pages)
	}
	return precopy{}, nil
}

// precopy sends everything in address order.
type precopy struct{}

func (precopy) observe([]uint64)       {}
func (precopy) startRound(roundPlan)   {}
func (precopy) verdict(uint64) verdict { return sendNow }

// predictive uses the predictor's probability that a page is dirtied
// before the current round ends (Wei et al.). Sending such a page now is
// likely wasted: it would go again next round.
//
// Which way it is held depends on where the round stands. While the pages
// pending that the forecast does not expect to be dirtied are more than
// the stop-and-copy could take, the migration cannot end with this round,
// so holding a page back costs nothing: it is pending next round either
// way. Every page at or above Threshold is held back, however many. Once
// they fit (the closing round), what is held back lands in the
// stop-and-copy, so at most budget pages are (the cut rises to the
// budget's most likely pages), and the other likely pages go last in the
// round, where they have the least time to be dirtied again before the
// switch-over. The pages not expected to be dirtied must fit half the
// budget for a round to be a closing round. One that fails to close (the
// guest dirtied more than the stop-and-copy could take meanwhile) resent
// the likely pages for nothing, so after the first such failure the bar is
// halved again. In every round, pages with a lesser but real
// chance (Threshold/4 and up) go last.
type predictive struct {
	model     *predictor.Model
	clock     Clock
	epoch     time.Duration
	threshold float32
	h         int               // the horizon of the last forecast, in epochs
	scorer    *predictor.Scorer // the last forecast, page by page; nil before the first
	prob      []float32         // and every page's, made for a closing round's cut only (see fill)
	full      bool              // prob holds the last forecast
	rank      bool              // cut is yet to be ranked (see heldBack)
	cut       float32           // held back at or above
	lastCut   float32           // sent last at or above
	closing   bool
	failed    uint      // closing rounds that did not close
	tried     bool      // the forecast made this round a closing round
	deadline  time.Time // when the current round is expected to end
	budget    uint64    // pages that may be held back in this round
	held      uint64    // pages held back in the current round
}

func newPredictive(cfg Config, pages uint64) (*predictive, error) {
	p := &predictive{
		model:     predictor.NewModel(pages, predictor.Options{Threshold: -1}),
		clock:     cfg.Clock,
		epoch:     cfg.Epoch,
		threshold: float32(cfg.Threshold),
		cut:       2, // nothing deferred before the first forecast
		lastCut:   2,
	}
	if cfg.Profile != "" {
		if err := p.warm(cfg.Profile, pages, cfg.Log); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// ProfileFits says whether a profile recorded in epochs of profile can
// warm a migration's predictor in epochs of epoch: the same, or a whole
// number of them to one of the migration's.
func ProfileFits(profile, epoch time.Duration) bool {
	return profile > 0 && profile <= epoch && epoch%profile == 0
}

// ProfileDamaged is the warning for a damaged profile.
const ProfileDamaged = "the profile is damaged: the predictor learns from its intact epochs only (see pagecast trace info)"

// ProfileMisfit is the warning for a profile whose epochs do not fit.
const ProfileMisfit = "the profile's epochs are not the migration's: the predictor learns rates per epoch from it that it then applies to another length (record the profile with pagecast profile --epoch the migration's)"

// warm feeds the model a recorded profile of this VM (pagecast profile
// --out), in the migration's epochs: a profile recorded in epochs that
// make up the migration's whole (25 ms for 100 ms) is joined to them; one
// in others is fed as it is, and log says so.
func (p *predictive) warm(path string, pages uint64, log *slog.Logger) error {
	meta, epochs, damage, err := trace.ReadFile(path)
	if err != nil {
		return fmt.Errorf("profile %s: %w", path, err)
	}
	if len(damage) > 0 && log != nil {
		log.Warn(ProfileDamaged,
			"profile", path, "epochs", len(epochs), "damaged_stretches", len(damage), "first", damage[0].String())
	}
	if meta.MemoryBytes/uint64(meta.PageSize) != pages || meta.PageSize != PageSize {
		return fmt.Errorf("profile %s: recorded from a VM with %d pages of %d bytes, this one has %d of %d",
			path, meta.MemoryBytes/uint64(meta.PageSize), meta.PageSize, pages, PageSize)
	}
	switch {
	case meta.Epoch == p.epoch:
	case ProfileFits(meta.Epoch, p.epoch):
		epochs, _ = predictor.GroupEpochs(epochs, int(p.epoch/meta.Epoch))
	case log != nil:
		log.Warn(ProfileMisfit, "profile", path, "profile_epoch", meta.Epoch, "epoch", p.epoch)
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

func (p *predictive) startRound(plan roundPlan) {
	p.deadline = p.clock.Now().Add(plan.window)
	p.budget = plan.budget
	p.held = 0
	if p.closing && p.tried {
		p.failed++ // the last round was to close the migration, and did not
	}
	p.closing, p.tried = true, false
	p.predict()
	if p.model.Epochs() > 0 && !plan.last && plan.pending != nil {
		likely := likelyPending(plan.pending, p.probability, p.threshold)
		p.closing = plan.pendingN-likely <= plan.budget>>min(p.failed+1, 2)
		p.tried = p.closing
	}
	p.setCut()
}

// touchOrder lists the pages of dirty likeliest to be written in the next
// epoch first (to 1/16 of probability; address order within), the order
// predictive+tsmc pushes them after the switch-over: a page the guest
// touches before it arrives must be asked for, and the guest waits.
func (p *predictive) touchOrder(dirty *bitmap.Bitmap) []uint64 {
	if p.model.Epochs() == 0 {
		return nil
	}
	next := p.model.Scorer(1)
	const buckets = 16
	var byBucket [buckets][]uint64
	dirty.ForEach(func(g uint64) {
		b := buckets - 1 - min(int(next.Prob(g)*buckets), buckets-1)
		byBucket[b] = append(byBucket[b], g)
	})
	order := make([]uint64, 0, dirty.Count())
	for _, pages := range byBucket {
		order = append(order, pages...)
	}
	return order
}

// likelyPending counts the pending pages at least threshold likely to be
// dirtied.
func likelyPending(pending *bitmap.Bitmap, prob func(uint64) float32, threshold float32) uint64 {
	var n uint64
	for wi, w := range pending.Words() {
		for w != 0 {
			b := bits.TrailingZeros64(w)
			w &= w - 1
			if prob(uint64(wi*64+b)) >= threshold {
				n++
			}
		}
	}
	return n
}

// forecast recomputes the probabilities for the time left in the round
// and the cuts.
func (p *predictive) forecast() {
	p.predict()
	p.setCut()
}

// predict forecasts for the time left in the round, in whole epochs
// (rounded up to a power of two so the model fits few horizons), page by
// page as the round asks: what costs the pages the round covers, not
// every page, each epoch.
func (p *predictive) predict() {
	p.full = false
	if p.model.Epochs() == 0 {
		return
	}
	left := p.deadline.Sub(p.clock.Now())
	p.h = 1
	for time.Duration(p.h)*p.epoch < left && p.h < predictor.MaxHorizon {
		p.h *= 2
	}
	p.scorer = p.model.Scorer(p.h)
}

// fill makes every page's probability, for a closing round's cut.
func (p *predictive) fill() {
	if p.prob == nil {
		p.prob = make([]float32, p.model.Pages())
	}
	p.model.PredictHorizon(p.prob, p.h)
	p.full = true
}

// probability is page gfn's probability in the last forecast; 0 before
// the first.
func (p *predictive) probability(gfn uint64) float32 {
	switch {
	case p.full:
		return p.prob[gfn]
	case p.scorer == nil:
		return 0
	}
	return p.scorer.Prob(gfn)
}

// setCut sets the probabilities at which pages are held back and sent
// last: in the closing round, held back only within the budget, the cut
// rising to the budget's likeliest pages (ranked when first needed: see
// heldBack).
func (p *predictive) setCut() {
	if p.model.Epochs() == 0 {
		return
	}
	p.lastCut = p.threshold / 4
	p.cut = p.threshold
	// A budget of every page would put budgetCut at 0.
	p.rank = p.closing && p.budget < p.model.Pages()
}

// heldBack says whether a page of probability v, at least the threshold,
// is held back. In a closing round that is when v is at the cut and the
// budget is not used up; the cut ranks every page's probability, a full
// forecast, so it is made only when a page asks for it: while none of the
// pages the round reaches is likely, or once the budget is used up, it
// costs nothing.
func (p *predictive) heldBack(v float32) bool {
	if p.closing && p.held >= p.budget {
		return false
	}
	if p.rank {
		p.fill()
		p.cut = max(p.threshold, budgetCut(p.prob, p.budget))
		p.rank = false
	}
	return v >= p.cut
}

// budgetCut is the probability of the budget-th most likely page, to a
// 1/1024 resolution: pages below it are not deferred. (Pages at it may be
// more than the budget; send stops deferring when the budget is used.)
// A VM's probabilities are counted a part a core at once.
func budgetCut(prob []float32, budget uint64) float32 {
	const buckets = 1024
	parts := max(min(runtime.GOMAXPROCS(0), len(prob)/(1<<20)), 1) // a part at least 4 GiB of guest
	counts := make([][buckets + 1]uint64, parts)
	count := func(i int) {
		hist := &counts[i]
		for _, v := range prob[len(prob)*i/parts : len(prob)*(i+1)/parts] {
			hist[min(int(v*buckets), buckets)]++ // bucket b holds b/1024 <= v, so the cut below is exact
		}
	}
	var wg sync.WaitGroup
	for i := 1; i < parts; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			count(i)
		}()
	}
	count(0)
	wg.Wait()
	hist := &counts[0]
	for _, c := range counts[1:] {
		for b := range hist {
			hist[b] += c[b]
		}
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

func (p *predictive) verdict(gfn uint64) verdict {
	v := p.probability(gfn)
	switch {
	case v < p.lastCut:
		return sendNow
	case v >= p.threshold && p.heldBack(v):
		p.held++
		return holdBack
	}
	return sendLast
}
