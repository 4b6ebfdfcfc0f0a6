package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/digitalocean/go-qemu/qmp"

	"github.com/pagecast/pagecast/bitmap"
	"github.com/pagecast/pagecast/guest"
	"github.com/pagecast/pagecast/migrator"
	"github.com/pagecast/pagecast/simulate"
	"github.com/pagecast/pagecast/trace"
)

// wallGuest is a simulated guest that runs on the wall clock while auto
// watches it: each harvest first brings its virtual clock up to the time
// passed. Its memory holds random bytes, as a busy guest's does.
type wallGuest struct {
	*simulate.Guest
	clock *migrator.VirtualClock
	mem   []byte
	mu    sync.Mutex
	last  time.Time
}

func (g *wallGuest) Memory() []byte { return g.mem }

func (g *wallGuest) StartDirtyLog() (migrator.DirtyLog, error) {
	g.catchUp()
	l, err := g.Guest.StartDirtyLog()
	return wallLog{l, g}, err
}

func (g *wallGuest) catchUp() {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := time.Now()
	g.clock.Advance(now.Sub(g.last))
	g.last = now
}

type wallLog struct {
	migrator.DirtyLog
	g *wallGuest
}

func (l wallLog) Harvest() (*bitmap.Bitmap, error) { l.g.catchUp(); return l.DirtyLog.Harvest() }

