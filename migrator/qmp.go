package migrator

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/pagecast/pagecast/qmpserver"
)

// Controller serves a guest's migration commands over QMP, with QEMU's names
// and shapes: migrate, query-migrate, migrate-set-parameters,
// query-migrate-parameters and migrate_cancel. pagecast's own parameters
// are x-pagecast-*.
type Controller struct {
	g      Guest
	log    *slog.Logger
	tls    *tls.Config
	choose Chooser // mode auto; nil: refused

	mu      sync.Mutex
	cfg     Config
	current *Migration
	// choosing is set while mode auto watches the guest before a
	// migration: query-migrate's answer meanwhile, "setup", as QEMU's
	// once migrate is sent, in mode auto, for this URI.
	choosing *choosingInfo
	// stopChoosing ends that watch (migrate_cancel), nothing migrated;
	// chosen is closed when it has ended.
	stopChoosing context.CancelFunc
	chosen       chan struct{}
	closed       bool // Close: no migration starts
	// incoming is the migration this VM received, query-migrate's
	// answer until a migration out is asked for (nil: none).
	incoming *incomingInfo
	// pause carries migrate-pause to the incoming migration
	// (PauseRequests).
	pause chan struct{}
}

// choosingInfo is query-migrate's answer while mode auto watches the guest
// before it starts the migration: "setup", as QEMU says once migrate is
// sent (walk 151: the previous migration's "failed" stayed the answer
// through the watch, and a script polling took the new one for failed).
type choosingInfo struct {
	Status   string `json:"status"`
	Pagecast struct {
		Mode        string `json:"mode"`
		Bandwidth   uint64 `json:"bandwidth"`
		Destination string `json:"destination"`
	} `json:"x-pagecast"`
}

// incomingInfo is query-migrate's answer on a destination whose incoming
// migration completed: "completed", as QEMU's destination answers, and
// what the destination saw under x-pagecast.incoming (walk 138: {}, and
// the guest's waits only in its log).
type incomingInfo struct {
	Status   string          `json:"status"`
	Pagecast *incomingReport `json:"x-pagecast,omitempty"` // once completed
}

type incomingReport struct {
	Incoming incomingExtra `json:"incoming"`
}

type incomingExtra struct {
	Mode      string `json:"mode"`
	Rounds    int    `json:"rounds"`
	Pages     uint64 `json:"pages"`      // received whole
	ZeroPages uint64 `json:"zero-pages"` // received as zero runs
	Bytes     uint64 `json:"bytes"`      // read from the wire
	TotalTime int64  `json:"total-time"` // ms, from the source's hello to the end
	Pulled    uint64 `json:"pulled,omitempty"`
	Pushed    uint64 `json:"pushed,omitempty"`
	// FaultTime is the guest's vCPUs' wait for missing pages in
	// post-copy, ms summed over them: the source's x-pagecast.fault-time.
	FaultTime int64 `json:"fault-time,omitempty"`
	Verified  bool  `json:"verified"`
	Paused    bool  `json:"held-paused,omitempty"`
}

// Received has query-migrate report res, the incoming migration this VM
// took, until a migration out is asked for.
func (c *Controller) Received(res Received) {
	in := &incomingInfo{Status: StatusCompleted, Pagecast: &incomingReport{}}
	in.Pagecast.Incoming = incomingExtra{Mode: res.Mode, Rounds: res.Rounds, Pages: res.Pages, ZeroPages: res.ZeroPages,
		Bytes: res.Bytes, TotalTime: res.Elapsed.Milliseconds(), Pulled: res.Pulled, Pushed: res.Pushed,
		FaultTime: res.Waited.Milliseconds(), Verified: res.Verified, Paused: res.HeldPaused}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.incoming = in
}

// Receiving has query-migrate report the status of the incoming migration
// under way (ReceiveConfig.Status), as QEMU's destination does: active,
// postcopy-active, postcopy-paused while the source is lost and the
// guest waits on its missing pages; "" when none comes (a source went
// before it sent a page: the VM waits for another).
func (c *Controller) Receiving(status string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.incoming = nil
	if status != "" {
		c.incoming = &incomingInfo{Status: status}
	}
}

// ModeAuto is the mode a Chooser turns into one of the others when the
// migration starts.
const ModeAuto = "auto"

// Chooser picks the mode of a migration asked for with mode auto, from
// the guest as it runs and the migration's configuration (link cap,
// downtime limit, round cap). Its report is query-migrate's
// x-pagecast.auto. Package simulate has what one needs; it imports this
// package, so whoever wires a Controller sets it (SetChooser).
type Chooser func(ctx context.Context, g Guest, cfg Config) (*AutoChoice, error)

