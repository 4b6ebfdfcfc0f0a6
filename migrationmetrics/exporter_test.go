package migrationmetrics

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"

	"github.com/pagecast/pagecast/migrator"
)

// exposition gathers e's metrics as text.
func exposition(t *testing.T, e *Exporter) string {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(e)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	for _, mf := range mfs {
		if _, err := expfmt.MetricFamilyToText(&b, mf); err != nil {
			t.Fatal(err)
		}
	}
	return b.String()
}

// TestExporter follows a migration of each engine from setup to its end:
// every figure of query-migrate lands in its metric, in base units.
func TestExporter(t *testing.T) {
	start := time.Date(2026, 11, 30, 5, 0, 0, 0, time.UTC)
	active := migrator.Info{Status: migrator.StatusActive, ExpectedDowntime: 250, CPUThrottlePercentage: 40,
		RAM: &migrator.RAMStats{Transferred: 48 << 20, Remaining: 16 << 20, Total: 64 << 20, DirtyPagesRate: 1000,
			Mbps: 268.435456, DirtySyncCount: 3, PageSize: 4096}}
	pagecastActive := active
	auto := &migrator.AutoChoice{Mode: "predictive", Prefer: "time", Predictions: []migrator.Prediction{
		{Mode: "precopy", TotalTime: 4500, Downtime: 310, Transferred: 90 << 20},
		{Mode: "predictive", TotalTime: 3250, Downtime: 200, Transferred: 72 << 20, GuestSlowdown: 0.125}}}
	pagecastActive.TotalTime = 3000
	pagecastActive.Pagecast = &migrator.Extra{Mode: "predictive", Round: 4, Deferred: 512, DeferredAll: 2048, Bandwidth: 32 << 20, Auto: auto,
		Slowdown: migrator.Slowdown{VCPUs: 2, ThrottleTime: 1200, FaultTime: 300}}
	for _, tc := range []struct {
		name, engine, mode string
		bandwidth          uint64
		active             migrator.Info
		end                migrator.Info
		want               []string // lines of the exposition while active
		wantEnd            []string // and after the end
		absent             []string // metric names absent at the end
	}{
		{
			name: "pagecast", engine: EnginePagecast, mode: "precopy", active: pagecastActive,
			end: migrator.Info{Status: migrator.StatusCompleted, TotalTime: 3400, Downtime: 280, RAM: &migrator.RAMStats{Transferred: 70 << 20, Total: 64 << 20},
				Pagecast: &migrator.Extra{Mode: "predictive", Round: 5, DeferredAll: 2048, Bandwidth: 32 << 20, Auto: auto}},
			want: []string{
				`pagecast_migration_info{engine="pagecast",migration="2026-11-30T05:00:00.000Z",mode="predictive",vm="vm1"} 1`,
				`pagecast_migration_status{migration="2026-11-30T05:00:00.000Z",status="active",vm="vm1"} 1`,
				`pagecast_migration_status{migration="2026-11-30T05:00:00.000Z",status="completed",vm="vm1"} 0`,
				`pagecast_migration_data_processed_bytes{migration="2026-11-30T05:00:00.000Z",vm="vm1"} 5.0331648e+07`,
				`pagecast_migration_data_remaining_bytes{migration="2026-11-30T05:00:00.000Z",vm="vm1"} 1.6777216e+07`,
				`pagecast_migration_data_total_bytes{migration="2026-11-30T05:00:00.000Z",vm="vm1"} 6.7108864e+07`,
				`pagecast_migration_dirty_memory_rate_bytes_per_second{migration="2026-11-30T05:00:00.000Z",vm="vm1"} 4.096e+06`,
				`pagecast_migration_memory_transfer_rate_bytes_per_second{migration="2026-11-30T05:00:00.000Z",vm="vm1"} 3.3554432e+07`,
				`pagecast_migration_bandwidth_limit_bytes_per_second{migration="2026-11-30T05:00:00.000Z",vm="vm1"} 3.3554432e+07`,
				`pagecast_migration_round{migration="2026-11-30T05:00:00.000Z",vm="vm1"} 4`,
				`pagecast_migration_dirty_syncs_total{migration="2026-11-30T05:00:00.000Z",vm="vm1"} 3`,
				`pagecast_migration_deferred_pages{migration="2026-11-30T05:00:00.000Z",vm="vm1"} 512`,
				`pagecast_migration_page_deferrals_total{migration="2026-11-30T05:00:00.000Z",vm="vm1"} 2048`,
				`pagecast_migration_cpu_throttle_ratio{migration="2026-11-30T05:00:00.000Z",vm="vm1"} 0.4`,
				`pagecast_migration_expected_downtime_seconds{migration="2026-11-30T05:00:00.000Z",vm="vm1"} 0.25`,
				`pagecast_migration_start_time_seconds{migration="2026-11-30T05:00:00.000Z",vm="vm1"} 1.7960148e+09`,
				`pagecast_migration_total_time_seconds{migration="2026-11-30T05:00:00.000Z",vm="vm1"} 3`,
				`pagecast_migration_succeeded{migration="2026-11-30T05:00:00.000Z",vm="vm1"} 0`,
				`pagecast_migration_failed{migration="2026-11-30T05:00:00.000Z",vm="vm1"} 0`,
				`pagecast_migration_predicted_total_time_seconds{chosen="0",migration="2026-11-30T05:00:00.000Z",mode="precopy",vm="vm1"} 4.5`,
				`pagecast_migration_predicted_total_time_seconds{chosen="1",migration="2026-11-30T05:00:00.000Z",mode="predictive",vm="vm1"} 3.25`,
				`pagecast_migration_predicted_downtime_seconds{chosen="1",migration="2026-11-30T05:00:00.000Z",mode="predictive",vm="vm1"} 0.2`,
				`pagecast_migration_predicted_data_bytes{chosen="1",migration="2026-11-30T05:00:00.000Z",mode="predictive",vm="vm1"} 7.5497472e+07`,
				`pagecast_migration_predicted_guest_slowdown_ratio{chosen="1",migration="2026-11-30T05:00:00.000Z",mode="predictive",vm="vm1"} 0.125`,
				// 1.5 s of the 2 vCPUs' 6 s.
				`pagecast_migration_throttled_vcpu_seconds_total{migration="2026-11-30T05:00:00.000Z",vm="vm1"} 1.2`,
				`pagecast_migration_postcopy_fault_vcpu_seconds_total{migration="2026-11-30T05:00:00.000Z",vm="vm1"} 0.3`,
				`pagecast_migration_guest_slowdown_ratio{migration="2026-11-30T05:00:00.000Z",vm="vm1"} 0.25`,
			},
			wantEnd: []string{
				`pagecast_migration_status{migration="2026-11-30T05:00:00.000Z",status="completed",vm="vm1"} 1`,
				`pagecast_migration_succeeded{migration="2026-11-30T05:00:00.000Z",vm="vm1"} 1`,
				`pagecast_migration_downtime_seconds{migration="2026-11-30T05:00:00.000Z",vm="vm1"} 0.28`,
				`pagecast_migration_end_time_seconds{migration="2026-11-30T05:00:00.000Z",vm="vm1"} 1.79601481e+09`,
				// The migration's own 3.4 s of the 10 s since Begin (mode
				// auto watched and weighed the modes before it began).
				`pagecast_migration_total_time_seconds{migration="2026-11-30T05:00:00.000Z",vm="vm1"} 3.4`,
				`pagecast_migration_round{migration="2026-11-30T05:00:00.000Z",vm="vm1"} 5`,
				`pagecast_migration_predicted_total_time_seconds{chosen="1",migration="2026-11-30T05:00:00.000Z",mode="predictive",vm="vm1"} 3.25`,
				// query-migrate drops expected-downtime at the end; the last estimate stays beside the actual.
				`pagecast_migration_expected_downtime_seconds{migration="2026-11-30T05:00:00.000Z",vm="vm1"} 0.25`,
			},
		},
		{
			name: "qemu", engine: EngineQEMU, mode: "throttle", bandwidth: 32 << 20, active: active,
			end: migrator.Info{Status: migrator.StatusFailed, ErrorDesc: "boom", RAM: &migrator.RAMStats{Transferred: 1 << 20}},
			want: []string{
				`pagecast_migration_info{engine="qemu",migration="2026-11-30T05:00:00.000Z",mode="throttle",vm="vm1"} 1`,
				`pagecast_migration_round{migration="2026-11-30T05:00:00.000Z",vm="vm1"} 3`,
				`pagecast_migration_bandwidth_limit_bytes_per_second{migration="2026-11-30T05:00:00.000Z",vm="vm1"} 3.3554432e+07`,
			},
			wantEnd: []string{
				`pagecast_migration_failed{migration="2026-11-30T05:00:00.000Z",vm="vm1"} 1`,
				`pagecast_migration_succeeded{migration="2026-11-30T05:00:00.000Z",vm="vm1"} 0`,
				// QEMU's last reply says no dirty rate: the one last
				// measured stays (it fell to 0 at the end).
				`pagecast_migration_dirty_memory_rate_bytes_per_second{migration="2026-11-30T05:00:00.000Z",vm="vm1"} 4.096e+06`,
			},
			// QEMU's engine defers nothing, and a failed migration had no downtime.
			absent: []string{"pagecast_migration_deferred_pages", "pagecast_migration_downtime_seconds", "pagecast_migration_expected_downtime_seconds",
				"pagecast_migration_predicted_total_time_seconds", "pagecast_migration_guest_slowdown_ratio"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := New("vm1")
			e.now = func() time.Time { return start.Add(10 * time.Second) }
			if text := exposition(t, e); text != "" {
				t.Errorf("metrics before any migration:\n%s", text)
			}
			e.Begin(start, tc.engine, tc.mode, tc.bandwidth)
			e.Observe(tc.active)
			text := exposition(t, e)
			for _, want := range tc.want {
				if !strings.Contains(text, want+"\n") {
					t.Errorf("while active, no line %s in\n%s", want, text)
				}
			}
			if strings.Contains(text, "pagecast_migration_end_time_seconds") {
				t.Error("an end time while the migration runs")
			}
			lint(t, text)
			e.Observe(tc.end)
			text = exposition(t, e)
			for _, want := range tc.wantEnd {
				if !strings.Contains(text, want+"\n") {
					t.Errorf("at the end, no line %s in\n%s", want, text)
				}
			}
			for _, name := range tc.absent {
				if strings.Contains(text, name+"{") {
					t.Errorf("at the end, %s is exported", name)
				}
			}
			lint(t, text)
		})
	}
}

