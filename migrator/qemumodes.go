package migrator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/bits"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/digitalocean/go-qemu/qmp"

	"github.com/pagecast/pagecast/internal/units"
	"github.com/pagecast/pagecast/qemu"
)

// QEMU's own migration, driven in pagecast's terms. A source that is a
// plain QEMU knows none of the x-pagecast-* parameters, and moves RAM with
// its own engine: each pagecast mode that has a counterpart there is put
// into QEMU's capabilities and parameters (PlanQEMU), sent (SetupQEMU), and
// followed (WaitQEMU). Modes that need pagecast's engine are refused.

// Kinds of monitor at the other end of a QMP socket.
const (
	MonitorPagecast = "pagecast" // pagecast's own monitor (vm run): every mode, x-pagecast-* parameters
	MonitorQEMU     = "qemu"     // QEMU as shipped: its own migration capabilities only
)

// MonitorKind asks mon which monitor it is: query-version's package starts
// with "pagecast" on pagecast's monitor, and anything else is QEMU.
func MonitorKind(mon qmp.Monitor) (string, error) {
	var v struct {
		Package string `json:"package"`
	}
	if err := clientRun(mon, "query-version", nil, &v); err != nil {
		return "", err
	}
	if strings.HasPrefix(strings.TrimSpace(v.Package), "pagecast") {
		return MonitorPagecast, nil
	}
	return MonitorQEMU, nil
}

// QEMU migration capabilities the plans use. Every plan sets each of them,
// on or off, so that one left on by an earlier migration does not leak in.
const (
	CapXBZRLE       = "xbzrle"
	CapAutoConverge = "auto-converge"
	CapPostcopyRAM  = "postcopy-ram"
	// CapPostcopyBlocktime makes the destination count how long each
	// vCPU waited for pages in post-copy (query-migrate's
	// postcopy-vcpu-blocktime there; QEMUFaultTime).
	CapPostcopyBlocktime = "postcopy-blocktime"
)

var qemuCapabilities = []string{CapXBZRLE, CapAutoConverge, CapPostcopyRAM}

// ErrNeedDestQMP is returned for tsmc on QEMU without the destination's
// monitor: QEMU's post-copy must be enabled on both ends.
var ErrNeedDestQMP = errors.New("on QEMU this mode uses post-copy, whose capability must be set on the destination too: give its QMP socket (--dest-qmp unix:PATH)")

// QEMUPlan is a pagecast mode put into QEMU's own migration terms.
type QEMUPlan struct {
	Mode         string
	Capabilities []string // enabled on the source; the other qemuCapabilities are turned off
	// DestCapabilities are enabled on the destination before the stream
	// arrives (post-copy must be on at both ends).
	DestCapabilities []string
	Parameters       QEMUParams
	// Postcopy: migrate-start-postcopy once the first full pass is over
	// (dirty-sync-count reaches PostcopyAfterSyncs).
	Postcopy bool
	// Stalled (precopy+postcopy): post-copy only once pre-copy stops
	// converging, instead of after the first pass: when a pass leaves
	// more than half of what the one before it left (ram.remaining at the
	// first reply after each dirty sync, from the third), or once
	// dirty-sync-count passes MaxSyncs.
	Stalled bool
	// MaxSyncs, if not 0, forces the switch-over once dirty-sync-count
	// passes it (MaxRounds live rounds): QEMU has no round cap, so the
	// downtime limit is raised to QEMU's largest and QEMU stops the guest
	// and sends the rest at its next check, as pagecast's engine does at
	// its round cap.
	MaxSyncs int
	Forced   bool // WaitQEMU forced the switch-over
	// Switched says why WaitQEMU started post-copy ("" if it did not).
	Switched string
	// SwitchNow, if not "" in a Postcopy plan, has WaitQEMU start
	// post-copy at the next reply that shows pre-copy under way, whatever
	// its pass, and is then Switched: migrate --timeout sets it, as
	// KubeVirt switches to post-copy at its completion timeout where
	// post-copy is allowed. Set from WaitQEMU's progress function.
	SwitchNow string
	// DestAnswers, if not nil, asks the destination QEMU whether it is
	// there: nil if it answers, ErrNoAnswer if it keeps its connection
	// but does not answer, another error if it is gone. WaitQEMU asks
	// when post-copy has moved nothing for PostcopyStall, and follows on
	// (to PostcopyGiveUp) unless it is gone.
	DestAnswers func() error
	Notes       []string // flags QEMU has no use for, one sentence each
	// LosesWrites is set where the source QEMU's own migration loses
	// some of a TCG guest's writes (TCGLosesWrites, in Notes too).
	LosesWrites bool
	// Slowdown is what the guest lost: its vCPUs (SetupQEMU, from
	// query-cpus-fast; 0 if QEMU did not say), the throttle's share of
	// their time summed from WaitQEMU's polls of
	// cpu-throttle-percentage, and post-copy's waits, which the
	// destination counts (QEMUFaultTime).
	Slowdown Slowdown
	// prior is what SetupQEMU found on the source before it set the
	// plan's capabilities and parameters, which Restore sets back; nil
	// where it could not be read. forcedFrom is the downtime limit (ms)
	// a forced switch-over replaced, 0 unknown.
	prior      *qemuSettings
	forcedFrom int64
	restored   bool
	// live orders Adjust, on another goroutine, with WaitQEMU's forced
	// switch-over and Restore; nil in a plan not made by PlanQEMU.
	live *planLive
	// destPrior are the post-copy capabilities the destination had on
	// before SetupQEMU set DestCapabilities there, among destKnown, those
	// of destCaps it has (none where it did not say).
	destPrior, destKnown []string
}

// planLive is what Adjust shares with WaitQEMU and Restore.
type planLive struct {
	mu    sync.Mutex
	ended bool // Restore has run: the migration is over
}

// lock holds plan.live's lock until the func it returns is called.
func (plan *QEMUPlan) lock() (unlock func()) {
	if plan.live == nil {
		return func() {}
	}
	plan.live.mu.Lock()
	return plan.live.mu.Unlock
}

