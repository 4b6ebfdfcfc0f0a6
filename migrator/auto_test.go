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