// SetChooser lets the controller run mode auto. migrate then returns once
// the mode is chosen: the chooser's watching and predicting come first.
func (c *Controller) SetChooser(ch Chooser) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.choose = ch
}

// NewController returns a controller that migrates g; tlsConfig, if set, is
// used for every outgoing migration.
func NewController(g Guest, log *slog.Logger, tlsConfig *tls.Config) *Controller {
	return &Controller{g: g, log: log, tls: tlsConfig, cfg: Config{}.withDefaults(), pause: make(chan struct{}, 1)}
}

// Register installs the commands on s.
func (c *Controller) Register(s *qmpserver.Server) {
	s.Handle("migrate", c.migrate)
	s.Handle("query-migrate", c.queryMigrate)
	s.Handle("migrate-set-parameters", c.setParameters)
	s.Handle("query-migrate-parameters", c.queryParameters)
	s.Handle("migrate_cancel", c.cancel)
	s.Handle("migrate-pause", c.migratePause)
	s.Handle("migrate-start-postcopy", c.startPostcopy)
}

// startPostcopy is QEMU's migrate-start-postcopy (Migration.StartPostcopy).
func (c *Controller) startPostcopy(context.Context, json.RawMessage) (any, error) {
	c.mu.Lock()
	m := c.current
	c.mu.Unlock()
	if m == nil || m.finishedNow() {
		return nil, qmpserver.GenericError("migrate-start-postcopy: no migration is under way")
	}
	if err := m.StartPostcopy(); err != nil {
		return nil, qmpserver.GenericError("migrate-start-postcopy: %s", err.Error())
	}
	return nil, nil
}

// PauseRequests is migrate-pause on the destination, for its incoming
// migration's ReceiveConfig.Pause.
func (c *Controller) PauseRequests() <-chan struct{} { return c.pause }

// migratePause is QEMU's migrate-pause on a destination in post-copy:
// the link to the source is broken there, and the incoming migration
// waits, postcopy-paused, for the source to reconnect (QEMU's remedy for
// a source or network that hangs without the connection closing; walk
// 149 saw a stopped source leave its destination postcopy-active). On a
// source it is refused: pagecast's engine redials a lost link by itself.
func (c *Controller) migratePause(context.Context, json.RawMessage) (any, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.incoming != nil && c.incoming.Status == StatusPostcopy {
		select {
		case c.pause <- struct{}{}:
		default: // one is on its way
		}
		return nil, nil
	}
	if c.current != nil {
		if st := c.current.Info().Status; st == StatusPostcopy || st == StatusPostcopyPaused {
			return nil, qmpserver.GenericError("migrate-pause: pagecast's engine redials a lost link by itself; give migrate-pause to the destination, whose post-copy then waits for this source to reconnect")
		}
	}
	return nil, qmpserver.GenericError("migrate-pause is currently only supported during postcopy-active or postcopy-recover state")
}

// Current is the latest migration started, or nil.
func (c *Controller) Current() *Migration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.current
}