// lint runs promtool check metrics on an exposition.
func lint(t *testing.T, text string) {
	t.Helper()
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Log("promtool not installed (Debian package prometheus): exposition not linted")
		return
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(text)
	if out, err := cmd.CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}

// TestFirstRound: before a round has ended the engines have measured
// neither the dirty rate nor the downtime; neither is exported as 0.
func TestFirstRound(t *testing.T) {
	e := New("vm1")
	e.Begin(time.Now(), EnginePagecast, "precopy", 0)
	e.Observe(migrator.Info{Status: migrator.StatusActive, RAM: &migrator.RAMStats{Transferred: 1 << 20, Remaining: 63 << 20, DirtySyncCount: 7}, // a harvest each epoch
		Pagecast: &migrator.Extra{Mode: "precopy", Round: 1}})
	text := exposition(t, e)
	for _, name := range []string{"pagecast_migration_dirty_memory_rate_bytes_per_second", "pagecast_migration_expected_downtime_seconds"} {
		if strings.Contains(text, name+"{") {
			t.Errorf("%s exported in the first round:\n%s", name, text)
		}
	}
	if !strings.Contains(text, "pagecast_migration_data_remaining_bytes{") {
		t.Errorf("remaining bytes not exported in the first round:\n%s", text)
	}
	// QEMU's expected-downtime is its downtime limit until round 1 has
	// ended (its dirty log synced a second time).
	e.Begin(time.Now(), EngineQEMU, "precopy", 0)
	first := migrator.Info{Status: migrator.StatusActive, ExpectedDowntime: 300, RAM: &migrator.RAMStats{Transferred: 1 << 20, DirtySyncCount: 1}}
	e.Observe(first)
	if text := exposition(t, e); strings.Contains(text, "pagecast_migration_expected_downtime_seconds{") {
		t.Errorf("QEMU's placeholder expected-downtime exported in round 1:\n%s", text)
	}
	second := first
	second.ExpectedDowntime, second.RAM = 42, &migrator.RAMStats{Transferred: 9 << 20, DirtySyncCount: 2}
	e.Observe(second)
	text = exposition(t, e)
	if !strings.Contains(text, "pagecast_migration_expected_downtime_seconds{") || !strings.Contains(text, "} 0.042\n") {
		t.Errorf("QEMU's estimate after round 1 (42 ms) not exported:\n%s", text)
	}
	// Its dirty rate says 0 until QEMU has measured one, a second after
	// the last (walk 52: 0 in round 2 of a guest dirtying 28 MB/s); once
	// measured, a 0 is a guest gone idle.
	if strings.Contains(text, "pagecast_migration_dirty_memory_rate_bytes_per_second{") {
		t.Errorf("QEMU's dirty rate exported before it measured one:\n%s", text)
	}
	third := second
	third.RAM = &migrator.RAMStats{Transferred: 12 << 20, DirtySyncCount: 3, DirtyPagesRate: 1000, PageSize: 4096}
	e.Observe(third)
	rate := regexp.MustCompile(`pagecast_migration_dirty_memory_rate_bytes_per_second\{[^}]*\} (\S+)\n`)
	if m := rate.FindStringSubmatch(exposition(t, e)); m == nil || m[1] != "4.096e+06" {
		t.Errorf("QEMU's measured dirty rate (1000 pages/s): %q, want 4.096e+06", m)
	}
	// An idle guest's rate, never above 0, is told as 0 once the
	// migration has ended (review 54: never at all).
	e.Begin(time.Now(), EngineQEMU, "precopy", 0)
	for n := range 4 {
		e.Observe(migrator.Info{Status: migrator.StatusActive, RAM: &migrator.RAMStats{Transferred: 1 << 20, DirtySyncCount: uint64(n + 1), PageSize: 4096}})
	}
	e.Observe(migrator.Info{Status: migrator.StatusCompleted, RAM: &migrator.RAMStats{Transferred: 2 << 20, DirtySyncCount: 5, PageSize: 4096}})
	if m := rate.FindStringSubmatch(exposition(t, e)); m == nil || m[1] != "0" {
		t.Errorf("an idle guest's dirty rate at the end: %q, want 0", m)
	}
	e.Begin(time.Now(), EngineQEMU, "precopy", 0)
	e.Observe(third)
	idle := third
	idle.RAM = &migrator.RAMStats{Transferred: 13 << 20, DirtySyncCount: 4, PageSize: 4096}
	e.Observe(idle)
	if m := rate.FindStringSubmatch(exposition(t, e)); m == nil || m[1] != "0" {
		t.Errorf("QEMU's dirty rate of a guest gone idle: %q, want 0", m)
	}
}