// Adjust changes, during the migration, its link cap (bytes/s; 0: none)
// and downtime limit on the source QEMU mon, where not nil, as virsh
// migrate-setspeed and migrate-setmaxdowntime do. In a post-copy mode the
// cap is post-copy's too (max-postcopy-bandwidth), as the plan set it. It
// refuses once the migration has ended (a cap set then would outlast
// Restore), and a downtime limit once the switch-over is forced: it would
// replace the forced one, and the migration would go on for good.
func (plan *QEMUPlan) Adjust(mon qmp.Monitor, bandwidth *uint64, downtime *time.Duration) error {
	defer plan.lock()()
	if plan.restored || plan.live != nil && plan.live.ended {
		return errors.New("the migration has ended")
	}
	args := map[string]any{}
	if bandwidth != nil {
		args["max-bandwidth"] = *bandwidth
		if plan.Postcopy {
			args["max-postcopy-bandwidth"] = *bandwidth
		}
	}
	if downtime != nil {
		if plan.Forced {
			return fmt.Errorf("the switch-over is forced (past --max-rounds %d, after %d dirty syncs: QEMU's downtime-limit is held at its largest, %d ms, until the guest stops); a downtime limit set now would undo it",
				plan.MaxSyncs-1, plan.MaxSyncs, ForcedDowntimeLimit)
		}
		if *downtime < 0 {
			return fmt.Errorf("negative downtime limit %v", *downtime)
		}
		args["downtime-limit"] = int64((*downtime + time.Millisecond - 1) / time.Millisecond)
	}
	if len(args) == 0 {
		return nil
	}
	return clientRun(mon, "migrate-set-parameters", args, nil)
}

// destCaps are the capabilities SetupQEMU sets on a destination QEMU.
var destCaps = []string{CapPostcopyRAM, CapPostcopyBlocktime}

// destChanged reports whether SetupQEMU changed the destination's
// capabilities from what they were.
func (plan *QEMUPlan) destChanged() bool {
	for _, c := range plan.destKnown {
		if contains(plan.destPrior, c) != contains(plan.DestCapabilities, c) {
			return true
		}
	}
	return false
}

// destPostcopyEnd bounds RestoreDest's wait for a destination still ending
// its post-copy.
var destPostcopyEnd = 3 * time.Second

// RestoreDest sets back on the destination QEMU dst, once the migration
// has ended and the guest runs there, the post-copy capabilities
// SetupQEMU changed: a tsmc left postcopy-ram on in the VM it moved, for
// whatever migrates it next (found by a walk, as the hint after two
// interrupts listed the source's settings only).
func (plan *QEMUPlan) RestoreDest(dst qmp.Monitor) error {
	if !plan.destChanged() {
		return nil
	}
	// Never while a stream arrives: QEMU takes the change (7.2; 8.1 and
	// later refuse it for multifd and postcopy-preempt only), and a
	// post-copy started then lost the guest (review 64). A migrate whose
	// reply went astray may have started one.
	var in Info
	// A post-copy the source calls completed may still be ending at the
	// destination, whose listening thread ends it a moment later
	// (review 66): that is waited for, a few seconds at most.
	for deadline := time.Now().Add(destPostcopyEnd); ; time.Sleep(50 * time.Millisecond) {
		if err := clientRun(dst, "query-migrate", nil, &in); err != nil {
			return fmt.Errorf("asking the destination QEMU whether a migration arrives (%w), its post-copy capabilities are left as they are", err)
		}
		if !InPostcopy(in.Status) || time.Now().After(deadline) {
			break
		}
	}
	switch in.Status {
	case "", StatusNone, StatusSetup, StatusCompleted, StatusFailed, StatusCancelled:
		// setup: a destination of QEMU 8.2 and later listening for
		// -incoming, before any stream came (7.2 says nothing).
	default:
		return fmt.Errorf("the destination QEMU is receiving a migration (%s): its post-copy capabilities are left as they are", in.Status)
	}
	if err := setCapabilities(dst, plan.destKnown, plan.destPrior); err != nil {
		return fmt.Errorf("setting the destination QEMU's post-copy capabilities back: %w", err)
	}
	return nil
}

// DestRestoreHint says how to set back by hand the capabilities SetupQEMU
// changed on the destination, for a migration pagecast stopped following;
// "" where it changed none.
func (plan *QEMUPlan) DestRestoreHint() string {
	if !plan.destChanged() {
		return ""
	}
	var caps []string
	for _, c := range plan.destKnown {
		caps = append(caps, fmt.Sprintf(`{"capability":%q,"state":%v}`, c, contains(plan.destPrior, c)))
	}
	return fmt.Sprintf(`{"execute":"migrate-set-capabilities","arguments":{"capabilities":[%s]}}`, strings.Join(caps, ","))
}

// Restore sets back on the source QEMU mon what SetupQEMU and WaitQEMU
// changed there: its capabilities, the parameters the plan set and the
// downtime limit a forced switch-over raised. WaitQEMU calls it once the
// migration has ended; a caller whose migration never got that far (QEMU
// refused migrate) calls it itself. Only the first call acts.
func (plan *QEMUPlan) Restore(mon qmp.Monitor) {
	defer plan.lock()()
	if plan.restored {
		return
	}
	plan.restored = true
	if plan.live != nil {
		plan.live.ended = true
	}
	restoreSettings(mon, plan)
}

// Restored reports whether Restore has set the source's settings back.
func (plan *QEMUPlan) Restored() bool { return plan.restored }

// qemuSettings are a source QEMU's migration capabilities among
// qemuCapabilities (those enabled) and its migration parameters.
type qemuSettings struct {
	caps   []string
	params map[string]json.RawMessage
}

// readSettings is src's qemuSettings, nil where it does not say.
func readSettings(src qmp.Monitor) *qemuSettings {
	caps, err := qemu.MigrationCapabilities(src)
	var params map[string]json.RawMessage
	if err != nil || clientRun(src, "query-migrate-parameters", nil, &params) != nil {
		return nil
	}
	out := &qemuSettings{params: params}
	for _, c := range qemuCapabilities {
		if caps[c] {
			out.caps = append(out.caps, c)
		}
	}
	return out
}

// restoreSettings sets back, once the migration has ended, what plan
// changed on the source QEMU mon: its capabilities and the parameters the
// plan set (and the downtime limit a forced switch-over raised from
// plan.forcedFrom ms, 0 unknown). A QEMU migrated next by hand or by another
// tool kept a 4 MiB/s cap, auto-converge or 2000 s of downtime limit
// (found by a new-user walk).
func restoreSettings(mon qmp.Monitor, plan *QEMUPlan) {
	args := restoreArgs(plan, true)
	if len(args) > 0 {
		if err := clientRun(mon, "migrate-set-parameters", args, nil); err != nil {
			// With what to send it (walk 108: the warning said neither
			// which values nor how).
			slog.Warn("the source QEMU's migration parameters could not be set back to what they were before the migration", "err", err, "send_it", plan.RestoreHint())
		}
	}
	if plan.prior != nil {
		if err := setCapabilities(mon, qemuCapabilities, plan.prior.caps); err != nil {
			slog.Warn("the source QEMU's migration capabilities could not be set back to what they were before the migration", "err", err, "send_it", plan.RestoreHint())
		}
	}
}

