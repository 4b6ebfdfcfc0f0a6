package migrationmetrics

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pagecast/pagecast/migrator"
)

// Engines that move a migration's memory, the engine label's values.
const (
	EnginePagecast = "pagecast" // pagecast's engine (migrator.Outgoing)
	EngineQEMU     = "qemu"     // QEMU's own migration
)

// Statuses are the status label's values: query-migrate's states.
var Statuses = []string{
	migrator.StatusSetup, migrator.StatusActive, migrator.StatusPostcopy, migrator.StatusPostcopyPaused,
	migrator.StatusDevice, migrator.StatusCompleted, migrator.StatusFailed, migrator.StatusCancelled,
}

// Exporter holds one VM's latest migration and exports it; it is a
// prometheus.Collector. Its methods are safe for concurrent use.
type Exporter struct {
	vm  string
	now func() time.Time

	mu      sync.Mutex
	cur     *migration // nil before the first Begin
	refresh func()     // called as a scrape begins, if set (SetRefresh)
}

type migration struct {
	id        string // the migration label: its start time, UTC
	engine    string
	mode      string
	bandwidth uint64 // link cap in bytes/s; 0: none or unknown
	start     time.Time
	end       time.Time // zero while it runs
	info      migrator.Info
	seen      bool              // info holds a reply
	expected  int64             // the engine's latest downtime estimate, ms; 0: none yet
	dirtyRate uint64            // the latest dirty-pages-rate measured, pages/s; QEMU's reply at the end says 0
	slowdown  migrator.Slowdown // QEMU's migration: what the guest lost, which query-migrate does not say
	paused    time.Duration     // the guest's own pause, STOP to RESUME; 0: not known
}

var _ prometheus.Collector = (*Exporter)(nil)

// New returns an exporter for the VM named vm (the vm label).
func New(vm string) *Exporter { return &Exporter{vm: vm, now: time.Now} }

// Begin starts exporting a new migration that began at start, moved by
// engine in mode over a link capped at bandwidth bytes/s (0: none or not
// known). The one before is no longer exported.
func (e *Exporter) Begin(start time.Time, engine, mode string, bandwidth uint64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.cur = &migration{id: start.UTC().Format("2006-01-02T15:04:05.000Z"), engine: engine, mode: mode,
		bandwidth: bandwidth, start: start, info: migrator.Info{Status: migrator.StatusSetup}}
}

// Observe records a query-migrate reply of the current migration. A
// reply of a finished migration sets its end time, once.
func (e *Exporter) Observe(info migrator.Info) {
	e.mu.Lock()
	defer e.mu.Unlock()
	m := e.cur
	if m == nil {
		return
	}
	m.info, m.seen = info, true
	if info.RAM != nil && info.RAM.DirtyPagesRate > 0 {
		m.dirtyRate = info.RAM.DirtyPagesRate
	}
	if info.ExpectedDowntime > 0 && roundEnded(m.engine, info) { // query-migrate drops it once the migration ends
		m.expected = info.ExpectedDowntime
	}
	if x := info.Pagecast; x != nil {
		m.mode = x.Mode
		if x.Bandwidth > 0 {
			m.bandwidth = x.Bandwidth
		}
	}
	if Finished(info.Status) && m.end.IsZero() {
		m.end = e.now()
	}
}

// SetBandwidth records a link cap changed during the current migration
// (QEMU's query-migrate does not say it; pagecast's engine's does).
func (e *Exporter) SetBandwidth(bytesPerSecond uint64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if m := e.cur; m != nil {
		m.bandwidth = bytesPerSecond
	}
}

// Fail marks the current migration failed, its figures kept, where what
// QEMU called completed failed after (its destination refused the state
// and exited): the metrics said succeeded, and the failure alert did not
// fire (review 77).
func (e *Exporter) Fail(why string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if m := e.cur; m != nil {
		m.info.Status, m.info.ErrorDesc = migrator.StatusFailed, why
		if m.end.IsZero() {
			m.end = e.now()
		}
	}
}