// TestNewMigrationReplacesOld: only the latest migration is exported.
func TestNewMigrationReplacesOld(t *testing.T) {
	e := New("vm1")
	t0 := time.Date(2026, 11, 30, 5, 0, 0, 0, time.UTC)
	e.Begin(t0, EnginePagecast, "precopy", 0)
	e.Observe(migrator.Info{Status: migrator.StatusCancelled, RAM: &migrator.RAMStats{}})
	e.Begin(t0.Add(time.Minute), EnginePagecast, "tsmc", 0)
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(e)
	if n, err := testutil.GatherAndCount(reg, "pagecast_migration_info"); n != 1 || err != nil {
		t.Fatalf("%d info series, %v: want the latest migration's only", n, err)
	}
	if text := exposition(t, e); !strings.Contains(text, `migration="2026-11-30T05:01:00.000Z",mode="tsmc"`) {
		t.Errorf("the latest migration is not the one exported:\n%s", text)
	}
}

// TestFail: a migration QEMU called completed whose destination then
// refused the state is exported failed, its figures kept (review 77: it
// stayed succeeded, and the failure alert did not fire).
func TestFail(t *testing.T) {
	e := New("vm1")
	e.Begin(time.Date(2026, 12, 5, 5, 0, 0, 0, time.UTC), EngineQEMU, "precopy", 0)
	e.Observe(migrator.Info{Status: migrator.StatusCompleted, RAM: &migrator.RAMStats{Transferred: 4096, Total: 8192}})
	e.Fail("the destination exited")
	text := exposition(t, e)
	for _, want := range []string{`status="failed",vm="vm1"} 1`, `status="completed",vm="vm1"} 0`, `pagecast_migration_succeeded{migration="2026-12-05T05:00:00.000Z",vm="vm1"} 0`,
		`pagecast_migration_data_processed_bytes{migration="2026-12-05T05:00:00.000Z",vm="vm1"} 4096`} {
		if !strings.Contains(text, want) {
			t.Errorf("no %q in:\n%s", want, text)
		}
	}
}