// RestoreHint says how to set back by hand what plan changed on the source
// QEMU, for a migration pagecast stopped following (two interrupts in
// post-copy), which Restore never reaches: the source kept a 4 MiB/s cap
// and postcopy-ram for good, unsaid (found by a new-user walk). "" where
// what it had is not known.
func (plan *QEMUPlan) RestoreHint() string {
	if plan.prior == nil {
		return ""
	}
	args, err := json.Marshal(restoreArgs(plan, false))
	if err != nil {
		return ""
	}
	var caps []string
	for _, c := range qemuCapabilities {
		caps = append(caps, fmt.Sprintf(`{"capability":%q,"state":%v}`, c, contains(plan.prior.caps, c)))
	}
	return fmt.Sprintf(`{"execute":"migrate-set-parameters","arguments":%s} and {"execute":"migrate-set-capabilities","arguments":{"capabilities":[%s]}}`,
		args, strings.Join(caps, ","))
}

// restoreArgs are the migrate-set-parameters arguments that set back what
// plan changed; warn says so where the forced limit's earlier value is
// not known.
func restoreArgs(plan *QEMUPlan, warn bool) map[string]any {
	var set map[string]json.RawMessage
	if b, err := json.Marshal(plan.Parameters); err == nil {
		_ = json.Unmarshal(b, &set)
	}
	args := map[string]any{}
	if plan.prior != nil {
		for k := range set {
			if v, ok := plan.prior.params[k]; ok {
				args[k] = v
			}
		}
		if plan.Forced {
			if v, ok := plan.prior.params["downtime-limit"]; ok {
				args["downtime-limit"] = v
			}
		}
	}
	if _, ok := args["downtime-limit"]; plan.Forced && !ok {
		if plan.forcedFrom <= 0 {
			if warn {
				slog.Warn("the migration's switch-over was forced: the source QEMU keeps downtime-limit 2000 s, as what it had before could not be read; set it with migrate-set-parameters")
			}
		} else {
			args["downtime-limit"] = plan.forcedFrom
		}
	}
	return args
}

// ForcedDowntimeLimit is the downtime-limit (ms) a forced switch-over
// sets: QEMU's largest (2000 s).
const ForcedDowntimeLimit = 2000 * 1000

// QEMUParams are the migrate-set-parameters members a plan sends; zero
// fields are left out (QEMU keeps its own value), but for the two caps,
// always sent, 0 meaning none: left out, QEMU kept its default (128 MiB/s
// in 7.2) or the cap an earlier migration set, 1 MiB/s say, for a
// migration asked with no cap (found by a review walk).
type QEMUParams struct {
	MaxBandwidth         uint64 `json:"max-bandwidth"`
	MaxPostcopyBandwidth uint64 `json:"max-postcopy-bandwidth"`
	DowntimeLimit        int64  `json:"downtime-limit,omitempty"` // ms
	XBZRLECacheSize      uint64 `json:"xbzrle-cache-size,omitempty"`
	CPUThrottleInitial   int    `json:"cpu-throttle-initial,omitempty"`
	CPUThrottleIncrement int    `json:"cpu-throttle-increment,omitempty"`
	CPUThrottleTailslow  *bool  `json:"cpu-throttle-tailslow,omitempty"`
}

// PostcopyAfterSyncs is the dirty-sync-count at which a tsmc plan switches
// to post-copy: QEMU syncs once at the start of the migration, then at the
// end of each pass over RAM, so 2 means the first copy is done (TSMC's
// stage 1).
const PostcopyAfterSyncs = 2

// XBZRLE cache bounds: QEMU's default cache, 64 MiB, is the least (but
// never more than guest RAM), 1 GiB the most. QEMU wants a power of two.
const (
	minXBZRLECache = 64 << 20
	maxXBZRLECache = 1 << 30
)

// Throttle bounds for auto-converge (QEMU's parameters take 1…99).
const (
	qemuThrottleMax = 99
)

