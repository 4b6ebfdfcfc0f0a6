package service

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/pagecast/pagecast/predictor"
)

// VM is one virtual machine's forecast state.
type VM struct {
	ID       string
	Pages    uint64
	PageSize uint64
	Epoch    time.Duration
	Source   string

	// pm, if set, maps the guest's pages onto the model's (see
	// predictor.PageMap); Observe then takes dense indices.
	pm *predictor.PageMap

	mu    sync.Mutex
	model *predictor.Model
	probs []float32 // forecast for the next epoch, per model page
	// ahead[h] is the forecast for the next h epochs (h >= 2), made on
	// the first request for it after each epoch; nil until then.
	ahead      [predictor.MaxHorizon + 1][]float32
	aheadEpoch [predictor.MaxHorizon + 1]uint64 // epochs observed when ahead[h] was made
	askedAt    [predictor.MaxHorizon + 1]uint64 // epochs observed, plus 1, when horizon h was last asked for; 0 never
	expected   float64                          // its expected dirty pages (Model.Expected: before threshold tuning)
	workingSet int                              // pages with probability ≥ 0.5 in probs
	epochs     uint64                           // epochs observed
	predicted  float64                          // forecast dirty pages for the latest observed epoch
	actual     int                              // dirty pages in the latest observed epoch
	brier      float64                          // Brier score of the latest epoch's forecast
	brierSum   float64
	scored     uint64
	// predictedSum and actualSum add up predicted and actual over the
	// scored epochs: counters, which a scrape every few seconds does not
	// sample as it does the latest epoch's gauges (walk 95: one epoch in
	// 50 of 100 ms at a 5 s scrape).
	predictedSum float64
	actualSum    uint64
	hook         string   // how the VM's dirty pages were recorded (the trace's or collector's hook)
	regions      []uint64 // dirty pages of the latest epoch in each of the regions (see Regions)
	runs         []pageRun
}

// ErrVMExists is AddVM's error for an id the service has already.
var ErrVMExists = errors.New("already exists")

// ErrUnnamable is AddVM's error for an id the API's paths cannot name.
var ErrUnnamable = errors.New("the API's paths cannot name it (an empty, . or .. part): give it another name")

// Regions is how many equal parts of guest memory the per-region dirty
// counts split it into: a bounded number of series per VM, few enough for
// a heatmap row each.
const Regions = 32

// pageRun is a run of a PageMap: guest pages [start, start+n) are dense
// pages [at, at+n).
type pageRun struct{ start, at, n uint64 }

// Service holds the VMs and serves them.
type Service struct {
	log     *slog.Logger
	mu      sync.RWMutex
	vms     map[string]*VM
	replies budget // bytes held by large replies being written
}

// New returns an empty service.
func New(log *slog.Logger) *Service {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Service{log: log.With("component", "predictor-service"), vms: map[string]*VM{}, replies: newBudget(replyBudget)}
}

// AddVM registers a VM of pages pages; feed it with (*VM).Observe.
func (s *Service) AddVM(id string, pages, pageSize uint64, epoch time.Duration, source string) (*VM, error) {
	return s.AddMappedVM(id, pages, nil, pageSize, epoch, source)
}

