package migrator

import (
	"encoding/json"
	"strings"
)

// Migration states, as QEMU's query-migrate names them.
const (
	StatusNone       = "none"
	StatusSetup      = "setup"
	StatusActive     = "active"
	StatusDevice     = "device" // stop-and-copy: the source is paused
	StatusCompleted  = "completed"
	StatusFailed     = "failed"
	StatusCancelling = "cancelling" // migrate_cancel taken, the migration not yet ended
	StatusCancelled  = "cancelled"
)

// Info is query-migrate's reply, in QEMU's shape (times in milliseconds,
// sizes in bytes) so that QEMU's tools read it, with pagecast's own figures
// under "x-pagecast". The same type parses QEMU's reply.
type Info struct {
	Status                string    `json:"status"`
	SetupTime             int64     `json:"setup-time,omitempty"`
	TotalTime             int64     `json:"total-time,omitempty"`
	Downtime              int64     `json:"downtime,omitempty"`
	ExpectedDowntime      int64     `json:"expected-downtime,omitempty"`
	CPUThrottlePercentage int       `json:"cpu-throttle-percentage,omitempty"`
	RAM                   *RAMStats `json:"ram,omitempty"`
	ErrorDesc             string    `json:"error-desc,omitempty"`
	Pagecast              *Extra    `json:"x-pagecast,omitempty"`
}

// MarshalJSON gives a completed migration's setup-time, total-time and
// downtime even where they are 0, as QEMU does (walk 137: a tsmc
// migration's downtime under a millisecond left the key out, and a script
// reading it failed).
func (i Info) MarshalJSON() ([]byte, error) {
	type plain Info // without this method
	if i.Status != StatusCompleted {
		return json.Marshal(plain(i))
	}
	return json.Marshal(struct {
		plain
		SetupTime int64 `json:"setup-time"`
		TotalTime int64 `json:"total-time"`
		Downtime  int64 `json:"downtime"`
	}{plain(i), i.SetupTime, i.TotalTime, i.Downtime})
}

// RAMStats is query-migrate's "ram" member.
type RAMStats struct {
	Transferred      uint64  `json:"transferred"`       // bytes on the wire, all of them
	Remaining        uint64  `json:"remaining"`         // bytes still to send
	Total            uint64  `json:"total"`             // guest RAM
	Duplicate        uint64  `json:"duplicate"`         // zero pages sent as markers
	Skipped          uint64  `json:"skipped"`           // always 0
	Normal           uint64  `json:"normal"`            // pages sent whole
	NormalBytes      uint64  `json:"normal-bytes"`      // their bytes
	DirtyPagesRate   uint64  `json:"dirty-pages-rate"`  // pages/s the last round's harvests made to be sent again, each once (as QEMU's: bits a sync newly sets)
	Mbps             float64 `json:"mbps"`              // transfer rate, megabits/s
	DirtySyncCount   uint64  `json:"dirty-sync-count"`  // dirty log harvests (every epoch; QEMU syncs about once a round)
	PostcopyRequests uint64  `json:"postcopy-requests"` // pages the destination asked for
	PageSize         uint64  `json:"page-size"`
	PagesPerSecond   uint64  `json:"pages-per-second"`
	PrecopyBytes     uint64  `json:"precopy-bytes"`  // bytes sent while the guest ran on the source
	DowntimeBytes    uint64  `json:"downtime-bytes"` // bytes sent while it was stopped
	PostcopyBytes    uint64  `json:"postcopy-bytes"`
}

// StopReason's words where the round cap ended the pre-copy rounds, and
// where the migration then went on in post-copy.
const (
	stopRoundCap = "round cap "
	stopPostcopy = ": switching to post-copy"
)

// RoundCapped reports whether the round cap, not the downtime limit,
// ended the pre-copy rounds (as StopReason says), and whether the
// migration then went on in post-copy rather than a stop-and-copy of what
// was pending.
func (x *Extra) RoundCapped() (capped, postcopy bool) {
	if x == nil || !strings.HasPrefix(x.StopReason, stopRoundCap) {
		return false, false
	}
	return true, strings.Contains(x.StopReason, stopPostcopy)
}