// roundEnded reports whether a round of the migration has ended, so that
// its expected-downtime is an estimate. QEMU's is its downtime limit until
// the dirty log is synced after round 1 (dirty-sync-count 2: the first
// sync is at the start); pagecast's engine sets none before.
func roundEnded(engine string, info migrator.Info) bool {
	if engine != EngineQEMU {
		return true
	}
	return info.RAM != nil && info.RAM.DirtySyncCount >= 2
}

// ObserveSlowdown records what the guest of a migration by QEMU's own
// engine lost (migrator.QEMUPlan.Slowdown): QEMU's query-migrate has no
// such member, where pagecast's engine reports it in its own section.
func (e *Exporter) ObserveSlowdown(s migrator.Slowdown) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cur != nil {
		e.cur.slowdown = s
	}
}

// ObservePause records the guest's own pause at the switch-over of the
// current migration, the source's STOP to the destination's RESUME (d <=
// 0: not known). QEMU's downtime counts until its last bytes are in its
// socket: a tsmc migration said 6 ms where the guest paused 75 ms, and
// the dashboard showed the 6 (walk 121).
func (e *Exporter) ObservePause(d time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cur != nil && d > 0 {
		e.cur.paused = d
	}
}

// Finished reports whether a query-migrate status is final: completed,
// failed or cancelled.
func Finished(status string) bool {
	switch status {
	case migrator.StatusCompleted, migrator.StatusFailed, migrator.StatusCancelled:
		return true
	}
	return false
}

// Began reports whether a migration has begun (Begin), whose metrics
// are exported.
func (e *Exporter) Began() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.cur != nil
}

// LingerScrapes waits until scrapes has counted two more than now, or
// timeout passes, or ctx ends, and returns how many it counted: so that
// Prometheus holds the last of what a metrics endpoint served before it
// goes away.
func LingerScrapes(ctx context.Context, scrapes func() uint64, timeout time.Duration) uint64 {
	n := scrapes()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for scrapes() < n+2 {
		select {
		case <-ctx.Done():
			return scrapes() - n
		case <-deadline.C:
			return scrapes() - n
		case <-tick.C:
		}
	}
	return scrapes() - n
}

