package migrator

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// TestControllerAuto: mode auto over QMP is refused without a Chooser and
// without a link rate; with one, migrate runs the mode it chose, with its
// prefer, and query-migrate reports the choice; a chooser that fails
// fails migrate with its reason and starts nothing.
func TestControllerAuto(t *testing.T) {
	ctx := context.Background()
	set := func(c *Controller, args string) error {
		_, err := c.setParameters(ctx, json.RawMessage(args))
		return err
	}
	src := newMemGuest(t, lightLoad, true)
	c := NewController(src, slog.New(slog.DiscardHandler), nil)
	if err := set(c, `{"x-pagecast-mode":"auto"}`); err == nil || !strings.Contains(err.Error(), "not available") {
		t.Errorf("auto without a chooser: %v", err)
	}

	var asked Config
	fail := false
	c.SetChooser(func(_ context.Context, g Guest, cfg Config) (*AutoChoice, error) {
		if g != Guest(src) {
			t.Error("the chooser was given another guest")
		}
		asked = cfg
		if fail {
			return nil, errors.New("the guest wrote nothing")
		}
		return &AutoChoice{Mode: MECOM, Prefer: cfg.Prefer, Why: "the fewest bytes predicted",
			Predictions: []Prediction{{Mode: MECOM, TotalTime: 900}, {Mode: ModePrecopy, TotalTime: 2000}}}, nil
	})
	if err := set(c, `{"x-pagecast-mode":"auto","x-pagecast-prefer":"fast"}`); err == nil || !strings.Contains(err.Error(), "x-pagecast-prefer") {
		t.Errorf("prefer fast: %v", err)
	}
	if err := set(c, `{"x-pagecast-observe":0}`); err == nil || !strings.Contains(err.Error(), "x-pagecast-observe") {
		t.Errorf("observe 0: %v", err)
	}
	if err := set(c, `{"x-pagecast-mode":"auto","x-pagecast-prefer":"bytes","x-pagecast-observe":7}`); err != nil {
		t.Fatal(err)
	}
	if _, err := c.migrate(ctx, json.RawMessage(`{"uri":"tcp:127.0.0.1:1"}`)); err == nil || !strings.Contains(err.Error(), "max-bandwidth") {
		t.Errorf("auto without a link rate: %v", err)
	}
	if err := set(c, `{"max-bandwidth":67108864}`); err != nil {
		t.Fatal(err)
	}

	// A source not running is refused before the watch, as in any mode
	// (walk 154: said to have stopped during it).
	src.Pause()
	if _, err := c.migrate(ctx, json.RawMessage(`{"uri":"tcp:127.0.0.1:1"}`)); err == nil || !strings.Contains(err.Error(), "virtual machine is paused, not running") || asked.Mode != "" {
		t.Errorf("auto of a paused source: %v (the chooser asked: %v)", err, asked.Mode != "")
	}
	src.Resume()

	fail = true
	if _, err := c.migrate(ctx, json.RawMessage(`{"uri":"tcp:127.0.0.1:1"}`)); err == nil || !strings.Contains(err.Error(), "mode auto: the guest wrote nothing") {
		t.Errorf("failing chooser: %v", err)
	}
	if c.Current() != nil {
		t.Error("a failed choice started a migration")
	}

	fail = false
	dst := listenDestination(t, newMemGuest(t, lightLoad, false), ReceiveConfig{})
	if _, err := c.migrate(ctx, json.RawMessage(`{"uri":"`+dst.uri+`"}`)); err != nil {
		t.Fatal(err)
	}
	if asked.Prefer != "bytes" || asked.MaxBandwidth != 64<<20 || asked.Observe != 7 {
		t.Errorf("the chooser was asked with prefer %q, %d bytes/s, %d epochs", asked.Prefer, asked.MaxBandwidth, asked.Observe)
	}
	m := c.Current()
	if m == nil {
		t.Fatal("no migration started")
	}
	done := make(chan struct{})
	go func() { m.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("the migration did not end in 60 s")
	}
	info, err := c.queryMigrate(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	i := info.(Info)
	if i.Status != StatusCompleted || i.Pagecast == nil || i.Pagecast.Mode != MECOM || i.Pagecast.Auto == nil ||
		i.Pagecast.Auto.Mode != MECOM || i.Pagecast.Auto.Prefer != "bytes" {
		t.Errorf("query-migrate after auto: %+v, pagecast %+v", i, i.Pagecast)
	}

	// A second migration asked for: while auto watches the guest,
	// query-migrate says setup, not the last one's completed (walk 151:
	// a failed one's "failed" stayed, and a script took the new one for
	// failed).
	inside, release := make(chan struct{}), make(chan struct{})
	c.SetChooser(func(context.Context, Guest, Config) (*AutoChoice, error) {
		close(inside)
		<-release
		return nil, errors.New("no choice this time")
	})
	src.Resume() // the source runs again (its migration failed, say)
	second := make(chan struct{})
	go func() {
		defer close(second)
		c.migrate(ctx, json.RawMessage(`{"uri":"tcp:127.0.0.1:1"}`))
	}()
	<-inside
	info, _ = c.queryMigrate(ctx, nil)
	close(release)
	<-second
	if b, _ := json.Marshal(info); !strings.Contains(string(b), `"status":"setup"`) || !strings.Contains(string(b), `"mode":"auto"`) {
		t.Errorf("query-migrate while auto watched the guest after a completed migration: %s, want setup in mode auto", b)
	}
	if info, _ = c.queryMigrate(ctx, nil); info.(Info).Status != StatusCompleted {
		t.Errorf("query-migrate once the second choice failed: %+v, want the completed migration's", info)
	}
}

// TestStartPostcopy: QMP migrate-start-postcopy has a MODE+postcopy
// migration switch to post-copy at its next harvest, early in a first
// pass that had seconds to go, and the guest arrives whole; other
// modes, and no migration, are refused saying why.
func TestStartPostcopy(t *testing.T) {
	if err := uffdAvailable(); err != nil {
		t.Skip(err)
	}
	ctx := context.Background()
	load := lightLoad
	load.Memory = 32 << 20
	src := newMemGuest(t, load, true)
	dst := newMemGuest(t, load, false)
	dlog, err := dst.StartDirtyLog()
	if err != nil {
		t.Fatal(err)
	}
	defer dlog.Close()
	c := NewController(src, slog.New(slog.DiscardHandler), nil)
	if _, err := c.startPostcopy(ctx, nil); err == nil || !strings.Contains(err.Error(), "no migration is under way") {
		t.Errorf("migrate-start-postcopy before any migration: %v", err)
	}
	// 32 MiB at 4 MiB/s: a first pass of some 5 s.
	if _, err := c.setParameters(ctx, json.RawMessage(`{"x-pagecast-mode":"precopy+postcopy","max-bandwidth":4194304}`)); err != nil {
		t.Fatal(err)
	}
	d := listenDestination(t, dst, ReceiveConfig{})
	if _, err := c.migrate(ctx, json.RawMessage(`{"uri":"`+d.uri+`"}`)); err != nil {
		t.Fatal(err)
	}
	m := c.Current()
	for m.Info().RAM == nil || m.Info().RAM.Transferred == 0 { // the pass has begun
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := c.startPostcopy(ctx, nil); err != nil {
		t.Fatal(err)
	}
	// The rest uncapped, as a user in a hurry would, once it has
	// switched: uncapped before, the pass could end between two
	// harvests (CI 119, under the race detector).
	for st := m.Info().Status; st != StatusPostcopy && st != StatusCompleted && st != StatusFailed; st = m.Info().Status {
		time.Sleep(10 * time.Millisecond)
	}
	m.SetBandwidth(0)
	info, err := m.Wait()
	if err != nil {
		t.Fatal(err)
	}
	<-d.done
	if d.err != nil {
		t.Fatal(d.err)
	}
	t.Logf("stop: %s; pages per round %v", info.Pagecast.StopReason, info.Pagecast.RoundPages)
	if !strings.Contains(info.Pagecast.StopReason, "migrate-start-postcopy in round 1") || len(info.Pagecast.RoundPages) == 0 ||
		info.Pagecast.RoundPages[0] >= load.Memory/PageSize/2 {
		t.Errorf("after migrate-start-postcopy as a 5 s pass began: %s, pages per round %v; want the switch in round 1, with most pages left for post-copy",
			info.Pagecast.StopReason, info.Pagecast.RoundPages)
	}
	waitWrites(t, dst, src.seqNow())
	assertSameMemory(t, src, dst, dlog)

	// Other modes: refused, saying why.
	for mode, want := range map[string]string{ModePrecopy: "has no post-copy: give x-pagecast-mode precopy+postcopy", ModeTSMC: "after its one pass by itself"} {
		g := newMemGuest(t, load, true)
		c := NewController(g, slog.New(slog.DiscardHandler), nil)
		if _, err := c.setParameters(ctx, json.RawMessage(`{"x-pagecast-mode":"`+mode+`","max-bandwidth":1048576}`)); err != nil {
			t.Fatal(err)
		}
		d := listenDestination(t, newMemGuest(t, load, false), ReceiveConfig{})
		if _, err := c.migrate(ctx, json.RawMessage(`{"uri":"`+d.uri+`"}`)); err != nil {
			t.Fatal(err)
		}
		if _, err := c.startPostcopy(ctx, nil); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("migrate-start-postcopy in mode %s: %v, want %q", mode, err, want)
		}
		c.Current().Cancel()
		c.Current().Wait()
	}
}