// newWallGuest is a wallGuest of pages pages running the synthetic
// workload spec in epochs of 1 ms, with opts, and the workload.
func newWallGuest(t *testing.T, spec string, pages uint64, opts simulate.GuestOptions) (*wallGuest, simulate.Workload) {
	t.Helper()
	w, err := simulate.ParseSynthetic(spec, pages, time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	clock := migrator.NewVirtualClock(time.Unix(0, 0))
	sg, err := simulate.NewGuest(w, clock, opts)
	if err != nil {
		t.Fatal(err)
	}
	mem := make([]byte, pages*migrator.PageSize)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range mem {
		mem[i] = byte(rng.Uint32())
	}
	return &wallGuest{Guest: sg, clock: clock, mem: mem, last: time.Now()}, w
}

// pausedGuest is a wallGuest that says it is paused while paused is set.
type pausedGuest struct {
	*wallGuest
	paused atomic.Bool
}

func (g *pausedGuest) Running() (bool, string) {
	if g.paused.Load() {
		return false, "paused"
	}
	return g.wallGuest.Running()
}

// TestWatchGuestPaused: a guest paused while auto watches it, and resumed
// before the watch ends, is refused saying so: what it wrote paused is not
// its pace (walk 130: a QMP stop during the watch, predicted -95%).
func TestWatchGuestPaused(t *testing.T) {
	g, _ := newWallGuest(t, "uniform:rate=100000", 4096, simulate.GuestOptions{})
	pg := &pausedGuest{wallGuest: g}
	go func() {
		time.Sleep(100 * time.Millisecond)
		pg.paused.Store(true)
		time.Sleep(500 * time.Millisecond)
		pg.paused.Store(false)
	}()
	_, _, _, err := watchGuest(t.Context(), pg, 10)
	if !errors.Is(err, errPausedWatch) || !strings.Contains(err.Error(), "it was paused while auto watched it") {
		t.Errorf("a guest paused during the watch: %v, want it refused saying so", err)
	}
}

// TestWatchGuestHotRewrites: a guest that rewrites a hot set every
// millisecond rewrites all of it in the 20 ms a 2 s round leaves it at 99%
// throttle, so throttle never converges on it; what auto watches of it
// must say so. Watched in epochs of 100 ms, as it was until 2026-12-03,
// each page of an epoch was simulated written once in it: a round holding
// a fifth of an epoch met a fifth of the hot set, the next fewer, and
// throttle was predicted to converge in a fraction of the time it takes.
func TestWatchGuestHotRewrites(t *testing.T) {
	const pages = 4096 // 16 MiB
	// The hot set, 1024 pages, all written every 1 ms epoch.
	g, w := newWallGuest(t, "hotset:hot=1024,p=1,rate=1024000", pages, simulate.GuestOptions{})
	o, written, fresh, err := watchGuest(context.Background(), g, 3)
	if err != nil {
		t.Fatal(err)
	}
	if written < 1024 {
		t.Fatalf("watching saw %d pages written, want the hot set's 1024 at least", written)
	}
	if fresh != 0 { // every page of the hot set written in each part, the first included
		t.Errorf("%d of the %d pages written were first written in the watch's second half, want none", fresh, written)
	}
	o.Bandwidth, o.DowntimeLimit = 2<<20, 300*time.Millisecond
	predicted := simulate.Run(context.Background(), o, migrator.ModeThrottle)
	if predicted.Err != nil {
		t.Fatal(predicted.Err)
	}
	// The guest itself, simulated with the same content and link.
	truth := o
	truth.Workload, truth.Step = w, 0
	actual := simulate.Run(context.Background(), truth, migrator.ModeThrottle)
	if actual.Err != nil {
		t.Fatal(actual.Err)
	}
	p, a := time.Duration(predicted.Info.TotalTime)*time.Millisecond, time.Duration(actual.Info.TotalTime)*time.Millisecond
	t.Logf("throttle predicted from what was watched: %v, %d rounds, downtime %d ms; on the guest itself: %v, %d rounds, downtime %d ms",
		p, predicted.Info.Pagecast.Round, predicted.Info.Downtime, a, actual.Info.Pagecast.Round, actual.Info.Downtime)
	if r := float64(p)/float64(a) - 1; r < -0.3 || r > 0.3 {
		t.Errorf("predicted total time %v against %v on the guest itself (%+.0f%%), want within 30%%", p, a, 100*r)
	}
}

// TestEngineLog: the in-process engine's info and error lines, which
// migrate's summary and error repeat, go only at --log-level debug; its
// warnings always go.
func TestEngineLog(t *testing.T) {
	for _, tc := range []struct {
		level slog.Level
		want  []string
		not   []string
	}{
		{slog.LevelInfo, []string{"unchecked"}, []string{"migration completed", "migration failed", "profile"}},
		{slog.LevelDebug, []string{"unchecked", "migration completed", "migration failed"}, []string{"profile"}},
	} {
		var buf strings.Builder
		log := slog.New(engineLog{slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: tc.level})}).With("component", "migrate")
		// migrate warns of the profile itself, before it begins.
		log.Warn(migrator.ProfileMisfit, "profile", "vm.pct")
		log.Warn(migrator.ProfileDamaged, "profile", "vm.pct")
		log.Info("migration completed")
		log.Warn("the memory check did not finish; unchecked")
		log.Error("migration failed; the guest keeps running here")
		for _, w := range tc.want {
			if !strings.Contains(buf.String(), w) {
				t.Errorf("at %v the log lacks %q:\n%s", tc.level, w, buf.String())
			}
		}
		for _, n := range tc.not {
			if strings.Contains(buf.String(), n) {
				t.Errorf("at %v the log has %q:\n%s", tc.level, n, buf.String())
			}
		}
	}
}

// TestChooseEngineListening: a destination QEMU listening with its own
// -incoming gets QEMU's engine under auto, wherever it listens (a port
// forward to it too), and --engine pagecast is refused where it listens on
// --to's port.
func TestChooseEngineListening(t *testing.T) {
	if _, _, _, err := chooseEngine("pagecast", nil, "precopy", "tcp:127.0.0.1:4444", "tcp:localhost:4444"); err == nil || !strings.Contains(err.Error(), "listens on tcp:127.0.0.1:4444 with its own -incoming") {
		t.Errorf("--engine pagecast to a QEMU listening on --to's port: %v", err)
	}
	if _, engine, why, err := chooseEngine("auto", nil, "precopy", "tcp:127.0.0.1:5555", "tcp:127.0.0.1:4444"); err != nil || engine != engineQEMU || !strings.Contains(why, "listens on tcp:127.0.0.1:5555") {
		t.Errorf("auto to a QEMU listening on another port: %s (%s), %v", engine, why, err)
	}
	if !sameTCPPort("tcp:[::1]:4444", "tcp:127.0.0.1:4444") || sameTCPPort("tcp:127.0.0.1:4444", "tcp:127.0.0.1:4445") {
		t.Error("sameTCPPort")
	}
}