// PlanQEMU maps p onto QEMU's own migration for a guest of ramBytes:
//
//   - precopy: plain pre-copy, no capability.
//   - mecom: xbzrle (pages resent are delta-encoded against a cache of
//     what was sent), the cache sized by xbzrleCacheSize. QEMU's codecs
//     are not MECOM's per-page-class ones, but xbzrle is what QEMU has to
//     cut the bytes of resent pages without help from the destination.
//     multifd with multifd-compression zstd works under TCG on QEMU 7.2 too,
//     but needs multifd and zstd set on the destination as well (without
//     them the source fails: "Unable to write to socket: Broken pipe"), so
//     default flags (no --dest-qmp) could not use it; and on a 64 MiB
//     guest dirtying all its RAM every round it sent 816 MB in 7.5 s where
//     xbzrle sent 215 MB in 14 s (plain pre-copy never converged).
//   - throttle: auto-converge. pagecast's throttle aims to fit the downtime
//     limit by round TargetRound (DefaultTargetRound); QEMU throttles at
//     most every second dirty sync once the guest dirties faster than half
//     the transfer rate, from cpu-throttle-initial, adding
//     cpu-throttle-increment. So the throttle starts where it must to get
//     there in the steps left before that round, and each step covers an
//     equal share of the way to 99 %. tailslow stays off: it assumes the
//     dirty rate falls with the CPU share, which a hot set does not
//     (see sender.throttle).
//   - precopy+postcopy: postcopy-ram at both ends, and
//     migrate-start-postcopy once a pass leaves more than half of what the
//     pass before it left, or past MaxSyncs (QEMUPlan.Stalled): QEMU's
//     pre-copy while it converges, its post-copy when it stops.
//   - tsmc: postcopy-ram at both ends, and migrate-start-postcopy at
//     dirty-sync-count 2, when QEMU ends its first pass over RAM (it syncs
//     there once what that pass has left fits the downtime limit at the
//     measured rate). Stage 1 is that pass, stage 3 QEMU's post-copy: the
//     destination runs the guest, pages are pushed in the background and
//     pulled at first touch.
//
// predictive and the other MODE+mecom and MODE+postcopy combinations need
// pagecast's engine and are refused. QEMU has no round cap: MaxRounds
// becomes MaxSyncs, a forced switch-over (precopy+postcopy: to post-copy;
// not for tsmc, which switches to post-copy after its first pass anyway). A Profile is reported in Notes and otherwise ignored.
func PlanQEMU(p Params, ramBytes uint64) (QEMUPlan, error) {
	if p.DowntimeLimit < 0 {
		return QEMUPlan{}, fmt.Errorf("negative downtime limit %v", p.DowntimeLimit)
	}
	mode := p.Mode
	if mode == "" {
		mode = ModePrecopy
	}
	m, err := parseMode(mode)
	if err != nil {
		return QEMUPlan{}, err
	}
	const engine = "pagecast's engine (--engine pagecast, or auto, the default), which runs on a QEMU source whose guest RAM is shared memory and whose dirty pages pagecast tracks, in modes without post-copy"
	plan := QEMUPlan{Mode: mode, live: &planLive{}, Parameters: QEMUParams{
		MaxBandwidth:  p.MaxBandwidth,
		DowntimeLimit: int64((p.DowntimeLimit + time.Millisecond - 1) / time.Millisecond),
	}}
	switch {
	case m.policy == ModePredictive && m.fallback && !m.mecom:
		return QEMUPlan{}, fmt.Errorf("migration mode %q: on QEMU, +%s is QEMU's own post-copy, which follows QEMU's pre-copy, not predictive's rounds: that is %s+%s; predictive alone runs on %s", mode, Postcopy, ModePrecopy, Postcopy, engine)
	case m.policy == ModePredictive:
		return QEMUPlan{}, fmt.Errorf("migration mode %q: predictive needs %s", mode, engine)
	case m.fallback && m.mecom:
		return QEMUPlan{}, fmt.Errorf("migration mode %q: on QEMU, +%s is QEMU's post-copy, which is not planned with its compression (xbzrle); %s+%s needs %s", mode, Postcopy, MECOM, Postcopy, engine)
	case m.fallback:
		plan.Capabilities = []string{CapPostcopyRAM}
		plan.DestCapabilities = []string{CapPostcopyRAM, CapPostcopyBlocktime}
		plan.Postcopy, plan.Stalled = true, true
	case m.mecom && m.policy == ModeTSMC:
		return QEMUPlan{}, fmt.Errorf("migration mode %q: on QEMU, tsmc is QEMU's post-copy, which does not compress; %s+%s needs pagecast's engine at both ends (pagecast vm run)", mode, ModeTSMC, MECOM)
	case m.mecom && m.policy != ModePrecopy:
		return QEMUPlan{}, fmt.Errorf("migration mode %q: QEMU's compression (xbzrle) combines with its pre-copy only, so %s+%s needs %s", mode, m.policy, MECOM, engine)
	case m.mecom:
		plan.Capabilities = []string{CapXBZRLE}
		plan.Parameters.XBZRLECacheSize = xbzrleCacheSize(ramBytes)
	case m.policy == ModeThrottle:
		plan.Capabilities = []string{CapAutoConverge}
		initial, increment := throttleSteps(DefaultTargetRound)
		off := false
		plan.Parameters.CPUThrottleInitial = initial
		plan.Parameters.CPUThrottleIncrement = increment
		plan.Parameters.CPUThrottleTailslow = &off
	case m.policy == ModeTSMC:
		plan.Capabilities = []string{CapPostcopyRAM}
		plan.DestCapabilities = []string{CapPostcopyRAM, CapPostcopyBlocktime}
		plan.Postcopy = true
	}
	if plan.Postcopy {
		// QEMU drops max-bandwidth at the switch to post-copy and pushes
		// the rest unlimited unless max-postcopy-bandwidth says otherwise:
		// the link's rate holds in stage 3 too, as the simulator has it.
		// (Unlimited, a 64 MiB TCG guest's last 12.8 MiB went in a few
		// milliseconds, 2026-12-02.)
		plan.Parameters.MaxPostcopyBandwidth = p.MaxBandwidth
	}
	if p.MaxRounds > 0 && (!plan.Postcopy || plan.Stalled) {
		// Sync k+1 ends round k.
		plan.MaxSyncs = p.MaxRounds + 1
	}
	if p.Profile != "" {
		plan.Notes = append(plan.Notes, fmt.Sprintf("profile %s ignored: only predictive uses one", p.Profile))
	}
	return plan, nil
}

// xbzrleCacheSize is a quarter of ramBytes, rounded up to a power of two,
// at least minXBZRLECache but no more than ramBytes (rounded up), at most
// maxXBZRLECache. Measured on a 64 MiB TCG guest whose writes reach all
// of RAM every round (hotset at full speed): with a 16 MiB cache 98 % of
// resent pages missed it and the migration took 23 s and 2.9 GB; with
// 64 MiB none missed, 14 s and 215 MB.
func xbzrleCacheSize(ramBytes uint64) uint64 {
	pow2 := func(n uint64) uint64 {
		if n <= 1 {
			return 1
		}
		return 1 << bits.Len64(n-1)
	}
	size := max(pow2(ramBytes/4), minXBZRLECache)
	return min(size, pow2(max(ramBytes, 4096)), maxXBZRLECache)
}

// throttleSteps gives cpu-throttle-initial and -increment so that QEMU's
// auto-converge is at qemuThrottleMax when round targetRound ends. QEMU's
// first dirty sync starts the migration and sync k+1 ends round k; a
// throttle step needs two syncs in a row over a second apart that each
// found more dirtied than half what was sent (throttle-trigger-threshold),
// so steps fall on syncs 3, 5, …: targetRound/2 of them by the end of the
// target round, at least one. The first step sets the initial value, each
// later one adds the increment, in equal parts of the way to the max.
// (For the default target, 4: 50, then 99, QEMU's max-cpu-throttle.
// Measured on a 64 MiB TCG guest dirtying all its RAM every round: 2–3.5 s,
// downtime 67–230 ms; QEMU's own 20 and 10 took 7.9 s and overran the
// 300 ms downtime limit at 427 ms; 99 at once took 3.1–5.5 s.)
func throttleSteps(targetRound int) (initial, increment int) {
	steps := max(1, targetRound/2)
	share := (qemuThrottleMax + steps - 1) / steps
	return min(qemuThrottleMax, share), max(1, min(qemuThrottleMax, share))
}