func (c *Controller) migrate(ctx context.Context, raw json.RawMessage) (any, error) {
	args, err := qmpserver.Args[struct {
		URI    string `json:"uri"`
		Blk    bool   `json:"blk"`
		Inc    bool   `json:"inc"`
		Detach bool   `json:"detach"`
		Resume bool   `json:"resume"`
	}](raw)
	if err != nil {
		return nil, err
	}
	if args.URI == "" {
		return nil, qmpserver.GenericError("Parameter 'uri' is missing")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, qmpserver.GenericError("the virtual machine is shutting down")
	}
	if c.choosing != nil || c.current != nil && !c.current.finishedNow() {
		return nil, qmpserver.GenericError("There's a migration process in progress")
	}
	cfg := c.cfg
	cfg.TLS = c.tls
	cfg.Log = c.log
	// As pagecast migrate checks them: here, where the parameters are
	// final, not as each is set (found by a fuzzing walk).
	if err := CheckLink(cfg.MaxBandwidth, cfg.DowntimeLimit); err != nil {
		return nil, qmpserver.GenericError("max-bandwidth and downtime-limit: %s", err.Error())
	}
	// The migration this VM received is no longer query-migrate's
	// answer: not "completed" while auto watches the guest.
	c.incoming = nil
	if cfg.Mode == ModeAuto {
		// Refused as any mode is, before the watch (walk 154: a source
		// in postmigrate was said to have stopped during it).
		if c.g != nil {
			if ok, st := c.g.Running(); !ok {
				return nil, qmpserver.GenericError("%s", strings.TrimPrefix(NotRunning(st).Error(), "migrate: "))
			}
		}
		if cfg.MaxBandwidth == 0 {
			return nil, qmpserver.GenericError("x-pagecast-mode auto needs max-bandwidth, the link's rate, to predict each mode")
		}
		// Watching the guest takes seconds: other clients' commands
		// (query-migrate) are served meanwhile, a second migrate is
		// refused.
		c.choosing = &choosingInfo{Status: StatusSetup}
		c.choosing.Pagecast.Mode, c.choosing.Pagecast.Bandwidth, c.choosing.Pagecast.Destination = ModeAuto, cfg.MaxBandwidth, args.URI
		cctx, stop := context.WithCancel(ctx)
		c.stopChoosing, c.chosen = stop, make(chan struct{})
		choose := c.choose
		c.mu.Unlock()
		choice, err := choose(cctx, c.g, cfg)
		c.mu.Lock()
		close(c.chosen)
		c.choosing, c.stopChoosing, c.chosen = nil, nil, nil
		cancelled := cctx.Err() != nil && ctx.Err() == nil
		if c.closed {
			stop()
			return nil, qmpserver.GenericError("mode auto: the virtual machine is shutting down: nothing was migrated")
		}
		stop()
		if cancelled {
			return nil, qmpserver.GenericError("mode auto: cancelled (migrate_cancel) while it watched the guest: nothing was migrated")
		}
		if err != nil {
			return nil, qmpserver.GenericError("mode auto: %s", err.Error())
		}
		c.log.Info("mode auto chose", "mode", choice.Mode, "why", choice.Why)
		cfg.Mode, cfg.Auto = choice.Mode, choice
	}
	m, err := Outgoing(c.g, args.URI, cfg)
	if err != nil {
		// The reply is the migrate command's: the client names it.
		return nil, qmpserver.GenericError("%s", strings.TrimPrefix(err.Error(), "migrate: "))
	}
	c.current = m
	return nil, nil
}

func (m *Migration) finishedNow() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.finished()
}

func (c *Controller) queryMigrate(context.Context, json.RawMessage) (any, error) {
	c.mu.Lock()
	m, in, choosing := c.current, c.incoming, c.choosing
	c.mu.Unlock()
	switch {
	case choosing != nil: // never changed once set: read unlocked
		return choosing, nil
	case m != nil:
		return m.Info(), nil
	case in != nil:
		return in, nil
	}
	return struct{}{}, nil
}

// parameters is migrate-set-parameters' argument and
// query-migrate-parameters' reply.
type parameters struct {
	MaxBandwidth  *uint64  `json:"max-bandwidth,omitempty"`  // bytes/s
	DowntimeLimit *uint64  `json:"downtime-limit,omitempty"` // ms
	Mode          *string  `json:"x-pagecast-mode,omitempty"`
	MaxRounds     *int     `json:"x-pagecast-max-rounds,omitempty"`
	Profile       *string  `json:"x-pagecast-profile,omitempty"`
	Threshold     *float64 `json:"x-pagecast-threshold,omitempty"`
	EpochMS       *uint64  `json:"x-pagecast-epoch-ms,omitempty"`
	Prefer        *string  `json:"x-pagecast-prefer,omitempty"`
	Observe       *int     `json:"x-pagecast-observe,omitempty"`
}