// TestChooseEngineNeither: a post-copy mode that neither engine runs on a
// QEMU source is refused once, saying so, whatever --engine says (auto
// said it needed pagecast's engine, --engine pagecast that it needed
// QEMU's); those QEMU's post-copy runs go to QEMU's engine.
func TestChooseEngineNeither(t *testing.T) {
	for _, mode := range []string{"predictive+tsmc", "predictive+postcopy", "mecom+postcopy", "predictive+mecom+postcopy"} {
		for _, flag := range []string{"auto", "pagecast", "qemu"} {
			if _, _, _, err := chooseEngine(flag, nil, mode, "", "tcp:127.0.0.1:4444"); err == nil ||
				!strings.Contains(err.Error(), fmt.Sprintf("migration mode %q cannot run on a QEMU source with either engine", mode)) {
				t.Errorf("--engine %s --mode %s: %v", flag, mode, err)
			}
		}
	}
	for _, mode := range []string{"tsmc", "precopy+postcopy"} {
		if _, engine, _, err := chooseEngine("auto", nil, mode, "", "tcp:127.0.0.1:4444"); err != nil || engine != engineQEMU {
			t.Errorf("--mode %s: engine %q, %v; want QEMU's", mode, engine, err)
		}
	}
}

// migrating is a source QEMU monitor whose own migration has status st.
type migrating struct {
	qmp.Monitor
	st string
}

func (m migrating) Run(cmd []byte) ([]byte, error) {
	if strings.Contains(string(cmd), `"query-migrate"`) {
		return []byte(`{"return":{"status":"` + m.st + `"}}`), nil
	}
	return nil, errors.New("not here")
}

// TestChooseEngineBusy: a source whose QEMU migration is in progress is
// refused by either engine, saying so (pagecast's ran its rounds beside
// QEMU's to its round cap and failed at the switch-over; found by a
// new-user walk); one whose last migration ended is not refused for it.
func TestChooseEngineBusy(t *testing.T) {
	for _, st := range []string{"setup", "active", "postcopy-active", "device", "cancelling"} {
		for _, flag := range []string{"auto", "pagecast", "qemu"} {
			if _, _, _, err := chooseEngine(flag, migrating{st: st}, "precopy", "", "tcp:127.0.0.1:4444"); err == nil ||
				!strings.Contains(err.Error(), "the source QEMU's own migration is in progress (query-migrate: "+st+")") {
				t.Errorf("--engine %s, QEMU's migration %s: %v", flag, st, err)
			}
		}
	}
	for _, st := range []string{"postcopy-active", "postcopy-paused"} {
		if _, _, _, err := chooseEngine("qemu", migrating{st: st}, "precopy", "", "tcp:127.0.0.1:4444"); err == nil ||
			strings.Contains(err.Error(), "or migrate_cancel it") || !strings.Contains(err.Error(), "a migrate_cancel now would lose it") {
			t.Errorf("QEMU's migration %s: %v, want no advice to cancel it", st, err)
		}
	}
	for _, st := range []string{"none", "completed", "failed", "cancelled"} {
		if _, engine, _, err := chooseEngine("qemu", migrating{st: st}, "precopy", "", "tcp:127.0.0.1:4444"); err != nil || engine != engineQEMU {
			t.Errorf("QEMU's last migration %s: engine %q, %v", st, engine, err)
		}
	}
}

// TestPausedShare: the engine's pace with the guest paused against its
// pace beside the running guest: twice on two cores beside a busy vCPU
// (the stop-and-copy of a 128 MiB TCG guest moved 866 MiB/s where its
// round 1 moved 470: walk 69), the same where the host has cores to
// spare or the guest is idle, never above the engine's two ends, and on
// one core the half a busy vCPU takes (review 73).
func TestPausedShare(t *testing.T) {
	for _, tc := range []struct {
		cores int
		busy  float64
		want  float64
	}{{2, 1, 2}, {2, 0, 1}, {2, 0.5, 4.0 / 3}, {2, 2, 2}, {1, 1, 1.5}, {1, 0, 1}, {8, 1, 1}, {4, 3, 2}, {3, 2, 2}, {64, 8, 1}} {
		if got := pausedShare(tc.cores, tc.busy); math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("pausedShare(%d cores, %.1f busy) = %.3f, want %.3f", tc.cores, tc.busy, got, tc.want)
		}
	}
}