// TestRefresh: a scrape first calls the refresh set, so that it serves
// the state the migration is in now, not that of the last poll (walk 128:
// "device" and succeeded 0 served after migrate said completed).
func TestRefresh(t *testing.T) {
	e := New("vm1")
	e.Begin(time.Date(2026, 12, 6, 5, 0, 0, 0, time.UTC), EnginePagecast, "mecom", 0)
	e.Observe(migrator.Info{Status: migrator.StatusDevice, RAM: &migrator.RAMStats{Transferred: 4096, Total: 8192}})
	var refreshes atomic.Int32
	e.SetRefresh(func() {
		refreshes.Add(1)
		e.Observe(migrator.Info{Status: migrator.StatusCompleted, TotalTime: 951, RAM: &migrator.RAMStats{Transferred: 8192, Total: 8192}})
	})
	text := exposition(t, e)
	if refreshes.Load() != 1 || !strings.Contains(text, `pagecast_migration_succeeded{migration="2026-12-06T05:00:00.000Z",vm="vm1"} 1`) ||
		!strings.Contains(text, `status="completed",vm="vm1"} 1`) {
		t.Errorf("%d refreshes; a scrape after it served:\n%s", refreshes.Load(), text)
	}
	e.SetRefresh(nil)
	exposition(t, e)
	if refreshes.Load() != 1 {
		t.Errorf("refreshed after SetRefresh(nil)")
	}
}