// Extra is pagecast's part of query-migrate.
type Extra struct {
	Mode        string   `json:"mode"`
	Round       int      `json:"round"`                 // current round, 1-based; the stop-and-copy counts as one
	RoundPages  []uint64 `json:"round-pages"`           // pages sent in each round (zero pages included)
	RoundBytes  []uint64 `json:"round-bytes"`           // bytes on the wire in each round
	Deferred    uint64   `json:"deferred-pages"`        // pages the policy has held back in the round under way, so far (at a round's end, that round's)
	DeferredAll uint64   `json:"deferred-total"`        // page deferrals over the migration
	Bandwidth   uint64   `json:"bandwidth"`             // link cap, bytes/s; 0: none
	Verified    bool     `json:"verified"`              // the destination's memory matched the source's
	Unconfirmed string   `json:"unconfirmed,omitempty"` // why the destination did not answer after the commit: whether its guest runs is not known here
	// GuestStarted says the destination, before it went unconfirmed, said
	// its guest runs: the commit reached it, and the guest went there
	// unverified (walk 153: reported as not known where).
	GuestStarted bool   `json:"guest-started,omitempty"`
	StopReason   string `json:"stop-reason,omitempty"` // why the pre-copy rounds ended
	// HeldPaused says the guest was paused when the switch-over came (its
	// user stopped it during the migration): the destination holds it
	// paused, as QEMU's own migration does, or, if the migration failed,
	// it stays paused here.
	HeldPaused bool `json:"held-paused,omitempty"`
	// AfterSwitchoverBytes is what went on the wire after the switch-over
	// outside post-copy (postcopy-bytes): the memory checksums a pre-copy
	// sends the destination to check its copy against. precopy-bytes,
	// downtime-bytes, postcopy-bytes and it add up to transferred.
	AfterSwitchoverBytes uint64 `json:"after-switchover-bytes,omitempty"`
	// CheckTime is the ms the memory check adds to the total time (not to
	// the downtime): the paused source summing the memory its guest holds
	// and the destination comparing, from the commit to the end after a
	// stop-and-copy; in post-copy, where the sums are taken beside the
	// push, how long they kept it waiting once the last page had gone
	// (review 105: not the verdict's round trip, 8 ms where the sums were
	// not counted).
	CheckTime   int64       `json:"check-time,omitempty"`
	Destination string      `json:"destination,omitempty"` // the migrate URI
	Auto        *AutoChoice `json:"auto,omitempty"`        // mode auto: what it chose, and what it predicted
	Slowdown
}

// Slowdown is what a guest lost while it ran during a migration, in
// milliseconds of vCPU time summed over its VCPUs: what the throttle
// withheld, and what its vCPUs waited for pages they faulted on in
// post-copy (both engines count it at the destination: pagecast's from
// each vCPU's fault to its page's arrival, told in the destination's
// verdict, and while stage 3 runs, as the source sees requests; QEMU's
// its postcopy-vcpu-blocktime). The downtime is apart.
type Slowdown struct {
	VCPUs        int   `json:"vcpus,omitempty"`
	ThrottleTime int64 `json:"throttle-time,omitempty"`
	FaultTime    int64 `json:"fault-time,omitempty"`
}

// Share is the share of its vCPUs' time the guest lost over a migration
// of totalTime ms, downtime ms of them paused, 0 to 1 (0 without a vCPU
// count).
func (s Slowdown) Share(totalTime, downtime int64) float64 {
	running := float64(totalTime-downtime) * float64(s.VCPUs)
	if s.VCPUs <= 0 || running <= 0 {
		return 0
	}
	return min(1, float64(s.ThrottleTime+s.FaultTime)/running)
}

// GuestSlowdown is the share of its vCPUs' time the guest lost while it
// ran during the migration (throttle and post-copy faults; the downtime
// is apart), 0 to 1: 0.25 is a guest that did three quarters of its
// usual work over the migration's running time. 0 where Info does not
// say (QEMU's own migrations, or no vCPU count).
func (i Info) GuestSlowdown() float64 {
	if i.Pagecast == nil {
		return 0
	}
	return i.Pagecast.Share(i.TotalTime, i.Downtime)
}