// SameMemorySize refuses a destination QEMU (dst, --dest-qmp) whose guest
// RAM differs in size from the source's, before anything starts. QEMU's
// destination refuses it only once the stream comes ("Size mismatch") and
// exits, which the source sees as a hang-up (said then to be a destination
// not waiting with -incoming; found by a new-user walk); pagecast's engine
// refused it in its handshake, after mode auto had watched the guest for
// seconds (walk 49). Where either QEMU does not say, the migration finds
// out.
func SameMemorySize(src, dst qmp.Monitor) error {
	return destMemorySize(memorySize(src), dst)
}

// memorySize is the guest RAM of the QEMU behind m; 0 where it does not
// say.
func memorySize(m qmp.Monitor) uint64 {
	var mem struct {
		BaseMemory uint64 `json:"base-memory"`
	}
	if clientRun(m, "query-memory-size-summary", nil, &mem) != nil {
		return 0
	}
	return mem.BaseMemory
}

// destMemorySize is SameMemorySize for a source of s bytes of RAM.
func destMemorySize(s uint64, dst qmp.Monitor) error {
	d := memorySize(dst)
	if s == 0 || d == 0 || s == d {
		return nil
	}
	return fmt.Errorf("the destination QEMU (--dest-qmp) has %s of guest RAM, the source %s: a migration needs the same (QEMU's own destination would end: \"Size mismatch\"); start the destination with -m %dM",
		units.FormatBytes(float64(d)), units.FormatBytes(float64(s)), s>>20)
}

// SameRAMBlocks refuses a destination QEMU (dst, --dest-qmp) that lacks a
// memory backend of the source's, by its id, or has it of another size,
// before anything starts: a backend's id names its RAM block, which the
// stream names (with x-ignore-shared too), and QEMU's destination refuses
// an unknown one only once the whole RAM has come ("Unknown ramblock",
// walk 114: a destination of id=pc.ram for a source's ram0). Where either
// QEMU does not say, the migration finds out.
func SameRAMBlocks(src, dst qmp.Monitor) error {
	s, d := memdevs(src), memdevs(dst)
	if s == nil || d == nil {
		return nil
	}
	for _, id := range slices.Sorted(maps.Keys(s)) {
		size, ok := d[id]
		switch {
		case !ok:
			return fmt.Errorf("the destination QEMU (--dest-qmp) has no memory backend %q, which holds %s of the source's RAM (its memory backends: %s): "+
				"a migration names RAM blocks by their backend's id (QEMU's own destination would end: \"Unknown ramblock\"); start the destination with the source's -object memory-backend-…,id=%s",
				id, units.FormatBytes(float64(s[id])), strings.Join(slices.Sorted(maps.Keys(d)), ", "), id)
		case size != s[id]:
			return fmt.Errorf("the destination QEMU's (--dest-qmp) memory backend %q holds %s, the source's %s: a migration needs the same (QEMU's own destination would end: \"Length mismatch\")",
				id, units.FormatBytes(float64(size)), units.FormatBytes(float64(s[id])))
		}
	}
	return nil
}

// memdevs are the sizes of the memory backends of the QEMU behind m, by
// id (query-memdev: RAM given by -m alone is "pc.ram"); nil where it does
// not say.
func memdevs(m qmp.Monitor) map[string]uint64 {
	var devs []struct {
		ID   string `json:"id"`
		Size uint64 `json:"size"`
	}
	if clientRun(m, "query-memdev", nil, &devs) != nil {
		return nil
	}
	sizes := map[string]uint64{}
	for _, d := range devs {
		if d.ID == "" {
			return nil // an old QEMU's: no names to compare
		}
		sizes[d.ID] = d.Size
	}
	return sizes
}

// SameVCPUs refuses a destination QEMU (dst, --dest-qmp) with another
// number of vCPUs than the source's, before anything starts: QEMU's own
// destination takes the whole stream, then refuses the state ("Unknown
// savevm section or instance 'cpu_common' 1") and exits (walk 56); the
// wire's handshake refuses it for pagecast's engine, after mode auto has
// watched the guest. Where either QEMU does not say, the migration finds
// out.
func SameVCPUs(src, dst qmp.Monitor) error {
	s, d := vcpuCount(src), vcpuCount(dst)
	if s == 0 || d == 0 || s == d {
		return nil
	}
	vcpus := "vCPUs"
	if d == 1 {
		vcpus = "vCPU" // walk 160: "has 1 vCPUs"
	}
	return fmt.Errorf("the destination QEMU (--dest-qmp) has %d %s, the source %d: a migration needs the same (QEMU's own destination would refuse the state once it came); start the destination with the source's vCPUs (-smp %d, vm run --vcpus %d, and -device for any hot-plugged)",
		d, vcpus, s, s, s)
}

// vcpuCount is the number of vCPUs of the QEMU behind m; 0 where it does
// not say.
func vcpuCount(m qmp.Monitor) int {
	var cpus []struct {
		Index int `json:"cpu-index"`
	}
	if clientRun(m, "query-cpus-fast", nil, &cpus) != nil {
		return 0
	}
	return len(cpus)
}

// SameStorage refuses a destination QEMU (dst, --dest-qmp), where both it
// and the source (src) run on this host as processes srcPID and dstPID,
// whose disk, by the device it backs, is another file than the source's,
// before anything starts: neither QEMU's migration nor pagecast's moves a
// disk, so the guest would run on there with another disk's blocks (walk
// 114: a stale copy of the image, the migration completed and verified,
// and the guest's disk lost the blocks written since the copy). Each file
// is looked up as its QEMU sees it (/proc/PID/root). Read-only media, and
// a disk that either QEMU does not name by a file, are left alone.
func SameStorage(src, dst qmp.Monitor, srcPID, dstPID int) error {
	if srcPID == 0 || dstPID == 0 {
		return nil
	}
	s, d := diskFiles(src), diskFiles(dst)
	for _, dev := range slices.Sorted(maps.Keys(s)) {
		there, ok := d[dev]
		if !ok {
			continue
		}
		here := s[dev]
		hi, herr := os.Stat(fmt.Sprintf("/proc/%d/root%s", srcPID, here))
		ti, terr := os.Stat(fmt.Sprintf("/proc/%d/root%s", dstPID, there))
		if herr != nil || terr != nil || os.SameFile(hi, ti) {
			continue
		}
		return fmt.Errorf("the destination QEMU (--dest-qmp) opens %s for the disk of %s, the source %s: a migration moves no disk, "+
			"so the guest would run on there with that file's blocks, not the ones it wrote here; start the destination with the source's disk (shared storage)", there, dev, here)
	}
	return nil
}