func (c *Controller) setParameters(_ context.Context, raw json.RawMessage) (any, error) {
	p, err := qmpserver.Args[parameters](raw)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	cfg := c.cfg
	if p.MaxBandwidth != nil {
		cfg.MaxBandwidth = *p.MaxBandwidth
	}
	if p.DowntimeLimit != nil {
		if *p.DowntimeLimit > 2000000 {
			return nil, qmpserver.GenericError("Parameter 'downtime_limit' expects an integer in the range of 0 to 2000000 milliseconds")
		}
		if *p.DowntimeLimit == 0 {
			// QEMU takes 0; pagecast's engine needs a pause to switch
			// over in, and 0 read back as the 300 ms default, the set
			// said to have succeeded (found by a fuzzing walk).
			return nil, qmpserver.GenericError("Parameter 'downtime_limit': pagecast's engine needs at least 1 millisecond to switch over in (QEMU takes 0; pagecast does not)")
		}
		cfg.DowntimeLimit = time.Duration(*p.DowntimeLimit) * time.Millisecond
	}
	if p.Mode != nil && *p.Mode == ModeAuto {
		if c.choose == nil {
			return nil, qmpserver.GenericError("Parameter 'x-pagecast-mode': auto is not available on this monitor")
		}
		cfg.Mode = ModeAuto
	} else if p.Mode != nil {
		if _, err := parseMode(*p.Mode); err != nil {
			return nil, qmpserver.GenericError("Parameter 'x-pagecast-mode': %s", err.Error())
		}
		cfg.Mode = *p.Mode
	}
	if p.Prefer != nil {
		switch *p.Prefer {
		case "time", "bytes", "downtime":
		default:
			return nil, qmpserver.GenericError("Parameter 'x-pagecast-prefer' expects time, bytes or downtime")
		}
		cfg.Prefer = *p.Prefer
	}
	if p.Observe != nil {
		if *p.Observe < 1 || *p.Observe > MaxObserve {
			return nil, qmpserver.GenericError("Parameter 'x-pagecast-observe' expects 1 to %d epochs of 100 ms", MaxObserve)
		}
		cfg.Observe, cfg.ObserveGiven = *p.Observe, true
	}
	if p.MaxRounds != nil {
		if *p.MaxRounds < 1 || *p.MaxRounds > MaxRoundsLimit {
			return nil, qmpserver.GenericError("Parameter 'x-pagecast-max-rounds' expects 1 to %d", MaxRoundsLimit)
		}
		cfg.MaxRounds = *p.MaxRounds
	}
	if p.Profile != nil {
		cfg.Profile = *p.Profile
	}
	if p.Threshold != nil {
		if *p.Threshold <= 0 || *p.Threshold >= 1 {
			return nil, qmpserver.GenericError("Parameter 'x-pagecast-threshold' expects a probability between 0 and 1")
		}
		cfg.Threshold = *p.Threshold
	}
	if p.EpochMS != nil {
		if *p.EpochMS < 10 || *p.EpochMS > 10000 {
			return nil, qmpserver.GenericError("Parameter 'x-pagecast-epoch-ms' expects 10 to 10000 milliseconds")
		}
		cfg.Epoch = time.Duration(*p.EpochMS) * time.Millisecond
	}
	c.cfg = cfg.withDefaults()
	if p.MaxBandwidth != nil && c.current != nil {
		c.current.SetBandwidth(*p.MaxBandwidth) // QEMU applies a new cap at once too
	}
	if p.DowntimeLimit != nil && c.current != nil {
		c.current.SetDowntimeLimit(cfg.DowntimeLimit) // and a new downtime limit (virsh migrate-setmaxdowntime)
	}
	return nil, nil
}

func (c *Controller) queryParameters(context.Context, json.RawMessage) (any, error) {
	c.mu.Lock()
	cfg := c.cfg
	c.mu.Unlock()
	dl := uint64(cfg.DowntimeLimit.Milliseconds())
	ep := uint64(cfg.Epoch.Milliseconds())
	return parameters{MaxBandwidth: &cfg.MaxBandwidth, DowntimeLimit: &dl, Mode: &cfg.Mode,
		MaxRounds: &cfg.MaxRounds, Profile: &cfg.Profile, Threshold: &cfg.Threshold, EpochMS: &ep, Prefer: &cfg.Prefer, Observe: &cfg.Observe}, nil
}

// Close ends the controller's work before its guest goes away: mode
// auto's watch is stopped, a migration under way is cancelled where it
// can be and waited for, and none starts after. Where it cannot be (in
// post-copy the guest needs pages only this source holds; after the
// commit the destination runs it), Close waits for it to end unless force
// is closed or sends, and then aborts it (Migration.Abort). refused, if
// not nil, is told why the cancel was refused.
func (c *Controller) Close(force <-chan struct{}, refused func(error)) {
	c.mu.Lock()
	c.closed = true
	chosen := c.chosen
	if c.stopChoosing != nil {
		c.stopChoosing()
	}
	c.mu.Unlock()
	if chosen != nil {
		<-chosen
	}
	m := c.Current()
	if m == nil {
		return
	}
	if err := m.Cancel(); err != nil && refused != nil {
		select {
		case <-m.Done():
			return
		default:
			refused(err)
		}
	}
	select {
	case <-m.Done():
	case <-force:
		m.Abort()
		<-m.Done()
	}
}

func (c *Controller) cancel(context.Context, json.RawMessage) (any, error) {
	c.mu.Lock()
	if c.stopChoosing != nil {
		c.stopChoosing() // mode auto watching: no migration yet
	}
	c.mu.Unlock()
	if m := c.Current(); m != nil {
		if err := m.Cancel(); err != nil {
			return nil, err
		}
	}
	return nil, nil
}
