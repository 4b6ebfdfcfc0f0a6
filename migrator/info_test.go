package migrator

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestGuestSlowdown(t *testing.T) {
	for _, tt := range []struct {
		name string
		i    Info
		want float64
	}{
		{"no pagecast figures", Info{TotalTime: 1000}, 0},
		{"no vCPU count", Info{TotalTime: 1000, Pagecast: &Extra{Slowdown: Slowdown{ThrottleTime: 500}}}, 0},
		{"nothing lost", Info{TotalTime: 1000, Pagecast: &Extra{Slowdown: Slowdown{VCPUs: 2}}}, 0},
		// 2 vCPUs over 1000 ms less 200 ms of downtime: 1600 ms of vCPU
		// time, 400 throttled and 400 waiting.
		{"throttle and faults", Info{TotalTime: 1000, Downtime: 200, Pagecast: &Extra{Slowdown: Slowdown{VCPUs: 2, ThrottleTime: 400, FaultTime: 400}}}, 0.5},
		{"all downtime", Info{TotalTime: 100, Downtime: 100, Pagecast: &Extra{Slowdown: Slowdown{VCPUs: 1, FaultTime: 5}}}, 0},
		{"rounding past the whole", Info{TotalTime: 100, Pagecast: &Extra{Slowdown: Slowdown{VCPUs: 1, ThrottleTime: 99, FaultTime: 3}}}, 1},
	} {
		if got := tt.i.GuestSlowdown(); got != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
		}
	}
}

// TestPredictionJSON: a mode stopped short says how far it came, and
// leaves out the downtime and slowdown it never reached, rather than 0.
func TestPredictionJSON(t *testing.T) {
	for _, tt := range []struct {
		p    Prediction
		want string
	}{
		{Prediction{Mode: "precopy", TotalTime: 900, Downtime: 0, Transferred: 5, GuestSlowdown: 0},
			`{"mode":"precopy","total-time":900,"downtime":0,"transferred":5,"guest-slowdown":0}`},
		{Prediction{Mode: "tsmc", TotalTime: 1200, Transferred: 7, StoppedShort: true},
			`{"mode":"tsmc","total-time":1200,"transferred":7,"stopped-short":true}`},
		{Prediction{Mode: "throttle", TotalTime: 900, Downtime: 20, Transferred: 5, GuestSlowdown: 0.5, Rounds: 3, RoundPages: []uint64{9, 4, 1},
			Throttle: 80, Replays: 2},
			`{"mode":"throttle","total-time":900,"downtime":20,"transferred":5,"guest-slowdown":0.5,"rounds":3,"round-pages":[9,4,1],"throttle":80,"replays":2}`},
	} {
		b, err := json.Marshal(tt.p)
		if err != nil || string(b) != tt.want {
			t.Errorf("%+v: %s (%v), want %s", tt.p, b, err, tt.want)
		}
		var back Prediction
		if err := json.Unmarshal(b, &back); err != nil || !reflect.DeepEqual(back, tt.p) {
			t.Errorf("%s read back as %+v (%v), want %+v", b, back, err, tt.p)
		}
	}
}

func TestRoundCapped(t *testing.T) {
	for _, tc := range []struct {
		reason             string
		capped, toPostcopy bool
	}{
		{"round cap 30 reached with 4804608 bytes pending", true, false},
		{"round cap 30 reached with 4804608 bytes pending: switching to post-copy", true, true},
		{"round 2 left 900 of its 1000 pages pending: switching to post-copy", false, false},
		{"1209 pages fit the downtime limit at the end of round 4", false, false},
	} {
		capped, postcopy := (&Extra{StopReason: tc.reason}).RoundCapped()
		if capped != tc.capped || postcopy != tc.toPostcopy {
			t.Errorf("%q: capped %v, post-copy %v; want %v, %v", tc.reason, capped, postcopy, tc.capped, tc.toPostcopy)
		}
	}
	if capped, _ := (*Extra)(nil).RoundCapped(); capped {
		t.Error("no pagecast section: capped")
	}
}

// TestInfoCompletedTimes: a completed migration's query-migrate has
// setup-time, total-time and downtime even where they are 0, as QEMU's
// has (walk 137: a downtime under a millisecond left "downtime" out); one
// under way has no downtime, and the reply parses back as it was.
func TestInfoCompletedTimes(t *testing.T) {
	for _, tc := range []struct {
		info Info
		has  []string
		not  []string
	}{
		{Info{Status: StatusCompleted, TotalTime: 7950, RAM: &RAMStats{Total: 1 << 28}}, []string{`"downtime":0`, `"setup-time":0`, `"total-time":7950`}, nil},
		{Info{Status: StatusCompleted, TotalTime: 3199, Downtime: 236, SetupTime: 4}, []string{`"downtime":236`, `"setup-time":4`, `"total-time":3199`}, nil},
		{Info{Status: StatusActive, TotalTime: 1000, ExpectedDowntime: 300}, []string{`"total-time":1000`, `"expected-downtime":300`}, []string{`"downtime"`, `"setup-time"`}},
	} {
		b, err := json.Marshal(tc.info)
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range tc.has {
			if !strings.Contains(string(b), h) {
				t.Errorf("%s lacks %s", b, h)
			}
		}
		for _, n := range tc.not {
			if strings.Contains(string(b), n) {
				t.Errorf("%s has %s", b, n)
			}
		}
		if strings.Count(string(b), `"downtime"`) > 1 {
			t.Errorf("%s has downtime twice", b)
		}
		var back Info
		if err := json.Unmarshal(b, &back); err != nil || back.Status != tc.info.Status || back.TotalTime != tc.info.TotalTime || back.Downtime != tc.info.Downtime {
			t.Errorf("%s parsed back as %+v (%v)", b, back, err)
		}
		// Through a pointer too, as query-migrate's reply holds it.
		if p, _ := json.Marshal(&tc.info); string(p) != string(b) {
			t.Errorf("through a pointer %s, as a value %s", p, b)
		}
	}
}