// noLogGuest is a guest whose dirty log cannot start, holding mem.
type noLogGuest struct {
	migrator.Guest
	mem []byte
}

func (g noLogGuest) StartDirtyLog() (migrator.DirtyLog, error) {
	return nil, errors.New("no dirty log here")
}
func (g noLogGuest) Memory() []byte { return g.mem }

// TestProbeThrottleFallback: where the throttle's response cannot be
// measured, auto takes pagecast's own guest's for linear, as it is, and
// any other's for a Linux guest's.
func TestProbeThrottleFallback(t *testing.T) {
	watched, err := simulate.ParseSynthetic("hotset:hot=64,p=1,rate=6400", 1024, 10*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	k, err := guest.Load(guest.Image())
	if err != nil {
		t.Fatal(err)
	}
	own := make([]byte, 8<<20)
	for off, v := range map[uint64]uint32{guest.OffMagic: guest.StatusMagic, guest.OffVersion: guest.StatusVersion} {
		for i := range uint64(4) {
			own[k.StatusAddr+off+i] = byte(v >> (8 * i))
		}
	}
	for _, tc := range []struct {
		mem  []byte
		want simulate.Response
		says string
	}{{own, simulate.Linear, "as for pagecast's own guest"}, {make([]byte, 8<<20), simulate.LinuxResponse, "as for a Linux guest"}} {
		var out strings.Builder
		if got := probeThrottle(t.Context(), &out, noLogGuest{mem: tc.mem}, watched, 0); got.String() != tc.want.String() || !strings.Contains(out.String(), tc.says) {
			t.Errorf("probeThrottle fell back on %v, saying %q; want %v, %q", got, out.String(), tc.want, tc.says)
		}
	}
}

// TestProbeThrottleUnslowed: a guest whose writes a throttle barely slows
// is said to be so in words, not only in "wrote in 100ms as many pages as
// it writes in 100ms" (walk 123); one slowed in proportion is not. The
// guest runs on the wall clock, so a span measured lands within a few
// hundredths of its response's (0.92 was once measured 0.900, under the
// 0.9 that is said): the one said is well above it. Where the vCPU had
// only part of a core while watched (pace), a throttle that leaves it
// about that is said to take little from it, not that throttling barely
// slows the guest (walk 158: half a core on a loaded host).
func TestProbeThrottleUnslowed(t *testing.T) {
	const pages = 4096
	unslowed := simulate.Response{{Share: 0.01, Span: 0.5}, {Share: 0.1, Span: 0.98}, {Share: 0.5, Span: 1}}
	halfOnly := simulate.Response{{Share: 0.01, Span: 0.02}, {Share: 0.1, Span: 0.2}, {Share: 0.5, Span: 1}}
	const barely = "the guest wrote about as fast as unthrottled: throttling barely slows its writes"
	const host = "its vCPU ran only 0.50 of a core unthrottled while watched (a loaded host, or a guest idle part of the time), and a throttle of 50% leaves about that or more"
	for _, tc := range []struct {
		response simulate.Response
		pace     float64
		says     string // "": no such line
		not      string // "": nothing
	}{
		{unslowed, 0, "throttled 50%, 90%, " + barely, "of a core"},
		{unslowed, 1, "throttled 50%, 90%, " + barely, "of a core"},
		{unslowed, 0.5, "throttled 50%, 90%, " + barely + "; " + host, ""},
		{halfOnly, 0.5, "throttled 50%, the guest wrote about as fast as unthrottled: " + host, "barely slows"},
		{halfOnly, 0.9, "throttled 50%, " + barely, "of a core"},
		{simulate.Linear, 0.5, "", ""},
	} {
		g, w := newWallGuest(t, "uniform:rate=100000", pages, simulate.GuestOptions{Response: tc.response})
		var out strings.Builder
		got := probeThrottle(t.Context(), &out, g, w, tc.pace)
		t.Logf("measured %v at a pace of %v:\n%s", got, tc.pace, out.String())
		said := out.String()
		if line := strings.Contains(said, "about as fast as unthrottled"); line != (tc.says != "") || !strings.Contains(said, tc.says) || (tc.not != "" && strings.Contains(said, tc.not)) {
			t.Errorf("response %v measured %v at a pace of %v, said:\n%s\nwant %q, not %q", tc.response, got, tc.pace, said, tc.says, tc.not)
		}
	}
}

// TestInMS: the throttle probe's spans read in ms, a guest that wrote
// nothing throttled 99% as 0ms beside the others, not 0s (a CI run's
// "56ms, 11ms, 0s").
func TestInMS(t *testing.T) {
	for d, want := range map[time.Duration]string{0: "0ms", 400 * time.Microsecond: "0ms", 11 * time.Millisecond: "11ms", 56400 * time.Microsecond: "56ms"} {
		if got := inMS(d); got != want {
			t.Errorf("%v: %q, want %q", d, got, want)
		}
	}
}

// A downtime limit no longer than a QEMU switch-over's own cost is said
// to be out of reach before the migration (walk 123); the default is not.
func TestSwitchoverWarning(t *testing.T) {
	if w := switchoverWarning(20 * time.Millisecond); !strings.Contains(w, "--downtime-limit 20ms is no more than a switch-over costs on QEMU") {
		t.Errorf("20ms: %q", w)
	}
	if w := switchoverWarning(30 * time.Millisecond); !strings.Contains(w, "--downtime-limit 30ms leaves little beyond what a switch-over costs on QEMU") {
		t.Errorf("30ms: %q", w)
	}
	for _, limit := range []time.Duration{0, 2*qemuSwitchover + time.Millisecond, migrator.DefaultDowntimeLimit} {
		if w := switchoverWarning(limit); w != "" {
			t.Errorf("%v: %q", limit, w)
		}
	}
}

// Auto warns that its prediction may be off where the guest was still
// writing new pages as the watch ended and the migration is predicted to
// outlast the watch several times (walk 125: -36% and -92% for a guest
// writing all over 1 GiB, watched 2 s; -5% watched 10 s); not where the
// guest's pages levelled off, nor where the new ones are a sliver of its
// memory (walk 126), nor for a migration about as long as the watch.
func TestGrowingNote(t *testing.T) {
	const gib = 262144 // pages
	w := growingNote(2*time.Second, 52567, 20000, gib, 40*time.Second, false)
	if !strings.Contains(w, "20000 of the 52567 it wrote were new in the watch's second half") || !strings.Contains(w, "over a migration of 40s, 20 times the 2s watched") || !strings.Contains(w, "--observe (such as 100, 10s)") {
		t.Errorf("growing: %q", w)
	}
	// A sweep's: its phase, not a guest still taking memory (walk 131).
	if w := growingNote(2*time.Second, 52567, 20000, gib, 40*time.Second, true); !strings.Contains(w, "move on through its memory as one front, a sweep") ||
		!strings.Contains(w, "where the sweep is when round 1 starts decides much") || strings.Contains(w, "had not written before") ||
		!strings.Contains(w, "A longer --observe does not help here") {
		t.Errorf("sweeping: %q", w)
	}
	for _, tc := range []struct {
		pages, fresh int
		predicted    time.Duration
	}{
		{52567, 2000, 40 * time.Second}, // levelled off
		{400, 200, 40 * time.Second},    // nearly idle
		{52567, 20000, 3 * time.Second}, // about as long as the watch
		{0, 0, time.Minute},
	} {
		if w := growingNote(2*time.Second, tc.pages, tc.fresh, gib, tc.predicted, false); w != "" {
			t.Errorf("%+v: %q", tc, w)
		}
	}
}

// TestOwnChooserGrowing: mode auto on pagecast's own monitor, as on a
// QEMU source, watches a guest still writing new pages as the watch ended
// again, five times as long, where x-pagecast-observe was not given, and
// where it was, warns, in the VM's log and in query-migrate's choice; a
// guest rewriting its hot set is neither watched again nor warned of.
func TestOwnChooserGrowing(t *testing.T) {
	const pages = 4096 // 16 MiB
	for _, tc := range []struct {
		workload     string
		given        bool
		warns, again bool
	}{
		{"sweep:rate=4000", true, true, false},
		// A sweep is not watched again (a watch of all its memory shows
		// laps, not the front: walk 132), given or not.
		{"sweep:rate=8000", false, true, false},
		// Watched again for 1.5 s, it has written most of its memory:
		// no warning then.
		{"uniform:rate=8000", false, false, true},
		{"hotset:hot=1024,p=1,rate=1024000", false, false, false},
	} {
		t.Run(fmt.Sprintf("%s given %v", tc.workload, tc.given), func(t *testing.T) {
			if raceEnabled && !strings.HasPrefix(tc.workload, "hotset:") {
				// The hot set's case takes the chooser's every path the
				// race detector watches, in 7 s under it.
				t.Skip("17-20 s under the race detector, 2-4 s without, which cmd/pagecast's share of make test cannot spare; make test runs it without")
			}
			g, _ := newWallGuest(t, tc.workload, pages, simulate.GuestOptions{})
			var logged syncBuffer
			choose := ownChooser(slog.New(slog.NewTextHandler(&logged, nil)))
			// 1 MiB/s: the migration lasts many times the 300 ms watched.
			a, err := choose(context.Background(), g, migrator.Config{Observe: 3, ObserveGiven: tc.given, MaxBandwidth: 1 << 20, DowntimeLimit: 300 * time.Millisecond, MaxRounds: 30})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("chose %s; warning %q", a.Mode, a.Warning)
			if got := a.Warning != ""; got != tc.warns {
				t.Errorf("warning %q, want one: %v", a.Warning, tc.warns)
			}
			if again := strings.Contains(logged.String(), "watching it again, for 1.5s"); again != tc.again {
				t.Errorf("watched again: %v, want %v; log:\n%s", again, tc.again, logged.String())
			}
			// The one warning given is a sweep's: its new pages move on
			// as one front (walk 131).
			const warned = "the guest's new pages move on through its memory as one front"
			if tc.warns && (!strings.Contains(a.Warning, warned) || !strings.Contains(logged.String(), "level=WARN msg=\"mode auto: "+warned)) {
				t.Errorf("warning %q, log:\n%s", a.Warning, logged.String())
			}
			var out strings.Builder
			writeAutoChoice(&out, a)
			if got := strings.Contains(out.String(), "auto: warning: "+warned); got != tc.warns {
				t.Errorf("migrate printed:\n%s", out.String())
			}
			// The table of QEMU's auto, with the replays (walk 130).
			t.Log("\n" + out.String())
			if !strings.Contains(out.String(), "pages per round") || !strings.Contains(out.String(), "the guest was watched for ") {
				t.Errorf("migrate printed no rounds or no replay line:\n%s", out.String())
			}
			// The chosen row is a sweep's prediction made again (walk 132).
			if again := strings.Contains(out.String(), "'s row is its prediction made again once the modes were weighed"); again != strings.HasPrefix(tc.workload, "sweep:") || again != a.Again {
				t.Errorf("made again: %v (x-pagecast.auto's again %v), want it for the sweeps only:\n%s", again, a.Again, out.String())
			}
			if front := strings.Contains(out.String(), "pages further up memory than on the one before"); front != strings.HasPrefix(tc.workload, "sweep:") {
				t.Errorf("a sweep's front said: %v, want it for the sweeps only:\n%s", front, out.String())
			}
		})
	}
}

// TestRewatch: auto watches a guest again, five times as long, where it
// was still writing new pages as the first watch ended and the migration
// is predicted to last many times the watch; the second watch's options
// keep what was set after the first (the link, the probes' measures).
func TestRewatch(t *testing.T) {
	const gib = 1 << 30 / migrator.PageSize
	m, say := rewatch(20, 52567, 20000, gib, 40*time.Second, false)
	if m != 100 || !strings.Contains(say, "(20000 of the 52567 it wrote were new in the watch's second half), and the migration was predicted to last 40s: watching it again, for 10s, before predicting anew") {
		t.Errorf("rewatch: %d, said %q", m, say)
	}
	if m, say := rewatch(20, 52567, 2000, gib, 40*time.Second, false); m != 0 || say != "" {
		t.Errorf("a guest whose writes levelled off watched again for %d epochs, saying %q", m, say)
	}
	// A sweep is not: a watch of all its memory shows laps, not the front
	// (walk 132).
	if m, say := rewatch(20, 52567, 20000, gib, 40*time.Second, true); m != 0 || say != "" {
		t.Errorf("a sweep watched again for %d epochs, saying %q", m, say)
	}
	first, err := simulate.ParseSynthetic("uniform", 4096, autoPart)
	if err != nil {
		t.Fatal(err)
	}
	second, err := simulate.ParseSynthetic("sweep", 4096, autoPart)
	if err != nil {
		t.Fatal(err)
	}
	before := simulate.Options{Workload: first, VCPUs: 1, Bandwidth: 32 << 20, DowntimeLimit: 300 * time.Millisecond, MaxRounds: 30,
		Switchover: qemuSwitchover, PolicyTime: true, Response: simulate.LinuxResponse, PageRate: 50000, PausedPageRate: 90000}
	o := carryOver(simulate.Options{Workload: second, VCPUs: 2, Step: autoEpoch}, before)
	if o.Workload != second || o.VCPUs != 2 || o.Step != autoEpoch || o.Bandwidth != before.Bandwidth || o.DowntimeLimit != before.DowntimeLimit ||
		o.MaxRounds != 30 || o.Switchover != qemuSwitchover || !o.PolicyTime || o.Response.String() != simulate.LinuxResponse.String() || o.PageRate != 50000 || o.PausedPageRate != 90000 {
		t.Errorf("carried over: %+v", o)
	}
}

// TestWatchedReplayed: the table of auto's predictions says the watch's
// length where it was replayed, not "1000 epochs of 10ms" (walk 125:
// --observe counts 100 ms epochs).
func TestWatchedReplayed(t *testing.T) {
	epochs := make([]trace.Epoch, 1000)
	for i := range epochs {
		epochs[i] = trace.Epoch{Index: uint64(i), Pages: []uint64{uint64(i)}}
	}
	w, err := simulate.NewTrace(watchedName, trace.Meta{MemoryBytes: 4096 * migrator.PageSize, PageSize: migrator.PageSize, Epoch: autoPart}, epochs)
	if err != nil {
		t.Fatal(err)
	}
	r := simulate.Result{Mode: "mecom", Replays: 2, Info: migrator.Info{Status: migrator.StatusCompleted, TotalTime: 25000, Downtime: 280,
		RAM: &migrator.RAMStats{Transferred: 1 << 30}, Pagecast: &migrator.Extra{Round: 10}}}
	var out strings.Builder
	writeSimulationTableWith(&out, w, []simulate.Result{r}, "", "", autoCheckRate)
	if !strings.Contains(out.String(), "the guest was watched for 10s, less than the migration takes, and what it wrote then was replayed: mecom 2 times\n") {
		t.Errorf("table:\n%s", out.String())
	}
}

// TestReplayLineChosenLead: the replay line's lead is the chosen mode's,
// predicted again from later than the others', in migrate's table and in
// query-migrate's report alike; not the last or first mode's that moved.
func TestReplayLineChosenLead(t *testing.T) {
	epochs := make([]trace.Epoch, 100)
	for i := range epochs {
		epochs[i] = trace.Epoch{Index: uint64(i), Pages: []uint64{uint64(i)}}
	}
	w, err := simulate.NewTrace(watchedName, trace.Meta{MemoryBytes: 4096 * migrator.PageSize, PageSize: migrator.PageSize, Epoch: autoPart}, epochs)
	if err != nil {
		t.Fatal(err)
	}
	result := func(mode string, lead float64) simulate.Result {
		return simulate.Result{Mode: mode, Replays: 2, Moved: 1, Once: 100, Drift: 100, Lead: lead,
			Info: migrator.Info{Status: migrator.StatusCompleted, TotalTime: 25000, Downtime: 280,
				RAM: &migrator.RAMStats{Transferred: 1 << 30}, Pagecast: &migrator.Extra{Round: 10}}}
	}
	for _, chosen := range []string{"precopy", "mecom", "throttle"} {
		results := []simulate.Result{result("precopy", 300), result("mecom", 700), result("throttle", 500)}
		want := map[string]string{"precopy": "300", "mecom": "700", "throttle": "500"}[chosen]
		var out strings.Builder
		writeSimulationTableWith(&out, w, results, chosen, "", autoCheckRate)
		if !strings.Contains(out.String(), "(the first replay "+want+" pages further still") {
			t.Errorf("chosen %s: table:\n%s", chosen, out.String())
		}
		a := simulate.Choice{Mode: chosen, Predictions: results}.Report()
		if a.Replay == nil || fmt.Sprint(a.Replay.Lead) != want {
			t.Errorf("chosen %s: report's replay %+v, want its lead %s", chosen, a.Replay, want)
		}
	}
	// No line on replays where no mode replayed (walk 135: a migration
	// predicted shorter than the watch had one).
	unreplayed := []simulate.Result{result("precopy", 300), result("mecom", 700)}
	for i := range unreplayed {
		unreplayed[i].Replays = 0
	}
	var out strings.Builder
	writeSimulationTableWith(&out, w, unreplayed, "mecom", "", autoCheckRate)
	if strings.Contains(out.String(), "replay") {
		t.Errorf("no mode replayed, yet the table says:\n%s", out.String())
	}
	if a := (simulate.Choice{Mode: "mecom", Predictions: unreplayed}).Report(); a.Replay != nil {
		t.Errorf("no mode replayed, yet the report has a replay: %+v", a.Replay)
	}
}

// TestSayEvery: sayEvery says its line every interval, with the time
// passed, and nothing once stopped.
func TestSayEvery(t *testing.T) {
	var out syncBuffer
	stop := sayEvery(&out, 20*time.Millisecond, "still at it, %v\n")
	for deadline := time.Now().Add(10 * time.Second); strings.Count(out.String(), "still at it, ") < 2; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("said %d times in 10 s, every 20 ms:\n%s", strings.Count(out.String(), "still at it, "), out.String())
		}
	}
	stop()
	n := strings.Count(out.String(), "still at it, ")
	time.Sleep(60 * time.Millisecond)
	if strings.Count(out.String(), "still at it, ") != n {
		t.Errorf("said more once stopped:\n%s", out.String())
	}
}