// AddMappedVM registers a VM of pages pages whose model keeps pm's dense
// pages (nil: all of them); feed it with (*VM).Observe, dense indices.
func (s *Service) AddMappedVM(id string, pages uint64, pm *predictor.PageMap, pageSize uint64, epoch time.Duration, source string) (*VM, error) {
	// An id that is not UTF-8 (a trace's file name) would fail every
	// scrape of /metrics, for every VM: Prometheus refuses the label.
	id = strings.ToValidUTF8(id, "\uFFFD")
	if slices.ContainsFunc(strings.Split(id, "/"), func(part string) bool { return part == "" || part == "." || part == ".." }) {
		// Served, it could never be asked for: the API refuses a path
		// with an empty, . or .. part (walk 134: --name ..).
		return nil, fmt.Errorf("vm %q: %w", id, ErrUnnamable)
	}
	if pages == 0 || pageSize == 0 || epoch <= 0 {
		return nil, fmt.Errorf("vm %q: pages, page size and epoch must be positive", id)
	}
	model := pages
	if pm != nil {
		if pm.Total != pages {
			return nil, fmt.Errorf("vm %q: page map of %d pages for %d", id, pm.Total, pages)
		}
		model = pm.Len()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, dup := s.vms[id]; dup {
		return nil, fmt.Errorf("vm %q: %w", id, ErrVMExists)
	}
	vm := &VM{ID: id, Pages: pages, PageSize: pageSize, Epoch: epoch, Source: source, pm: pm,
		model: predictor.NewModel(model, predictor.Options{Threshold: servedThreshold}), probs: make([]float32, model),
		regions: make([]uint64, Regions)}
	if pm != nil {
		vm.model.SetOutside(pm.Far, pm.Outside()) // Far's forecast is for every page it stands for
		pm.Runs(func(start, at, n uint64) bool {
			vm.runs = append(vm.runs, pageRun{start, at, n})
			return true
		})
	}
	vm.predict()
	s.vms[id] = vm
	return vm, nil
}

// servedThreshold keeps the model's probabilities as fitted: the model
// moves some across 0.5 where that buys F1 (Options.Threshold), which
// predict eval scores, but the service's users take the probabilities as
// they are (a sum is an expected count), and on a guest whose writes
// nothing foretells that move took every page to 0.5 (a uniform writer of
// a quarter of its pages an epoch: Brier 0.233 against the rate's 0.187).
// The hot set's threshold is the caller's.
const servedThreshold = -1

// Observe closes one epoch of vm: scores the forecast made for it, then
// updates the model and forecasts the next.
func (vm *VM) Observe(dirty []uint64) { vm.ObserveParts([][]uint64{dirty}) }

// ObserveParts closes one epoch of vm given as its parts in time order,
// each ascending (see predictor.Model.ObserveParts): the model is told in
// which part each page was written.
func (vm *VM) ObserveParts(parts [][]uint64) {
	dirty := predictor.Union(parts)
	vm.mu.Lock()
	defer vm.mu.Unlock()
	var sq float64
	vm.eachPage(func(p float32, n uint64) {
		sq += float64(n) * float64(p) * float64(p)
	})
	// Brier over all pages: Σp² for clean pages, (1-p)² for dirty ones.
	for _, g := range dirty {
		if g < uint64(len(vm.probs)) {
			p := float64(vm.probs[g])
			sq += (1-p)*(1-p) - p*p
		}
	}
	vm.predicted, vm.actual = vm.expected, len(dirty)
	clear(vm.regions)
	for _, d := range dirty {
		if g, ok := vm.guestPage(d); ok && g < vm.Pages {
			vm.regions[g*Regions/vm.Pages]++
		}
	}
	vm.brier = sq / float64(vm.Pages)
	if vm.epochs > 0 {
		vm.brierSum += vm.brier
		vm.scored++
		vm.predictedSum += vm.predicted
		vm.actualSum += uint64(vm.actual)
	}
	vm.model.ObserveParts(parts)
	vm.predict()
	vm.epochs++
}

// predict forecasts the next epoch, once per epoch rather than on each
// request or scrape that reads it. Callers hold vm.mu (or own vm alone).
func (vm *VM) predict() {
	vm.model.Predict(vm.probs)
	vm.expected = vm.model.Expected()
	vm.workingSet = 0
	vm.eachPage(func(p float32, n uint64) {
		if p >= 0.5 {
			vm.workingSet += int(n)
		}
	})
}

// eachPage calls f with the forecast of the guest's pages and how many
// pages have it: each model page once, except that with a page map Far
// stands for every page outside the runs and the rest of its block for
// none.
func (vm *VM) eachPage(f func(p float32, n uint64)) { vm.eachPageOf(vm.probs, f) }

// eachPageOf is eachPage over a forecast probs of the model's pages.
func (vm *VM) eachPageOf(probs []float32, f func(p float32, n uint64)) {
	if vm.pm == nil {
		for _, p := range probs {
			f(p, 1)
		}
		return
	}
	for _, p := range probs[:vm.pm.Mapped()] {
		f(p, 1)
	}
	if rest := vm.Pages - vm.pm.Mapped(); rest > 0 {
		f(probs[vm.pm.Far], rest)
	}
}

// MaxHorizons is how many horizons past the next epoch a VM's forecasts
// are asked for within HorizonWindow epochs: each is fitted apart, at every
// refit, and kept as a forecast of 4 bytes a page. (One client asking for
// every horizon, 2 to 32, made each refit ten times as long, the VM's lock
// held, and kept 124 bytes a page; found by a review walk.)
const (
	MaxHorizons   = 4
	HorizonWindow = predictor.DefaultRefitEvery
)

// ErrTooManyHorizons is wrapped by admitHorizon's error.
var ErrTooManyHorizons = errors.New("too many horizons asked for")

// admitHorizon says whether horizon h may be forecast now: h = 1, or one
// of the MaxHorizons past it asked for within the last HorizonWindow
// epochs, or room for another among them. The forecasts kept of horizons
// no longer asked for are dropped.
func (vm *VM) admitHorizon(h int) error {
	if h <= 1 {
		return nil
	}
	vm.mu.Lock()
	defer vm.mu.Unlock()
	recent := func(k int) bool { return vm.askedAt[k] > 0 && vm.epochs+1-vm.askedAt[k] < HorizonWindow }
	var asked []string
	for k := 2; k <= predictor.MaxHorizon; k++ {
		switch {
		case k == h:
		case recent(k):
			asked = append(asked, strconv.Itoa(k))
		default:
			vm.ahead[k] = nil
		}
	}
	if !recent(h) && len(asked) >= MaxHorizons {
		return fmt.Errorf("%w: horizon=%d: this vm's forecasts are being made for horizons 1 and %s, and at most %d past 1 within %d epochs; ask for one of those, or after %d more epochs without them",
			ErrTooManyHorizons, h, strings.Join(asked, ", "), MaxHorizons, HorizonWindow, HorizonWindow)
	}
	vm.askedAt[h] = vm.epochs + 1
	return nil
}

// forecastFor returns the forecast, per model page, that each is dirtied
// within the next h epochs (1 <= h <= predictor.MaxHorizon): the one made
// as the last epoch closed for h = 1, otherwise made on the first request
// for h since then and kept until the next epoch. Callers hold vm.mu.
func (vm *VM) forecastFor(h int) []float32 {
	if h <= 1 {
		return vm.probs
	}
	if vm.ahead[h] == nil || vm.aheadEpoch[h] != vm.epochs {
		if vm.ahead[h] == nil {
			vm.ahead[h] = make([]float32, len(vm.probs))
		}
		vm.model.PredictHorizon(vm.ahead[h], h)
		for i, p := range vm.probs {
			// Dirtied within h epochs if within one: each horizon is
			// fitted apart, and a trace replayed anew (a loop) can
			// leave a longer one below.
			vm.ahead[h][i] = max(vm.ahead[h][i], p)
		}
		vm.aheadEpoch[h] = vm.epochs
	}
	return vm.ahead[h]
}

// guestPage returns the guest page of an index Observe takes: itself, or
// with a page map the guest page of dense index d (false for Far's block).
func (vm *VM) guestPage(d uint64) (uint64, bool) {
	if vm.pm == nil {
		return d, true
	}
	r := sort.Search(len(vm.runs), func(i int) bool { return vm.runs[i].at > d }) - 1
	if r < 0 || d-vm.runs[r].at >= vm.runs[r].n {
		return 0, false
	}
	return vm.runs[r].start + d - vm.runs[r].at, true
}

// SetHook records how the VM's dirty pages are recorded (a trace's hook,
// or the live collector's), for the metrics.
func (vm *VM) SetHook(hook string) {
	vm.mu.Lock()
	vm.hook = hook
	vm.mu.Unlock()
}

// modelPage returns the model's page of guest page g: itself, or with a
// page map its dense index (Far's for a page outside the runs).
func (vm *VM) modelPage(g uint64) uint64 {
	if vm.pm == nil {
		return g
	}
	return vm.pm.Dense(g)
}

// Forecast is what the service predicts for a VM's next epoch.
type Forecast struct {
	VM                   string  `json:"vm"`
	EpochsObserved       uint64  `json:"epochs_observed"`
	EpochSeconds         float64 `json:"epoch_seconds"`
	PredictedDirtyPages  float64 `json:"predicted_dirty_pages"`
	PredictedBytesPerSec float64 `json:"predicted_dirty_bytes_per_second"`
	WorkingSetPages      int     `json:"working_set_pages"` // pages with probability ≥ 0.5
	// The last epoch's figures are left out until an epoch has been
	// observed, and the Brier scores until one has been scored: a 0 would
	// read as a forecast met exactly.
	LastPredictedPages *float64 `json:"last_epoch_predicted_dirty_pages,omitempty"`
	LastActualPages    *int     `json:"last_epoch_actual_dirty_pages,omitempty"`
	LastBrier          *float64 `json:"last_epoch_brier,omitempty"`
	MeanBrier          *float64 `json:"mean_brier,omitempty"`
}

func (vm *VM) forecast() Forecast {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	f := Forecast{VM: vm.ID, EpochsObserved: vm.epochs, EpochSeconds: vm.Epoch.Seconds()}
	if vm.epochs > 0 {
		actual := vm.actual
		f.LastActualPages = &actual
	}
	if vm.scored > 0 {
		// Not the first epoch's: its forecast was the untrained prior,
		// which the sums leave out too (walk 133: a Brier score of 0.68
		// and an error of -44 898 pages at the start of the panels).
		predicted, last := vm.predicted, vm.brier
		f.LastPredictedPages, f.LastBrier = &predicted, &last
	}
	f.PredictedDirtyPages = vm.expected
	f.WorkingSetPages = vm.workingSet
	f.PredictedBytesPerSec = f.PredictedDirtyPages * float64(vm.PageSize) / vm.Epoch.Seconds()
	if vm.scored > 0 {
		mean := vm.brierSum / float64(vm.scored)
		f.MeanBrier = &mean
	}
	return f
}

// Handler is the HTTP API and /metrics.
func (s *Service) Handler() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(metrics{s})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/vms", s.listVMs)
	mux.HandleFunc("GET /v1/vms/{id}", s.vmForecast)
	mux.HandleFunc("GET /v1/vms/{id}/probabilities", s.probabilities)
	mux.HandleFunc("GET /v1/vms/{id}/hotset", s.hotset)
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead && knownPath(r.URL.Path) {
			w.Header().Set("Allow", "GET, HEAD")
			writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("%s %s: the API is read-only, GET only", r.Method, r.URL.Path))
			return
		}
		writeError(w, http.StatusNotFound, fmt.Sprintf("no such endpoint %s %s (see README: /v1/vms, /v1/vms/{id}, /v1/vms/{id}/probabilities, /v1/vms/{id}/hotset, /metrics)", r.Method, r.URL.Path))
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The mux redirects a path with // or /./ in it to its clean
		// form, in HTML (walk 129: 307 for /v1/vms//probabilities).
		if p := r.URL.Path; p != "/" && strings.TrimSuffix(p, "/") != path.Clean(p) {
			writeError(w, http.StatusNotFound, fmt.Sprintf("no such endpoint %s %s: the path has an empty, . or .. part", r.Method, p))
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// knownPath reports whether path is one of the API's endpoints.
func knownPath(path string) bool {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	switch {
	case path == "/metrics", path == "/v1/vms":
		return true
	case len(parts) == 3 && parts[0] == "v1" && parts[1] == "vms":
		return true
	case len(parts) == 4 && parts[0] == "v1" && parts[1] == "vms" && (parts[3] == "probabilities" || parts[3] == "hotset"):
		return true
	}
	return false
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = jsonEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = jsonEncoder(w).Encode(map[string]string{"error": msg})
}

// jsonEncoder writes JSON for people and programs, not for HTML: an
// error's & stays &, not \u0026.
func jsonEncoder(w io.Writer) *json.Encoder {
	e := json.NewEncoder(w)
	e.SetEscapeHTML(false)
	return e
}

func (s *Service) vm(w http.ResponseWriter, r *http.Request) (*VM, bool) {
	id := r.PathValue("id")
	s.mu.RLock()
	vm, ok := s.vms[id]
	s.mu.RUnlock()
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Sprintf("unknown vm %q", id))
	}
	return vm, ok
}