// TestIncomingQueryMigrate: a destination's query-migrate, once its
// incoming migration completed, says "completed" as QEMU's does, with what
// it took and its guest's waits in post-copy (walk 138: {}).
func TestIncomingQueryMigrate(t *testing.T) {
	c := NewController(nil, nil, nil)
	empty, err := c.queryMigrate(context.Background(), nil)
	if b, _ := json.Marshal(empty); err != nil || string(b) != "{}" {
		t.Fatalf("before any migration: %s, %v; want {}", b, err)
	}
	// While it comes, the status alone, as QEMU's destination says it
	// (walk 148: {} while the guest waited on a source gone).
	for _, st := range []string{StatusActive, StatusPostcopy, StatusPostcopyPaused} {
		c.Receiving(st)
		got, err := c.queryMigrate(context.Background(), nil)
		if b, _ := json.Marshal(got); err != nil || string(b) != `{"status":"`+st+`"}` {
			t.Errorf("query-migrate while receiving: %s, %v; want status %s", b, err, st)
		}
	}
	c.Receiving("") // a source that went before it sent a page
	if got, err := c.queryMigrate(context.Background(), nil); err != nil {
		t.Fatal(err)
	} else if b, _ := json.Marshal(got); string(b) != "{}" {
		t.Errorf("query-migrate once the source went: %s, want {}", b)
	}
	c.Received(Received{Mode: ModeTSMC, Rounds: 2, Pages: 100, Bytes: 409700, Elapsed: 1500 * time.Millisecond,
		Pulled: 3, Pushed: 40, Waited: 250 * time.Millisecond, Verified: true})
	got, err := c.queryMigrate(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(got)
	want := `{"status":"completed","x-pagecast":{"incoming":{"mode":"tsmc","rounds":2,"pages":100,"zero-pages":0,"bytes":409700,"total-time":1500,"pulled":3,"pushed":40,"fault-time":250,"verified":true}}}`
	if string(b) != want {
		t.Errorf("query-migrate after an incoming migration:\n%s\nwant\n%s", b, want)
	}
	// A migration out asked for ends that report: while mode auto
	// watches the guest, query-migrate says setup, as QEMU's once
	// migrate is sent.
	inside, release := make(chan struct{}), make(chan struct{})
	c.SetChooser(func(context.Context, Guest, Config) (*AutoChoice, error) {
		close(inside)
		<-release
		return nil, errors.New("no choice in this test")
	})
	c.cfg.Mode, c.cfg.MaxBandwidth = ModeAuto, 32<<20
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.migrate(context.Background(), json.RawMessage(`{"uri":"tcp:127.0.0.1:1"}`))
	}()
	<-inside
	got, _ = c.queryMigrate(context.Background(), nil)
	close(release)
	<-done
	want = `{"status":"setup","x-pagecast":{"mode":"auto","bandwidth":33554432,"destination":"tcp:127.0.0.1:1"}}`
	if b, _ := json.Marshal(got); string(b) != want {
		t.Errorf("query-migrate while auto watched the guest for a migration out: %s, want %s", b, want)
	}
	// And once the watch has ended, nothing migrated, nothing is said.
	if got, _ = c.queryMigrate(context.Background(), nil); func() string { b, _ := json.Marshal(got); return string(b) }() != "{}" {
		t.Errorf("query-migrate after a failed choice with no migration before: %+v, want {}", got)
	}
}

// TestMigratePause: migrate-pause reaches the incoming migration only
// while its guest runs here in post-copy, once however often it is sent
// before the receiver reads it; elsewhere it is refused in QEMU's words.
func TestMigratePause(t *testing.T) {
	c := NewController(nil, nil, nil)
	pause := func() error {
		_, err := c.migratePause(context.Background(), nil)
		return err
	}
	for _, st := range []string{"", StatusActive, StatusPostcopyPaused} {
		c.Receiving(st)
		if err := pause(); err == nil || !strings.Contains(err.Error(), "only supported during postcopy-active") {
			t.Errorf("migrate-pause with the incoming migration %q: %v, want refused", st, err)
		}
	}
	select {
	case <-c.PauseRequests():
		t.Fatal("a refused migrate-pause reached the migration")
	default:
	}
	c.Receiving(StatusPostcopy)
	if err := pause(); err != nil {
		t.Fatal(err)
	}
	if err := pause(); err != nil { // before the first is read
		t.Fatal(err)
	}
	select {
	case <-c.PauseRequests():
	default:
		t.Fatal("migrate-pause in post-copy did not reach the migration")
	}
	select {
	case <-c.PauseRequests():
		t.Error("two migrate-pause before the receiver read one came as two")
	default:
	}
}