// TestSetBandwidth: a link cap changed midway (migrate --control) is the
// gauge's from then on, QEMU's replies (which do not say it) and a lifted
// cap's 0 included.
func TestSetBandwidth(t *testing.T) {
	e := New("vm1")
	e.Begin(time.Date(2026, 12, 5, 5, 0, 0, 0, time.UTC), EngineQEMU, "precopy", 1<<20)
	const gauge = `pagecast_migration_bandwidth_limit_bytes_per_second{migration="2026-12-05T05:00:00.000Z",vm="vm1"}`
	e.SetBandwidth(256 << 20)
	e.Observe(migrator.Info{Status: migrator.StatusActive, RAM: &migrator.RAMStats{Transferred: 4096, Total: 8192}})
	if text := exposition(t, e); !strings.Contains(text, gauge+" 2.68435456e+08\n") {
		t.Errorf("after SetBandwidth(256 MiB/s), no %s of 256 MiB/s in:\n%s", gauge, text)
	}
	e.SetBandwidth(0) // lifted: no cap
	e.Observe(migrator.Info{Status: migrator.StatusActive, RAM: &migrator.RAMStats{Transferred: 8192, Total: 8192}})
	if text := exposition(t, e); strings.Contains(text, gauge) {
		t.Errorf("after the cap was lifted, %s is still there:\n%s", gauge, text)
	}
}

// TestFollowAndLinger: Follow records until the migration ends, and
// LingerScrapes waits for two more scrapes, or its timeout.
func TestFollowAndLinger(t *testing.T) {
	e := New("vm1")
	e.Begin(time.Now(), EnginePagecast, "precopy", 0)
	replies := []migrator.Info{{Status: migrator.StatusSetup}, {Status: migrator.StatusActive, RAM: &migrator.RAMStats{Remaining: 1}},
		{Status: migrator.StatusCompleted, RAM: &migrator.RAMStats{}}, {Status: migrator.StatusActive}}
	n := 0
	e.Follow(context.Background(), func() migrator.Info { n++; return replies[n-1] }, time.Millisecond)
	if n != 3 {
		t.Fatalf("Follow polled %d times, want 3 (it stops at completed)", n)
	}
	// A migration shorter than a scrape interval ends before the first
	// scrape: the linger waits for it and the one after.
	var count atomic.Uint64
	scrapes := func(n int) {
		go func() {
			for range n {
				time.Sleep(100 * time.Millisecond)
				exposition(t, e)
				count.Add(1)
			}
		}()
	}
	scrapes(2)
	begin := time.Now()
	if got := LingerScrapes(context.Background(), count.Load, time.Minute); got != 2 {
		t.Errorf("the linger returned after %d scrapes, want 2", got)
	}
	if d := time.Since(begin); d < 150*time.Millisecond || d > 10*time.Second {
		t.Errorf("the linger, never scraped before, returned after %v, want after the first two scrapes (200 ms)", d)
	}
	scrapes(2)
	begin = time.Now()
	LingerScrapes(context.Background(), count.Load, time.Minute)
	if d := time.Since(begin); d < 150*time.Millisecond || d > 10*time.Second {
		t.Errorf("the linger returned after %v, want after the next two scrapes (200 ms)", d)
	}
	begin = time.Now()
	LingerScrapes(context.Background(), count.Load, 100*time.Millisecond)
	if d := time.Since(begin); d > 5*time.Second {
		t.Errorf("the linger ignored its timeout: %v", d)
	}
}