// takes checks that r's query names only the parameters an endpoint
// takes, each once, writing a 400 if not: a misspelt one (cout=16) would
// otherwise give the default silently, and of a repeated one the first
// would win.
func takes(w http.ResponseWriter, r *http.Request, names ...string) bool {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		// Go's own parse drops what it cannot read (count=1;start=2
		// served 4096 pages from page 0).
		hint := "" // the one mistake Go's message does not name
		if strings.Contains(r.URL.RawQuery, ";") {
			hint = " (separate parameters with &, not ;)"
		}
		writeError(w, http.StatusBadRequest, fmt.Sprintf("query %q: %v%s", r.URL.RawQuery, err, hint))
		return false
	}
	for name, vs := range q {
		switch {
		case len(vs) == 1 && vs[0] == "":
			writeError(w, http.StatusBadRequest, fmt.Sprintf("query parameter %s is empty: give a value, or leave it out for the default", name))
			return false
		case !slices.Contains(names, name) && len(names) == 0:
			writeError(w, http.StatusBadRequest, fmt.Sprintf("query parameter %s: %s takes none", name, r.URL.Path))
			return false
		case !slices.Contains(names, name):
			writeError(w, http.StatusBadRequest, fmt.Sprintf("unknown query parameter %s: %s takes %s", name, r.URL.Path, strings.Join(names, ", ")))
			return false
		case len(vs) > 1:
			writeError(w, http.StatusBadRequest, fmt.Sprintf("query parameter %s given %d times: give it once", name, len(vs)))
			return false
		}
	}
	return true
}