// vcpuClock is a guest whose vCPUs have had cpu of CPU time.
type vcpuClock struct {
	migrator.Guest
	cpu time.Duration
}

func (v *vcpuClock) VCPUTime() (time.Duration, error) { return v.cpu, nil }

// TestLeadClock: the lead a sweep is given is the guest's run time since
// the watch at its watched pace, not the wall time, which counted the
// throttle's probe, holding the guest back, as sweeping (walk 131).
func TestLeadClock(t *testing.T) {
	g := &vcpuClock{}
	l := startLead(g)
	time.Sleep(100 * time.Millisecond)
	g.cpu = 100 * time.Millisecond // a whole core while watched
	l.watched()
	time.Sleep(200 * time.Millisecond)
	g.cpu += 20 * time.Millisecond // held back: a tenth of it since
	if got := l.since(); got < 15*time.Millisecond || got > 40*time.Millisecond {
		t.Errorf("lead %v, want about 20ms: the guest ran 20ms at its watched pace", got)
	}
	// A guest that says nothing of its vCPUs: the wall time.
	w := startLead(nil)
	w.watched()
	time.Sleep(50 * time.Millisecond)
	if got := w.since(); got < 50*time.Millisecond {
		t.Errorf("lead %v without vCPU times, want the 50ms since", got)
	}
}