// Follow polls info every interval and records each reply until the
// migration has finished (a finished reply is recorded) or ctx ends.
func (e *Exporter) Follow(ctx context.Context, info func() migrator.Info, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		i := info()
		e.Observe(i)
		if Finished(i.Status) {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

var (
	labels = []string{"vm", "migration"}

	descInfo = prometheus.NewDesc("pagecast_migration_info",
		"The migration's engine (pagecast or qemu) and mode (value 1).", append(labels, "engine", "mode"), nil)
	descStatus = prometheus.NewDesc("pagecast_migration_status",
		"The migration's query-migrate status: 1 for the current one, 0 for the others.", append(labels, "status"), nil)
	descStart = prometheus.NewDesc("pagecast_migration_start_time_seconds",
		"When the migration began, seconds since the Unix epoch.", labels, nil)
	descEnd = prometheus.NewDesc("pagecast_migration_end_time_seconds",
		"When the migration ended (completed, failed or cancelled), seconds since the Unix epoch.", labels, nil)
	descTotalTime = prometheus.NewDesc("pagecast_migration_total_time_seconds",
		"How long the migration has run, or took once it ended (query-migrate total-time): mode auto's watching and weighing of the modes before it began is not in it, as it is between the start and end times.", labels, nil)
	descSucceeded = prometheus.NewDesc("pagecast_migration_succeeded",
		"1 once the migration has completed: the guest runs on the destination.", labels, nil)
	descFailed = prometheus.NewDesc("pagecast_migration_failed",
		"1 once the migration has failed or been cancelled.", labels, nil)
	descProcessed = prometheus.NewDesc("pagecast_migration_data_processed_bytes",
		"Bytes sent to the destination so far (query-migrate ram.transferred).", labels, nil)
	descRemaining = prometheus.NewDesc("pagecast_migration_data_remaining_bytes",
		"Bytes of guest memory still to send (query-migrate ram.remaining).", labels, nil)
	descTotal = prometheus.NewDesc("pagecast_migration_data_total_bytes",
		"Guest memory being migrated (query-migrate ram.total).", labels, nil)
	descDirtyRate = prometheus.NewDesc("pagecast_migration_dirty_memory_rate_bytes_per_second",
		"Rate at which the guest dirtied memory over the latest round (query-migrate ram.dirty-pages-rate times ram.page-size); present once a round has measured it.", labels, nil)
	descTransferRate = prometheus.NewDesc("pagecast_migration_memory_transfer_rate_bytes_per_second",
		"Rate at which memory is sent (query-migrate ram.mbps in bytes per second: pagecast's engine's mean since the migration began, QEMU's over its latest period).", labels, nil)
	descBandwidth = prometheus.NewDesc("pagecast_migration_bandwidth_limit_bytes_per_second",
		"Link cap of the migration (--bandwidth; QEMU's max-bandwidth); absent when there is none.", labels, nil)
	descSyncs = prometheus.NewDesc("pagecast_migration_dirty_syncs_total",
		"Dirty log syncs (query-migrate ram.dirty-sync-count): QEMU's engine syncs about once a round; pagecast's engine harvests its dirty log every epoch (100 ms) and counts each harvest as it is taken.", labels, nil)
	descRound = prometheus.NewDesc("pagecast_migration_round",
		"Current round, 1-based, the stop-and-copy counted as one (QEMU's engine: its dirty-sync-count).", labels, nil)
	descDeferred = prometheus.NewDesc("pagecast_migration_deferred_pages",
		"Pages the predictive policy has held back in the round under way, so far, because it expects them to be dirtied again (pagecast's engine; from 0 at each round's start).", labels, nil)
	descDeferrals = prometheus.NewDesc("pagecast_migration_page_deferrals_total",
		"Page sends held back by the predictive policy over the migration (pagecast's engine).", labels, nil)
	descThrottle = prometheus.NewDesc("pagecast_migration_cpu_throttle_ratio",
		"Share of the vCPUs' time taken away to slow the guest's dirtying (query-migrate cpu-throttle-percentage / 100).", labels, nil)
	descExpectedDowntime = prometheus.NewDesc("pagecast_migration_expected_downtime_seconds",
		"Pause the switch-over would take, as the engine estimates it (query-migrate expected-downtime): present once a round has ended; after a completed migration, the last estimate before the switch-over.", labels, nil)
	descDowntime = prometheus.NewDesc("pagecast_migration_downtime_seconds",
		"Pause of the guest at the switch-over (query-migrate downtime); present once the migration has completed.", labels, nil)
	descGuestPaused = prometheus.NewDesc("pagecast_migration_guest_paused_seconds",
		"The guest's own pause at the switch-over, the source's STOP to the destination's RESUME as their QMP events say (QEMU's engine: given --dest-qmp); present once the migration has completed, where known.", labels, nil)
	descPulled = prometheus.NewDesc("pagecast_migration_postcopy_requests_total",
		"Pages the destination asked for after the switch (post-copy; query-migrate ram.postcopy-requests).", labels, nil)
	descThrottled = prometheus.NewDesc("pagecast_migration_throttled_vcpu_seconds_total",
		"vCPU time the throttle withheld from the guest over the migration, summed over its vCPUs (query-migrate x-pagecast.throttle-time; for QEMU's engine, from its cpu-throttle-percentage over time).", labels, nil)
	descFaultWait = prometheus.NewDesc("pagecast_migration_postcopy_fault_vcpu_seconds_total",
		"vCPU time the destination's guest waited for missing pages in post-copy, summed over its vCPUs (query-migrate x-pagecast.fault-time; for QEMU's engine, what the destination QEMU counted, given --dest-qmp).", labels, nil)
	descSlowdown = prometheus.NewDesc("pagecast_migration_guest_slowdown_ratio",
		"Share of its vCPUs' time the guest lost to the throttle and post-copy's faults while it ran during the migration (the downtime apart; either engine).", labels, nil)
	descPredictedSlowdown = prometheus.NewDesc("pagecast_migration_predicted_guest_slowdown_ratio",
		"Mode auto: the guest slowdown it predicted for each mode it simulated to the end (a mode stopped short once it could no longer win has none); chosen is 1 for the mode it ran.", append(labels, "mode", "chosen"), nil)
	descPredictedTime = prometheus.NewDesc("pagecast_migration_predicted_total_time_seconds",
		"Mode auto: the total time it predicted for each mode it simulated to the end (a mode stopped short once it could no longer win has none), before the migration began; chosen is 1 for the mode it ran.", append(labels, "mode", "chosen"), nil)
	descPredictedDowntime = prometheus.NewDesc("pagecast_migration_predicted_downtime_seconds",
		"Mode auto: the downtime it predicted for each mode it simulated to the end (a mode stopped short once it could no longer win has none); chosen is 1 for the mode it ran.", append(labels, "mode", "chosen"), nil)
	descPredictedData = prometheus.NewDesc("pagecast_migration_predicted_data_bytes",
		"Mode auto: the bytes it predicted each mode it simulated to the end would send (a mode stopped short once it could no longer win has none); chosen is 1 for the mode it ran.", append(labels, "mode", "chosen"), nil)
)

// Descs are every metric the exporter may export.
var Descs = []*prometheus.Desc{descInfo, descStatus, descStart, descEnd, descSucceeded, descFailed,
	descProcessed, descRemaining, descTotal, descDirtyRate, descTransferRate, descBandwidth, descSyncs,
	descTotalTime, descRound, descDeferred, descDeferrals, descThrottle, descExpectedDowntime, descDowntime, descGuestPaused, descPulled,
	descPredictedTime, descPredictedDowntime, descPredictedData, descThrottled, descFaultWait, descSlowdown, descPredictedSlowdown}

// Describe implements prometheus.Collector.
func (e *Exporter) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range Descs {
		ch <- d
	}
}

// SetRefresh has each scrape first call f, which may Begin and Observe:
// an exporter fed by polling alone served a scrape just after the
// migration completed its state of up to a poll before (walk 128:
// status "device" and succeeded 0, where query-migrate said completed).
func (e *Exporter) SetRefresh(f func()) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.refresh = f
}