// queryUint reads an unsigned query parameter with a default and a bound.
func queryUint(r *http.Request, name string, def, max uint64) (uint64, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if errors.Is(err, strconv.ErrRange) {
		// A whole number, too large (walk 134: said not to be one).
		return 0, fmt.Errorf("query parameter %s=%q: at most %d", name, v, max)
	}
	if err != nil {
		return 0, fmt.Errorf("query parameter %s=%q: want a whole number, 0 or more", name, v)
	}
	if n > max {
		return 0, fmt.Errorf("query parameter %s=%d: at most %d", name, n, max)
	}
	return n, nil
}

// queryHorizon reads the horizon query parameter: the forecast is that a
// page is dirtied within the next horizon epochs, 1 (the default) to
// predictor.MaxHorizon.
func queryHorizon(r *http.Request) (int, error) {
	v := r.URL.Query().Get("horizon")
	if _, err := strconv.ParseUint(v, 10, 64); err != nil && v != "" {
		return 0, fmt.Errorf("query parameter horizon=%q: want 1 to %d epochs", v, predictor.MaxHorizon)
	}
	h, err := queryUint(r, "horizon", 1, predictor.MaxHorizon)
	if err != nil {
		return 0, err
	}
	if h == 0 {
		return 0, fmt.Errorf("query parameter horizon=0: want 1 to %d epochs", predictor.MaxHorizon)
	}
	return int(h), nil
}