// TestQEMUSlowdown: a migration by QEMU's own engine, whose query-migrate
// says nothing of the guest's loss, exports the slowdown migrate measured.
func TestQEMUSlowdown(t *testing.T) {
	e := New("vm1")
	e.Begin(time.Now(), EngineQEMU, "throttle", 0)
	done := migrator.Info{Status: migrator.StatusCompleted, TotalTime: 2000, Downtime: 100, RAM: &migrator.RAMStats{DirtySyncCount: 4}}
	e.Observe(done)
	if text := exposition(t, e); strings.Contains(text, "pagecast_migration_guest_slowdown_ratio{") {
		t.Errorf("a slowdown exported before one was measured:\n%s", text)
	}
	e.ObserveSlowdown(migrator.Slowdown{VCPUs: 2, ThrottleTime: 950, FaultTime: 0})
	text := exposition(t, e)
	want := done
	want.Pagecast = &migrator.Extra{Slowdown: migrator.Slowdown{VCPUs: 2, ThrottleTime: 950}}
	for _, re := range []string{
		`pagecast_migration_throttled_vcpu_seconds_total\{[^}]*\} 0\.95\n`,
		`pagecast_migration_postcopy_fault_vcpu_seconds_total\{[^}]*\} 0\n`,
		fmt.Sprintf(`pagecast_migration_guest_slowdown_ratio\{[^}]*\} %s\n`, regexp.QuoteMeta(fmt.Sprint(want.GuestSlowdown()))),
	} {
		if !regexp.MustCompile(re).MatchString(text) {
			t.Errorf("exposition lacks %s:\n%s", re, text)
		}
	}
	if want.GuestSlowdown() <= 0.2 || want.GuestSlowdown() >= 0.3 { // 950 ms of 2 vCPUs × 1.9 s
		t.Errorf("share %v", want.GuestSlowdown())
	}
}

// TestGuestPaused: the guest's own pause is exported once the migration
// has completed and the pause is known, beside QEMU's shorter downtime
// (walk 121: 6 ms said where the guest paused 75 ms).
func TestGuestPaused(t *testing.T) {
	e := New("vm1")
	e.Begin(time.Now(), EngineQEMU, "tsmc", 0)
	e.ObservePause(75 * time.Millisecond)
	e.Observe(migrator.Info{Status: migrator.StatusActive, RAM: &migrator.RAMStats{}})
	if text := exposition(t, e); strings.Contains(text, "pagecast_migration_guest_paused_seconds{") {
		t.Errorf("a pause exported before the migration completed:\n%s", text)
	}
	e.Observe(migrator.Info{Status: migrator.StatusCompleted, Downtime: 6, RAM: &migrator.RAMStats{}})
	if text := exposition(t, e); !regexp.MustCompile(`pagecast_migration_guest_paused_seconds\{[^}]*\} 0\.075\n`).MatchString(text) ||
		!regexp.MustCompile(`pagecast_migration_downtime_seconds\{[^}]*\} 0\.006\n`).MatchString(text) {
		t.Errorf("exposition lacks the guest's pause of 75 ms beside the downtime of 6 ms:\n%s", text)
	}
	e.Begin(time.Now(), EngineQEMU, "precopy", 0)
	e.ObservePause(-1) // not known
	e.Observe(migrator.Info{Status: migrator.StatusCompleted, Downtime: 6, RAM: &migrator.RAMStats{}})
	if text := exposition(t, e); strings.Contains(text, "pagecast_migration_guest_paused_seconds{") {
		t.Errorf("a pause not known was exported:\n%s", text)
	}
}