// AutoChoice is what mode auto chose before the migration began (by
// simulating every mode on what it had observed of the guest), and what
// it predicted for each mode it weighed.
type AutoChoice struct {
	Mode        string       `json:"mode"`
	Prefer      string       `json:"prefer"` // time, bytes or downtime
	Why         string       `json:"why"`
	Predictions []Prediction `json:"predictions"`
	// PageRate is the pages a second the engine's own path moved on this
	// host, where auto measured it (the destination is on it) and the
	// predictions are bound by it; absent otherwise.
	PageRate float64 `json:"page-rate,omitempty"`
	// PausedPageRate is PageRate while the guest is paused, its cores
	// left to the migration (see SimConfig); absent where not measured.
	PausedPageRate float64 `json:"paused-page-rate,omitempty"`
	// Warning says what auto saw that may make its predictions fall
	// short; absent where it saw nothing.
	Warning string `json:"warning,omitempty"`
	// Watched is how long auto watched the guest, milliseconds.
	Watched int64 `json:"watched,omitempty"`
	// Replay is what the simulations' replays of the watch moved, where
	// they moved pages (see simulate.GuestOptions.Grow); absent
	// otherwise.
	Replay *Replay `json:"replay,omitempty"`
	// Again says the chosen mode's prediction was made again once the
	// modes were weighed, from where a sweep had gone on to by then: it
	// is from later than the others'.
	Again bool `json:"again,omitempty"`
}

// Replay is what each replay of the watched seconds in auto's simulations
// did with the pages the guest wrote only once.
type Replay struct {
	Once  uint64  `json:"once"`  // the pages written only once in the watch
	Moved float64 `json:"moved"` // the share of them each replay moved, 0 to 1
	// Drift, where they went on as one front (a sweep of memory), is
	// how far each replay moved them, pages, negative down memory; Lead
	// how much further the first one did, for the time from the watch's
	// end to the migration's start. Absent where each replay drew its
	// offset.
	Drift float64 `json:"drift,omitempty"`
	Lead  float64 `json:"lead,omitempty"`
}

// Prediction is one mode's simulated outcome, in query-migrate's units.
type Prediction struct {
	Mode        string `json:"mode"`
	TotalTime   int64  `json:"total-time"`  // milliseconds
	Downtime    int64  `json:"downtime"`    // milliseconds
	Transferred uint64 `json:"transferred"` // bytes
	// GuestSlowdown is Info.GuestSlowdown's prediction, 0 to 1.
	GuestSlowdown float64 `json:"guest-slowdown"`
	// StoppedShort: the mode's simulation stopped once it could no
	// longer be chosen; TotalTime and Transferred are how far it had
	// come (lower bounds), Downtime and GuestSlowdown unknown (0).
	StoppedShort bool `json:"stopped-short,omitempty"`
	// Rounds, RoundPages, Deferred, Throttle and Pulled are as the
	// mode's simulated query-migrate would give them at its end
	// (x-pagecast's round, round-pages and deferred-all,
	// cpu-throttle-percentage, postcopy-requests); Replays the times its
	// simulation replayed the watched seconds. Absent where stopped
	// short.
	Rounds     int      `json:"rounds,omitempty"`
	RoundPages []uint64 `json:"round-pages,omitempty"`
	Deferred   uint64   `json:"deferred,omitempty"`
	Throttle   int      `json:"throttle,omitempty"`
	Pulled     uint64   `json:"pulled,omitempty"`
	Replays    uint64   `json:"replays,omitempty"`
}

// MarshalJSON leaves out what a mode stopped short does not know, its
// downtime and guest slowdown, rather than say 0 for them.
func (p Prediction) MarshalJSON() ([]byte, error) {
	type plain Prediction
	if !p.StoppedShort {
		return json.Marshal(plain(p))
	}
	return json.Marshal(struct {
		Mode         string `json:"mode"`
		TotalTime    int64  `json:"total-time"`
		Transferred  uint64 `json:"transferred"`
		StoppedShort bool   `json:"stopped-short"`
	}{p.Mode, p.TotalTime, p.Transferred, true})
}

// Predicted is the chosen mode's prediction, if there is one.
func (a *AutoChoice) Predicted() (Prediction, bool) {
	for _, p := range a.Predictions {
		if p.Mode == a.Mode {
			return p, true
		}
	}
	return Prediction{}, false
}
