package qmpserver

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/digitalocean/go-qemu/qmp"
)

func TestEmitReachesGoQEMU(t *testing.T) {
	srv := startServer(t, nil)
	mon := connectGoQEMU(t, srv.path)
	events, err := mon.Events(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	received := make(chan qmp.Event, 16)
	go func() {
		for e := range events {
			received <- e
		}
	}()

	before := time.Now()
	srv.Emit("STOP", nil)
	srv.Emit("MIGRATION", map[string]string{"status": "active"})

	for _, want := range []struct {
		event string
		data  map[string]any
	}{
		{"STOP", nil},
		{"MIGRATION", map[string]any{"status": "active"}},
	} {
		select {
		case e := <-received:
			if e.Event != want.event {
				t.Errorf("event %s, want %s", e.Event, want.event)
			}
			if len(e.Data) != len(want.data) || (want.data != nil && e.Data["status"] != want.data["status"]) {
				t.Errorf("%s data = %v, want %v", e.Event, e.Data, want.data)
			}
			stamp := time.Unix(e.Timestamp.Seconds, e.Timestamp.Microseconds*1000)
			if e.Timestamp.Microseconds < 0 || e.Timestamp.Microseconds >= 1e6 ||
				stamp.Before(before.Truncate(time.Microsecond)) || stamp.After(time.Now()) {
				t.Errorf("%s timestamp %+v, want between %v and now", e.Event, e.Timestamp, before)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no %s event", want.event)
		}
	}
}

func TestEmitWire(t *testing.T) {
	srv := startServer(t, nil)
	early := dial(t, srv.path)

	// No event before negotiation, none before the reply to qmp_capabilities.
	srv.Emit("EARLY", nil)
	early.send(`{"execute":"qmp_capabilities"}`)
	if reply := early.recv(); string(reply["return"]) != "{}" {
		t.Fatalf("qmp_capabilities: %v", reply)
	}
	early.send(`{"execute":"query-status"}`)
	if reply := early.recv(); reply["return"] == nil {
		t.Errorf("an event reached a client before negotiation: %v", reply)
	}

	srv.Emit("SHUTDOWN", map[string]any{"guest": true, "reason": "guest-shutdown"})
	line := string(early.recvLine())
	for _, part := range []string{`{"timestamp": {"seconds": `, `, "microseconds": `, `}, "event": "SHUTDOWN", "data": {"guest": true, "reason": "guest-shutdown"}}`} {
		if !strings.Contains(line, part) {
			t.Errorf("event line %s lacks %s", line, part)
		}
	}

	// Data that is not an object is not sent.
	srv.Emit("BAD", []int{1})
	srv.Emit("GOOD", nil)
	if reply := early.recv(); string(reply["event"]) != `"GOOD"` {
		t.Errorf("got %v, want the GOOD event", reply)
	}
}

func TestEventsOfPipelinedCommands(t *testing.T) {
	// As `printf '{"execute":"qmp_capabilities"}{"execute":"stop"}' | socat …`:
	// the event of a command sent right after qmp_capabilities is not lost.
	srv := startServer(t, func(s *Server) {
		s.Handle("stop", func(context.Context, json.RawMessage) (any, error) {
			s.Emit("STOP", nil)
			return nil, nil
		})
	})
	for range 20 {
		c := dial(t, srv.path)
		c.send(`{"execute":"qmp_capabilities"}{"execute":"stop"}`)
		for _, want := range []string{"return", "event", "return"} {
			if m := c.recv(); m[want] == nil {
				t.Fatalf("got %v, want a line with %q", m, want)
			}
		}
		c.conn.Close()
	}
}

func TestEmitStuckClient(t *testing.T) {
	srv := startServer(t, nil)
	stuck := dialNegotiated(t, srv.path) // and never reads again

	mon := connectGoQEMU(t, srv.path)
	events, err := mon.Events(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan int, 1)
	go func() {
		n := 0
		for e := range events {
			if e.Event == "LAST" {
				select {
				case got <- n:
				default:
				}
			}
			n++
		}
	}()

	// Far more than the stuck client's socket buffer and queue can hold.
	const sent = 2000
	data := map[string]string{"pad": strings.Repeat("x", 4096)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range sent {
			srv.Emit("DIRTY", data)
			time.Sleep(20 * time.Microsecond) // let the reading client keep up
		}
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Emit blocked on a client that does not read")
	}
	// The reading client still gets events (this one is repeated in case the
	// reading client, too, was too slow to get it the first time).
	deadline := time.After(10 * time.Second)
	for received := false; !received; {
		srv.Emit("LAST", nil)
		select {
		case n := <-got:
			t.Logf("the reading client received %d of %d events", n, sent)
			received = true
		case <-time.After(10 * time.Millisecond):
		case <-deadline:
			t.Fatal("the reading client gets no more events")
		}
	}
	if !strings.Contains(srv.log.String(), "dropping events") {
		t.Error("dropped events were not logged")
	}

	// The stuck client still has its earliest events queued, in order.
	stuck.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	var first struct {
		Event string          `json:"event"`
		Data  json.RawMessage `json:"data"`
	}
	line, err := stuck.r.ReadBytes('\n')
	if err != nil || json.Unmarshal(line, &first) != nil || first.Event != "DIRTY" {
		t.Errorf("stuck client's first line: %.80q, %v", line, err)
	}
}