// diskFiles are the files the QEMU behind m opens read-write for its
// disks (query-block), by the device each backs (its drive's name, else
// its device's path); none where it does not say.
func diskFiles(m qmp.Monitor) map[string]string {
	var blocks []struct {
		Device   string `json:"device"`
		QDev     string `json:"qdev"`
		Inserted *struct {
			File string `json:"file"`
			RO   bool   `json:"ro"`
		} `json:"inserted"`
	}
	if clientRun(m, "query-block", nil, &blocks) != nil {
		return nil
	}
	files := map[string]string{}
	for _, b := range blocks {
		dev := b.Device
		if dev == "" {
			dev = b.QDev // -blockdev's, as libvirt gives them
		}
		if dev == "" || b.Inserted == nil || b.Inserted.RO || !strings.HasPrefix(b.Inserted.File, "/") {
			continue
		}
		files[dev] = b.Inserted.File
	}
	return files
}

// KVMNotToTCG refuses a destination QEMU (dst, --dest-qmp) under TCG for a
// source under KVM, before anything starts: the destination takes every
// page, then refuses the state ("Unknown savevm section or instance
// 'kvmclock' 0") and exits (walk 69). A guest under TCG moves to KVM.
// Where either QEMU does not say, the migration finds out.
func KVMNotToTCG(src, dst qmp.Monitor) error {
	s, sok := kvmEnabled(src)
	d, dok := kvmEnabled(dst)
	if !sok || !dok || !s || d {
		return nil
	}
	return errors.New("the source QEMU runs its guest under KVM and the destination (--dest-qmp) under TCG, which cannot load a KVM guest's device state (its kvmclock; QEMU's destination would refuse it once every page had come): start the destination with --accel kvm (a guest under TCG moves to KVM, not back)")
}

// kvmEnabled is query-kvm's enabled for the QEMU behind m; ok false where
// it does not say.
func kvmEnabled(m qmp.Monitor) (enabled, ok bool) {
	var kvm struct {
		Enabled bool `json:"enabled"`
	}
	if clientRun(m, "query-kvm", nil, &kvm) != nil {
		return false, false
	}
	return kvm.Enabled, true
}

// SetupQEMU plans p for the QEMU behind src (its RAM from
// query-memory-size-summary) and sends the plan: the destination's
// capabilities on dst first (it must have them before the stream
// arrives), then the source's capabilities and parameters. dst may be nil
// unless the plan needs it (tsmc: ErrNeedDestQMP). Nothing goes out when
// the mode is refused.
func SetupQEMU(src, dst qmp.Monitor, p Params) (QEMUPlan, error) {
	var mem struct {
		BaseMemory uint64 `json:"base-memory"`
	}
	if err := clientRun(src, "query-memory-size-summary", nil, &mem); err != nil {
		return QEMUPlan{}, err
	}
	plan, err := PlanQEMU(p, mem.BaseMemory)
	if err != nil {
		return QEMUPlan{}, err
	}
	if len(plan.DestCapabilities) > 0 && dst == nil {
		return QEMUPlan{}, fmt.Errorf("%s: %w", p.Mode, ErrNeedDestQMP)
	}
	if dst != nil {
		if err := destMemorySize(mem.BaseMemory, dst); err != nil {
			return QEMUPlan{}, err
		}
	}
	var cpus []struct {
		Index int `json:"cpu-index"`
	}
	if err := clientRun(src, "query-cpus-fast", nil, &cpus); err == nil {
		plan.Slowdown.VCPUs = len(cpus)
	} // else the slowdown is not known: QEMU before 2.12
	if note := TCGLosesWrites(src); note != "" {
		plan.Notes = append(plan.Notes, note)
		plan.LosesWrites = true
	}
	plan.prior = readSettings(src)

	if dst != nil {
		if caps, err := qemu.MigrationCapabilities(dst); err == nil {
			for _, c := range destCaps {
				if on, ok := caps[c]; ok {
					plan.destKnown = append(plan.destKnown, c)
					if on {
						plan.destPrior = append(plan.destPrior, c)
					}
				}
			}
		}
		// The destination needs only post-copy's capabilities; turning
		// them off elsewhere undoes an earlier tsmc's.
		if err := setCapabilities(dst, destCaps, plan.DestCapabilities); err != nil {
			// postcopy-blocktime only counts the guest's waits: a QEMU
			// without it (before 3.0) migrates all the same.
			without := slices.DeleteFunc(slices.Clone(plan.DestCapabilities), func(c string) bool { return c == CapPostcopyBlocktime })
			if len(without) == len(plan.DestCapabilities) || setCapabilities(dst, []string{CapPostcopyRAM}, without) != nil {
				return QEMUPlan{}, fmt.Errorf("destination: %w", err)
			}
			plan.DestCapabilities = without
			plan.Notes = append(plan.Notes, fmt.Sprintf("the destination QEMU refused %s (%v): how long the guest waits for pages in post-copy will not be known", CapPostcopyBlocktime, err))
		}
	}
	if err := setCapabilities(src, qemuCapabilities, plan.Capabilities); err != nil {
		if dst != nil {
			plan.RestoreDest(dst) // set above: not left behind (review 63)
		}
		return QEMUPlan{}, err
	}
	if err := clientRun(src, "migrate-set-parameters", plan.Parameters, nil); err != nil {
		restoreSettings(src, &plan)
		if dst != nil {
			plan.RestoreDest(dst)
		}
		return QEMUPlan{}, err
	}
	return plan, nil
}

// TCGLosesWrites says, for a source QEMU before 9.0 whose guest runs
// under TCG, that QEMU's own migration loses some of the guest's writes:
// its dirty-bitmap sync cleared bits without resetting the vCPUs' TLB
// entries, so a page already written since the last sync is not seen
// written again (fixed in QEMU 9.0 by "migration: ... bring the TCG TLB up
// to date", cpu_physical_memory_dirty_bits_cleared). Measured on this
// project's machines with QEMU 7.2.22, memory compared with both guests
// paused after QEMU's pre-copy: 34 to 191 of a 256 MiB Linux guest's 65 536
// pages stale on the destination, whose kernel then crashed (found by a
// walk), and 1 page of pagecast's own guest. "" where it does not apply or
// cannot be asked.
func TCGLosesWrites(src qmp.Monitor) string {
	var kvm struct {
		Enabled bool `json:"enabled"`
	}
	var v struct {
		QEMU struct {
			Major, Minor, Micro int
		} `json:"qemu"`
	}
	if src == nil || clientRun(src, "query-kvm", nil, &kvm) != nil || kvm.Enabled ||
		clientRun(src, "query-version", nil, &v) != nil || v.QEMU.Major == 0 || v.QEMU.Major >= 9 {
		return ""
	}
	return fmt.Sprintf("QEMU %d.%d.%d's own migration of a guest under TCG loses some of its writes (a QEMU bug, fixed in 9.0: "+
		"its dirty-bitmap sync leaves the vCPUs' TLB marking pages already written): measured, 34 to 191 pages of a 256 MiB Linux guest "+
		"went stale, and its kernel crashed on the destination; pagecast's engine tracks writes with its own plugin and checks the memory "+
		"(--engine pagecast, the guest RAM shared; not for the post-copy modes)", v.QEMU.Major, v.QEMU.Minor, v.QEMU.Micro)
}