func (s *Service) listVMs(w http.ResponseWriter, r *http.Request) {
	if !takes(w, r) {
		return
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	type entry struct {
		ID           string  `json:"id"`
		Pages        uint64  `json:"pages"`
		PageSize     uint64  `json:"page_size"`
		EpochSeconds float64 `json:"epoch_seconds"`
		Epochs       uint64  `json:"epochs_observed"`
		Source       string  `json:"source"`
	}
	out := []entry{}
	for _, vm := range s.vms {
		vm.mu.Lock()
		out = append(out, entry{vm.ID, vm.Pages, vm.PageSize, vm.Epoch.Seconds(), vm.epochs, vm.Source})
		vm.mu.Unlock()
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	writeJSON(w, out)
}

func (s *Service) vmForecast(w http.ResponseWriter, r *http.Request) {
	if !takes(w, r) {
		return
	}
	if vm, ok := s.vm(w, r); ok {
		writeJSON(w, vm.forecast())
	}
}

// maxRange bounds one probabilities or hotset reply (about 700 KB of
// JSON); clients page through larger ranges with start.
const maxRange = 1 << 16

func (s *Service) probabilities(w http.ResponseWriter, r *http.Request) {
	if !takes(w, r, "start", "count", "horizon") {
		return
	}
	vm, ok := s.vm(w, r)
	if !ok {
		return
	}
	start, err := queryUint(r, "start", 0, vm.Pages)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	count, err := queryUint(r, "count", min(vm.Pages-start, 4096), maxRange)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if start == vm.Pages && count > 0 {
		// Not "at most count=0" (walk 134).
		writeError(w, http.StatusBadRequest, fmt.Sprintf("start=%d is past the vm's last page, %d", start, vm.Pages-1))
		return
	}
	if start+count > vm.Pages {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("pages %d to %d run past the vm's %d pages (0 to %d): at most count=%d from start=%d", start, start+count-1, vm.Pages, vm.Pages-1, vm.Pages-start, start))
		return
	}
	h, err := queryHorizon(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if err := vm.admitHorizon(h); err != nil {
		writeError(w, http.StatusTooManyRequests, err.Error())
		return
	}
	release, ok := s.reserve(w, r, count*4)
	if !ok {
		return
	}
	defer release()
	probs, epochs := vm.rangeForecast(start, count, h)
	writeArrayReply(w, map[string]any{"vm": vm.ID, "start": start, "count": count, "horizon": h, "epochs_observed": epochs},
		"probabilities", len(probs), func(lo, hi int) any { return probs[lo:hi] })
}

// rangeForecast returns the forecast within h epochs of the count guest
// pages from start (within the VM), and the epochs observed.
func (vm *VM) rangeForecast(start, count uint64, h int) ([]float32, uint64) {
	probs := make([]float32, count)
	vm.mu.Lock()
	defer vm.mu.Unlock()
	switch {
	case h <= 1 || vm.ahead[h] != nil && vm.aheadEpoch[h] == vm.epochs:
		forecast := vm.forecastFor(h)
		for i := range probs {
			probs[i] = forecast[vm.modelPage(start+uint64(i))]
		}
	default:
		// A range further ahead is scored page by page, the same
		// probabilities as a whole forecast, which only a hot set needs.
		s := vm.model.Scorer(h)
		for i := range probs {
			d := vm.modelPage(start + uint64(i))
			probs[i] = max(s.Prob(d), vm.probs[d]) // as forecastFor
		}
	}
	return probs, vm.epochs
}

func (s *Service) hotset(w http.ResponseWriter, r *http.Request) {
	if !takes(w, r, "threshold", "limit", "start", "horizon") {
		return
	}
	vm, ok := s.vm(w, r)
	if !ok {
		return
	}
	threshold := 0.5
	if v := r.URL.Query().Get("threshold"); v != "" {
		t, err := strconv.ParseFloat(v, 64)
		if err != nil || !(t >= 0 && t <= 1) { // also NaN
			writeError(w, http.StatusBadRequest, fmt.Sprintf("query parameter threshold=%q: want a probability in [0, 1]", v))
			return
		}
		threshold = t
	}
	limit, err := queryUint(r, "limit", 10000, maxRange)
	if err != nil || limit == 0 {
		// With 0 no page could come, and no next to page on with.
		err = fmt.Errorf("query parameter limit=%s: want 1 to %d pages", r.URL.Query().Get("limit"), maxRange)
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	start, err := queryUint(r, "start", 0, vm.Pages)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	h, err := queryHorizon(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if err := vm.admitHorizon(h); err != nil {
		writeError(w, http.StatusTooManyRequests, err.Error())
		return
	}
	release, ok := s.reserve(w, r, limit*16) // the pages, as append grows them
	if !ok {
		return
	}
	defer release()
	pages, total := vm.hotPages(threshold, start, limit, h)
	reply := map[string]any{"vm": vm.ID, "threshold": threshold, "horizon": h, "total": total, "start": start}
	if n := len(pages); n > 0 && uint64(n) == limit {
		reply["next"] = pages[n-1] + 1 // more may follow: ask again with start=next
	}
	writeArrayReply(w, reply, "pages", len(pages), func(lo, hi int) any { return pages[lo:hi] })
}

// hotPages returns the first limit guest pages from start, in order, whose
// forecast within h epochs is at least threshold, and how many pages of
// the whole guest are.
func (vm *VM) hotPages(threshold float64, from, limit uint64, h int) (pages []uint64, total uint64) {
	pages = []uint64{}
	hot := func(p float32) bool { return float64(p) >= threshold }
	vm.mu.Lock()
	defer vm.mu.Unlock()
	forecast := vm.forecastFor(h)
	vm.eachPageOf(forecast, func(p float32, n uint64) {
		if hot(p) {
			total += n
		}
	})
	if vm.pm == nil {
		for g := from; g < uint64(len(forecast)) && uint64(len(pages)) < limit; g++ {
			if hot(forecast[g]) {
				pages = append(pages, g)
			}
		}
	} else {
		// Guest order: the pages between runs (all Far's) and the runs.
		far := hot(forecast[vm.pm.Far])
		next := from
		gap := func(to uint64) {
			for ; far && next < to && uint64(len(pages)) < limit; next++ {
				pages = append(pages, next)
			}
		}
		vm.pm.Runs(func(start, at, n uint64) bool {
			if start+n <= from {
				return true
			}
			gap(start)
			for i := range n {
				if uint64(len(pages)) == limit {
					return false
				}
				if start+i >= from && hot(forecast[at+i]) {
					pages = append(pages, start+i)
				}
			}
			next = max(next, start+n)
			return true
		})
		gap(vm.Pages)
	}
	return pages, total
}

// metrics exports every VM's forecast against what happened.
type metrics struct{ s *Service }

var (
	descPredicted = prometheus.NewDesc("pagecast_predicted_dirty_pages",
		"Pages the model predicted would be dirtied in the latest closed epoch (sum of probabilities).", []string{"vm"}, nil)
	descActual = prometheus.NewDesc("pagecast_actual_dirty_pages",
		"Pages dirtied in the latest closed epoch.", []string{"vm"}, nil)
	descNext = prometheus.NewDesc("pagecast_forecast_dirty_pages",
		"Pages the model predicts will be dirtied in the coming epoch.", []string{"vm"}, nil)
	descRate = prometheus.NewDesc("pagecast_forecast_dirty_bytes_per_second",
		"Predicted dirty rate for the coming epoch.", []string{"vm"}, nil)
	descBrier = prometheus.NewDesc("pagecast_prediction_brier_score",
		"Brier score of the latest closed epoch's forecast (mean squared error over pages).", []string{"vm"}, nil)
	descErr = prometheus.NewDesc("pagecast_prediction_error_pages",
		"Predicted minus actual dirty pages in the latest closed epoch.", []string{"vm"}, nil)
	descEpochs = prometheus.NewDesc("pagecast_predictor_epochs_total",
		"Epochs the model has observed.", []string{"vm"}, nil)
	descPredictedSum = prometheus.NewDesc("pagecast_predicted_dirty_pages_total",
		"Pages the model predicted would be dirtied, summed over the epochs scored (every one but the first).", []string{"vm"}, nil)
	descActualSum = prometheus.NewDesc("pagecast_actual_dirty_pages_total",
		"Pages dirtied, summed over the epochs scored (every one but the first).", []string{"vm"}, nil)
	descActualRate = prometheus.NewDesc("pagecast_actual_dirty_bytes_per_second",
		"Bytes dirtied per second in the latest closed epoch.", []string{"vm"}, nil)
	descWorkingSet = prometheus.NewDesc("pagecast_forecast_working_set_bytes",
		"Memory the model predicts will be dirtied in the coming epoch with probability 0.5 or more.", []string{"vm"}, nil)
	descRegion = prometheus.NewDesc("pagecast_region_dirty_pages",
		fmt.Sprintf("Pages dirtied in the latest closed epoch in each of %d equal regions of guest memory; region is the region's first guest-physical address.", Regions),
		[]string{"vm", "region"}, nil)
	descVMInfo = prometheus.NewDesc("pagecast_predictor_vm_info",
		"How the VM's dirty pages were recorded: the hook (an eBPF hook or tcg-plugin; value 1).", []string{"vm", "hook"}, nil)
)

// Descs are every metric the service exports.
var Descs = []*prometheus.Desc{descPredicted, descActual, descNext, descRate, descBrier, descErr, descEpochs,
	descPredictedSum, descActualSum, descActualRate, descWorkingSet, descRegion, descVMInfo}

func (m metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range Descs {
		ch <- d
	}
}

func (m metrics) Collect(ch chan<- prometheus.Metric) {
	m.s.mu.RLock()
	defer m.s.mu.RUnlock()
	for _, vm := range m.s.vms {
		f := vm.forecast()
		g := func(d *prometheus.Desc, v float64, labels ...string) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, append([]string{vm.ID}, labels...)...)
		}
		g(descNext, f.PredictedDirtyPages)
		g(descRate, f.PredictedBytesPerSec)
		if f.LastActualPages != nil {
			// Of the last epoch: none before the first (they were 0,
			// which a panel drew as a forecast met exactly).
			actual := float64(*f.LastActualPages)
			g(descActual, actual)
			g(descActualRate, actual*float64(vm.PageSize)/vm.Epoch.Seconds())
			g(descWorkingSet, float64(f.WorkingSetPages)*float64(vm.PageSize))
			if f.LastPredictedPages != nil {
				// The forecast's: none for the first epoch, as the sums.
				g(descPredicted, *f.LastPredictedPages)
				g(descErr, *f.LastPredictedPages-actual)
			}
		}
		if f.LastBrier != nil {
			g(descBrier, *f.LastBrier)
		}
		vm.mu.Lock()
		regions, hook := append([]uint64(nil), vm.regions...), vm.hook
		// The sums and the epochs of one moment: a dashboard divides
		// them (read apart, an epoch between put them one apart).
		predictedSum, actualSum, epochs := vm.predictedSum, vm.actualSum, vm.epochs
		vm.mu.Unlock()
		ch <- prometheus.MustNewConstMetric(descEpochs, prometheus.CounterValue, float64(epochs), vm.ID)
		ch <- prometheus.MustNewConstMetric(descPredictedSum, prometheus.CounterValue, predictedSum, vm.ID)
		ch <- prometheus.MustNewConstMetric(descActualSum, prometheus.CounterValue, float64(actualSum), vm.ID)
		if f.EpochsObserved > 0 {
			width := len(fmt.Sprintf("%x", vm.Pages*vm.PageSize-1))
			for r, n := range regions {
				start := uint64(r) * vm.Pages / Regions * vm.PageSize
				ch <- prometheus.MustNewConstMetric(descRegion, prometheus.GaugeValue, float64(n), vm.ID, fmt.Sprintf("0x%0*x", width, start))
			}
		}
		if hook != "" {
			g(descVMInfo, 1, hook)
		}
	}
}