// Collect implements prometheus.Collector.
func (e *Exporter) Collect(ch chan<- prometheus.Metric) {
	e.mu.Lock()
	refresh := e.refresh
	e.mu.Unlock()
	if refresh != nil {
		refresh()
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	m := e.cur
	if m == nil {
		return
	}
	gauge := func(d *prometheus.Desc, v float64, extra ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, append([]string{e.vm, m.id}, extra...)...)
	}
	counter := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, e.vm, m.id)
	}
	i := m.info
	gauge(descInfo, 1, m.engine, m.mode)
	for _, s := range Statuses {
		gauge(descStatus, boolValue(i.Status == s), s)
	}
	gauge(descStart, float64(m.start.UnixNano())/1e9)
	if !m.end.IsZero() {
		gauge(descEnd, float64(m.end.UnixNano())/1e9)
	}
	gauge(descSucceeded, boolValue(i.Status == migrator.StatusCompleted))
	gauge(descFailed, boolValue(i.Status == migrator.StatusFailed || i.Status == migrator.StatusCancelled))
	if m.bandwidth > 0 {
		gauge(descBandwidth, float64(m.bandwidth))
	}
	if !m.seen {
		return
	}
	gauge(descTotalTime, float64(i.TotalTime)/1e3)
	if r := i.RAM; r != nil {
		gauge(descProcessed, float64(r.Transferred))
		gauge(descRemaining, float64(r.Remaining))
		gauge(descTotal, float64(r.Total))
		pageSize := r.PageSize
		if pageSize == 0 {
			pageSize = migrator.PageSize
		}
		// The engines measure the dirty rate at the end of a round (QEMU:
		// between syncs); 0 before that means not measured yet.
		// pagecast's engine counts its syncs (harvests) as they come,
		// several in round 1: its own round says.
		// QEMU's engine says 0 until it has measured a rate, which it does
		// at a sync once a second has passed since the last: its second
		// sync may still say 0 (walk 52: a guest dirtying 28 MB/s was
		// shown as 0 in round 2). Its first rate above 0 is the first
		// measurement; after it, a 0 is a guest gone idle. An idle guest's
		// 0 is told once the migration has ended (review 54).
		measured := m.dirtyRate > 0 || Finished(i.Status)
		if x := i.Pagecast; x != nil {
			measured = x.Round >= 2
		}
		// A QEMU migration's last reply says 0 (it measures no more):
		// the rate last measured stays, as pagecast's engine's does
		// (the panel and the dirty-to-transfer ratio fell to 0 at the
		// end; found by a new-user walk).
		rate := r.DirtyPagesRate
		if rate == 0 && Finished(i.Status) {
			rate = m.dirtyRate
		}
		if rate > 0 || measured {
			gauge(descDirtyRate, float64(rate*pageSize))
		}
		gauge(descTransferRate, r.Mbps*1e6/8)
		counter(descSyncs, float64(r.DirtySyncCount))
		counter(descPulled, float64(r.PostcopyRequests))
	}
	round := 0.0
	if i.RAM != nil {
		round = float64(i.RAM.DirtySyncCount)
	}
	if x := m.slowdown; i.Pagecast == nil && x.VCPUs > 0 {
		counter(descThrottled, float64(x.ThrottleTime)/1e3)
		counter(descFaultWait, float64(x.FaultTime)/1e3)
		gauge(descSlowdown, x.Share(i.TotalTime, i.Downtime))
	}
	if x := i.Pagecast; x != nil {
		round = float64(x.Round)
		gauge(descDeferred, float64(x.Deferred))
		counter(descDeferrals, float64(x.DeferredAll))
		if x.VCPUs > 0 {
			counter(descThrottled, float64(x.ThrottleTime)/1e3)
			counter(descFaultWait, float64(x.FaultTime)/1e3)
			gauge(descSlowdown, i.GuestSlowdown())
		}
		if a := x.Auto; a != nil {
			for _, p := range a.Predictions {
				if p.StoppedShort {
					continue // not a prediction: how far its simulation came
				}
				chosen := "0"
				if p.Mode == a.Mode {
					chosen = "1"
				}
				gauge(descPredictedTime, float64(p.TotalTime)/1e3, p.Mode, chosen)
				gauge(descPredictedDowntime, float64(p.Downtime)/1e3, p.Mode, chosen)
				gauge(descPredictedData, float64(p.Transferred), p.Mode, chosen)
				gauge(descPredictedSlowdown, p.GuestSlowdown, p.Mode, chosen)
			}
		}
	}
	gauge(descRound, round)
	gauge(descThrottle, float64(i.CPUThrottlePercentage)/100)
	if i.Status == migrator.StatusCompleted {
		gauge(descDowntime, float64(i.Downtime)/1e3)
		if m.paused > 0 {
			gauge(descGuestPaused, m.paused.Seconds())
		}
	}
	// Kept after completion so that it stands beside the actual downtime even
	// when the migration ended between two scrapes; dropped if it failed.
	if m.expected > 0 && (!Finished(i.Status) || i.Status == migrator.StatusCompleted) {
		gauge(descExpectedDowntime, float64(m.expected)/1e3)
	}
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