// QEMUFaultTime is the vCPU time, in milliseconds, the guest waited for
// pages in QEMU's post-copy, as the destination dst counts it
// (postcopy-vcpu-blocktime, summed): ok is false where it does not say
// (no post-copy, or a plan without CapPostcopyBlocktime).
func QEMUFaultTime(dst qmp.Monitor) (ms int64, ok bool, err error) {
	var r struct {
		VCPU []int64 `json:"postcopy-vcpu-blocktime"`
	}
	if err := clientRun(dst, "query-migrate", nil, &r); err != nil {
		return 0, false, fmt.Errorf("destination: %w", err)
	}
	for _, v := range r.VCPU {
		ms += v
	}
	return ms, r.VCPU != nil, nil
}

// setCapabilities sends migrate-set-capabilities: each of all, on if it is
// in on.
func setCapabilities(mon qmp.Monitor, all, on []string) error {
	type capability struct {
		Capability string `json:"capability"`
		State      bool   `json:"state"`
	}
	caps := make([]capability, 0, len(all))
	for _, c := range all {
		caps = append(caps, capability{c, contains(on, c)})
	}
	return clientRun(mon, "migrate-set-capabilities", map[string]any{"capabilities": caps}, nil)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// qemuNow is WaitQEMU's clock: a test's seam.
var qemuNow = time.Now

// PostcopyStall is how long WaitQEMU waits in post-copy for QEMU to move
// a byte before it says the destination is gone: QEMU 7.2 does not always
// notice one killed (once in a clean-clone CI on 2026-12-02 it stayed
// postcopy-active for the test's 60 s, where it usually turns
// postcopy-paused at once).
var PostcopyStall = 10 * time.Second

// PostcopyGiveUp is how long WaitQEMU follows a post-copy that moves
// nothing while the destination is not known to be gone (QEMUPlan.DestAnswers:
// it answers, or it does not answer but its connection stands, as a
// stopped process's does): a destination stopped for a while (SIGSTOP)
// and then continued completes the migration.
var PostcopyGiveUp = time.Minute

// ErrNoAnswer is QEMUPlan.DestAnswers's error for a destination whose
// monitor holds its connection but does not answer in time: stopped or
// overloaded, not gone.
var ErrNoAnswer = errors.New("the destination QEMU does not answer (stopped, or overloaded)")

// PrecopyStall is how long WaitQEMU waits in QEMU's pre-copy (active) for
// QEMU to move a byte before it cancels the migration (migrate_cancel),
// the guest running on at the source, as pagecast's engine gives up on a
// link that moves nothing: QEMU itself waits for ever on a destination
// that stopped (SIGSTOP), its progress unchanged.
var PrecopyStall = 10 * time.Second

// WaitQEMU is Wait for a migration that plan set up. For a post-copy plan
// it sends migrate-start-postcopy once, as soon as a reply shows the
// migration active with dirty-sync-count at PostcopyAfterSyncs (a
// migration that completes first, everything having fit the downtime
// limit, never switches), or, for a Stalled plan, once pre-copy stops
// converging (see QEMUPlan.Stalled), or at once where plan.SwitchNow is
// set; and it returns an error at postcopy-paused,
// where QEMU has lost the link after the switch and waits, the guest
// stopped, for someone to recover it. Once dirty-sync-count passes
// plan.MaxSyncs it forces the switch-over (ForcedDowntimeLimit) and sets
// plan.Forced, or for a Stalled plan switches to post-copy. In post-copy,
// PostcopyStall without a byte moved is an error too; in pre-copy,
// PrecopyStall without one cancels the migration (migrate_cancel) and is
// an error.
func WaitQEMU(ctx context.Context, mon qmp.Monitor, plan *QEMUPlan, interval time.Duration, progress func(Info)) (Info, error) {
	started := false
	var lastSync, lastRemaining uint64 // Stalled: the latest dirty sync seen, and ram.remaining first seen after it
	var moved uint64                   // pre-copy or post-copy: ram.transferred when it last grew
	var movedAt time.Time
	var movedIn string      // the status moved was seen in
	var checkedAt time.Time // post-copy stalled: when DestAnswers was last asked
	var throttled float64   // vCPU-ms the throttle withheld, as polled
	var lastPct int
	var lastAt time.Time
	var settled *Info // a pre-copy WaitQEMU cancelled, as it ended
	info, err := wait(ctx, mon, interval, func(i Info) error {
		if progress != nil {
			progress(i)
		}
		if ctx.Err() != nil {
			// Cancelling (progress may have cancelled on this very
			// reply: migrate --timeout): the plan starts nothing more.
			// Post-copy started here left the cancel to race it, and
			// the follower stopped in postcopy-active (review 87).
			return nil
		}
		// The throttle held at the level last seen until this reply;
		// QEMU throttles only while the guest runs here (active).
		if now := qemuNow(); plan.Slowdown.VCPUs > 0 {
			if !lastAt.IsZero() {
				throttled += float64(lastPct) / 100 * float64(now.Sub(lastAt).Milliseconds()) * float64(plan.Slowdown.VCPUs)
				plan.Slowdown.ThrottleTime = int64(throttled)
			}
			lastPct, lastAt = 0, now
			if i.Status == StatusActive {
				lastPct = i.CPUThrottlePercentage
			}
		}
		if (i.Status == StatusActive || i.Status == StatusPostcopy) && i.RAM != nil &&
			(i.RAM.Transferred != moved || movedAt.IsZero() || i.Status != movedIn) {
			moved, movedAt, movedIn = i.RAM.Transferred, time.Now(), i.Status
		} else if i.Status == StatusActive && i.RAM != nil {
			if d := time.Since(movedAt); d >= PrecopyStall {
				// The guest still runs here: cancelled, it runs on.
				if err := Cancel(mon); err != nil {
					return fmt.Errorf("migration %s: QEMU's pre-copy has moved nothing for %v (the destination stopped or the link stalled), and migrate_cancel failed: %w",
						i.Status, d.Round(time.Second), err)
				}
				si, err := settleCancel(mon, i)
				if err != nil {
					return fmt.Errorf("QEMU's pre-copy moved nothing for %v: the destination stopped or the link stalled; %w", d.Round(time.Second), err)
				}
				if si.Status == StatusCompleted {
					return nil // its last bytes went after all; the next reply says completed
				}
				if si.RAM == nil {
					si = carryCounts(si, i) // review 90: QEMU's cancelled reply has none
				}
				settled = &si // what WaitQEMU returns: cancelled, not the active it cancelled
				return stalledError(fmt.Sprintf("migration cancelled: QEMU's pre-copy moved nothing for %v: the destination stopped or the link stalled", d.Round(time.Second)))
			}
		}
		if i.Status == StatusPostcopy && i.RAM != nil {
			if d := time.Since(movedAt); d >= PostcopyStall && time.Since(checkedAt) >= PostcopyStall {
				checkedAt = time.Now()
				if plan.DestAnswers == nil {
					return fmt.Errorf("migration %s: QEMU's post-copy has moved nothing for %v: the destination is gone or stalled, "+
						"and the guest waits there for pages still on the source (if it is gone, the guest is lost with it; "+
						"if it only stalled, the migration may yet complete: query-migrate on the source tells; "+
						"if the link broke, migrate-pause on the source, then migrate-recover on the destination and migrate with resume)",
						i.Status, d.Round(time.Second))
				}
				dest := plan.DestAnswers()
				switch {
				case d < PostcopyGiveUp && (dest == nil || errors.Is(dest, ErrNoAnswer)):
					slog.Warn("QEMU's post-copy has moved nothing: following on, as the destination QEMU is still there",
						"for", d.Round(time.Second), "destination", destState(dest), "give_up_after", PostcopyGiveUp)
				case d >= PostcopyGiveUp:
					// Detached: the migration goes on, and is no failure
					// yet (its metrics said failed; found by a review
					// walk).
					return &Detached{Status: i.Status, Why: fmt.Sprintf("migration %s: QEMU's post-copy has moved nothing for %v, and pagecast stops following it: "+
						"the destination QEMU %s, and the guest waits there for pages still on the source; "+
						"if it goes on, the migration may yet complete (query-migrate on the source tells); "+
						"if the link broke, QEMU turns postcopy-paused: migrate-recover on the destination, then migrate with resume on the source",
						i.Status, d.Round(time.Second), destState(dest))}
				default:
					return fmt.Errorf("migration %s: QEMU's post-copy has moved nothing for %v and the destination QEMU is gone (%v): "+
						"the guest ran there, and is lost with it",
						i.Status, d.Round(time.Second), dest)
				}
			}
		}
		if plan.MaxSyncs > 0 && !plan.Forced && !plan.Stalled && i.Status == StatusActive && i.RAM != nil && i.RAM.DirtySyncCount > uint64(plan.MaxSyncs) {
			unlock := plan.lock() // Adjust reads Forced
			plan.Forced = true
			var params struct {
				DowntimeLimit int64 `json:"downtime-limit"`
			}
			if clientRun(mon, "query-migrate-parameters", nil, &params) == nil {
				plan.forcedFrom = params.DowntimeLimit
			}
			// Refused only when the migration has just ended, which the
			// next reply shows.
			_ = clientRun(mon, "migrate-set-parameters", map[string]any{"downtime-limit": ForcedDowntimeLimit}, nil) // the downtime limit alone: QEMUParams would lift the caps
			unlock()
		}
		if !plan.Postcopy {
			return nil
		}
		if i.Status == StatusPostcopyPaused {
			return fmt.Errorf("migration %s: the guest waits on the destination for pages still on the source (recover: migrate-recover on the destination, then migrate with resume on the source)", i.Status)
		}
		if !started && plan.SwitchNow != "" && i.Status == StatusActive {
			plan.Switched = plan.SwitchNow
		} else if started || i.Status != StatusActive || i.RAM == nil || i.RAM.DirtySyncCount < PostcopyAfterSyncs {
			return nil
		} else if plan.Stalled {
			n, left := i.RAM.DirtySyncCount, i.RAM.Remaining
			if n <= lastSync {
				return nil
			}
			stuck := lastSync >= PostcopyAfterSyncs && stalled(lastRemaining, left)
			capped := plan.MaxSyncs > 0 && n > uint64(plan.MaxSyncs)
			before := lastRemaining
			lastSync, lastRemaining = n, left
			switch {
			case stuck:
				plan.Switched = fmt.Sprintf("pre-copy stopped converging: the pass before dirty sync %d left %s, more than half the %s the one before it left",
					n, units.FormatBytes(float64(left)), units.FormatBytes(float64(before)))
			case capped:
				plan.Switched = fmt.Sprintf("round cap: forced after %d dirty syncs", n)
			default:
				return nil
			}
		} else {
			plan.Switched = fmt.Sprintf("after the first full pass (dirty sync %d)", i.RAM.DirtySyncCount)
		}
		started = true
		// Refused only when the migration has just ended or failed, which
		// the next reply shows: an error here needs no answer.
		_ = clientRun(mon, "migrate-start-postcopy", nil, nil)
		return nil
	})
	if settled != nil {
		info = *settled
	}
	if ended(info, err) {
		// The source QEMU gets its settings back, whether it keeps its
		// guest or a later cont runs it again (it kept the forced
		// limit, a cap, auto-converge for whatever migrated it next,
		// pagecast or not).
		plan.Restore(mon)
	}
	return info, err
}

// ended reports whether the migration WaitQEMU followed has ended, as its
// last reply info says: not where QEMU's monitor went silent, nor in a
// post-copy that goes on.
func ended(info Info, err error) bool {
	if errors.Is(err, ErrMonitorSilent) {
		return false
	}
	return info.Status == StatusCompleted || info.Status == StatusFailed || info.Status == StatusCancelled
}

// destState says what DestAnswers said, for an error.
func destState(err error) string {
	switch {
	case err == nil:
		return "answers"
	case errors.Is(err, ErrNoAnswer):
		return "does not answer (stopped, or overloaded)"
	}
	return fmt.Sprintf("could not be asked (%v)", err)
}
