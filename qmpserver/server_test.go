package qmpserver

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/digitalocean/go-qemu/qmp"
	"github.com/digitalocean/go-qemu/qmp/raw"
)

// connectGoQEMU connects go-qemu's socket monitor, as pagecast drives QEMU.
func connectGoQEMU(t *testing.T, path string) *qmp.SocketMonitor {
	t.Helper()
	mon, err := qmp.NewSocketMonitor("unix", path, 2*time.Second)
	if err != nil {
		t.Fatalf("NewSocketMonitor: %v", err)
	}
	if err := mon.Connect(); err != nil {
		t.Fatalf("Connect: %v", err)
	}
	t.Cleanup(func() { mon.Disconnect() })
	return mon
}

func TestGoQEMUClient(t *testing.T) {
	srv := startServer(t, nil)
	mon := connectGoQEMU(t, srv.path)

	if got := mon.Version.String(); got != "7.2.0" {
		t.Errorf("version = %s, want 7.2.0", got)
	}
	if mon.Version.Package != "pagecast test" {
		t.Errorf("package = %q, want %q", mon.Version.Package, "pagecast test")
	}

	out, err := mon.Run([]byte(`{"execute":"query-status"}`))
	if err != nil {
		t.Fatalf("query-status: %v", err)
	}
	var reply struct {
		Return struct {
			Status  string `json:"status"`
			Running bool   `json:"running"`
		} `json:"return"`
	}
	if err := json.Unmarshal(out, &reply); err != nil {
		t.Fatalf("query-status reply %q: %v", out, err)
	}
	if reply.Return.Status != "running" || !reply.Return.Running {
		t.Errorf("query-status = %s", out)
	}

	status, err := raw.NewMonitor(mon).QueryStatus()
	if err != nil {
		t.Fatalf("raw QueryStatus: %v", err)
	}
	if status.Status != raw.RunStateRunning || !status.Running {
		t.Errorf("raw QueryStatus = %+v", status)
	}

	version, err := raw.NewMonitor(mon).QueryVersion()
	if err != nil {
		t.Fatalf("raw QueryVersion: %v", err)
	}
	if version.Qemu.Major != 7 || version.Qemu.Minor != 2 || version.Package != "pagecast test" {
		t.Errorf("raw QueryVersion = %+v", version)
	}

	_, err = mon.Run([]byte(`{"execute":"nope"}`))
	if err == nil || err.Error() != "The command nope has not been found" {
		t.Errorf("unknown command: err = %v", err)
	}
}

func TestGreeting(t *testing.T) {
	srv := startServer(t, nil)
	conn, err := net.Dial("unix", srv.path)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := &rawClient{t: t, conn: conn.(*net.UnixConn), r: bufio.NewReader(conn)}
	want := `{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": "pagecast test"}, "capabilities": []}}` + "\r\n"
	if got := string(c.recvLine()); got != want {
		t.Errorf("greeting\ngot  %q\nwant %q", got, want)
	}
}

func TestNegotiation(t *testing.T) {
	srv := startServer(t, nil)
	c := dial(t, srv.path)

	steps := []struct {
		name, send string
		class      string // "" for success
		desc       string
	}{
		{"command before negotiation", `{"execute":"query-version"}`, ClassCommandNotFound, "Expecting capabilities negotiation with 'qmp_capabilities'"},
		{"unknown command before negotiation", `{"execute":"nope"}`, ClassCommandNotFound, "Expecting capabilities negotiation with 'qmp_capabilities'"},
		{"capability not offered", `{"execute":"qmp_capabilities","arguments":{"enable":["oob"]}}`, ClassGenericError, "Capability 'oob' not available"},
		{"unknown capability", `{"execute":"qmp_capabilities","arguments":{"enable":["foo"]}}`, ClassGenericError, "Parameter 'enable' does not accept value 'foo'"},
		{"bad argument", `{"execute":"qmp_capabilities","arguments":{"x":1}}`, ClassGenericError, "Parameter 'x' is unexpected"},
		{"negotiate", `{"execute":"qmp_capabilities"}`, "", ""},
		{"negotiate again", `{"execute":"qmp_capabilities"}`, ClassCommandNotFound, "Capabilities negotiation is already complete, command ignored"},
		{"command after negotiation", `{"execute":"query-version"}`, "", ""},
	}
	for _, step := range steps {
		c.send(step.send)
		reply := c.recv()
		if step.class == "" {
			if reply["return"] == nil {
				t.Errorf("%s: got %v, want success", step.name, reply)
			}
			continue
		}
		if e := qmpError(t, reply); e.Class != step.class || e.Desc != step.desc {
			t.Errorf("%s: got %s %q, want %s %q", step.name, e.Class, e.Desc, step.class, step.desc)
		}
	}
}

func TestErrorReplies(t *testing.T) {
	srv := startServer(t, func(s *Server) {
		s.Handle("fail", func(context.Context, json.RawMessage) (any, error) {
			return nil, errors.New("boom")
		})
		s.Handle("fail-device", func(context.Context, json.RawMessage) (any, error) {
			return nil, fmt.Errorf("drive0: %w", &Error{Class: ClassDeviceNotFound, Desc: "no such device"})
		})
		s.Handle("panic", func(context.Context, json.RawMessage) (any, error) {
			panic("broken")
		})
	})
	c := dialNegotiated(t, srv.path)

	tests := []struct {
		name  string
		send  string
		class string
		desc  string // a trailing * matches any rest
		id    string // the raw id expected, or "" for none
	}{
		{"unknown command", `{"execute":"nope","id":1}`, ClassCommandNotFound, "The command nope has not been found", "1"},
		{"handler error", `{"execute":"fail","id":"a"}`, ClassGenericError, "boom", `"a"`},
		{"handler error with class", `{"execute":"fail-device"}`, ClassDeviceNotFound, "drive0: no such device", ""},
		{"handler panic", `{"execute":"panic"}`, ClassGenericError, "internal error in command panic", ""},
		{"unexpected argument", `{"execute":"echo","arguments":{"msg":"hi","extra":1},"id":2}`, ClassGenericError, "Parameter 'extra' is unexpected", "2"},
		{"argument of the wrong type", `{"execute":"echo","arguments":{"msg":5}}`, ClassGenericError, "Invalid parameter type for 'msg', expected: string", ""},
		{"arguments not an object", `{"execute":"echo","arguments":[1]}`, ClassGenericError, "QMP input member 'arguments' must be an object", ""},
		{"execute not a string", `{"execute":1,"id":3}`, ClassGenericError, "QMP input member 'execute' must be a string", "3"},
		{"no execute", `{"id":4}`, ClassGenericError, "QMP input lacks member 'execute'", "4"},
		{"out-of-band", `{"exec-oob":"query-status"}`, ClassGenericError, "QMP input member 'exec-oob' is unexpected", ""},
		{"unknown member", `{"execute":"query-status","foo":1}`, ClassGenericError, "QMP input member 'foo' is unexpected", ""},
		{"not an object", `[1, 2]`, ClassGenericError, "QMP input must be a JSON object", ""},
		{"bare number", "42\n", ClassGenericError, "QMP input must be a JSON object", ""},
		{"malformed JSON", "{\"execute\": }\n", ClassGenericError, "JSON parse error, *", ""},
		{"bad keyword", "nonsense\n", ClassGenericError, "JSON parse error, *", ""},
		{"stray brace", "}", ClassGenericError, "JSON parse error, stray '}'", ""},
		{"lone 0xff", "\xff", ClassGenericError, "JSON parse error, stray '\\xff'", ""},
		{"abandoned by a control character", `{"execute": "query-sta` + "\x1b", ClassGenericError, "JSON parse error, stray '\\x1b' in string", ""},
		{"abandoned by 0xff", `{"execute": ` + "\xff", ClassGenericError, "JSON parse error, stray '\\xff'", ""},
		{"newline in a string", "{\"execute\": \"query-\n", ClassGenericError, "JSON parse error, stray '\\x0a' in string", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c.t = t
			c.send(tt.send)
			reply := c.recv()
			e := qmpError(t, reply)
			if e.Class != tt.class {
				t.Errorf("class = %s, want %s", e.Class, tt.class)
			}
			if prefix, ok := strings.CutSuffix(tt.desc, "*"); ok {
				if !strings.HasPrefix(e.Desc, prefix) {
					t.Errorf("desc = %q, want %q…", e.Desc, prefix)
				}
			} else if e.Desc != tt.desc {
				t.Errorf("desc = %q, want %q", e.Desc, tt.desc)
			}
			if got := string(reply["id"]); got != tt.id {
				t.Errorf("id = %s, want %s", got, tt.id)
			}

			// The connection survives every error.
			c.send(`{"execute":"query-status","id":"after"}`)
			if after := c.recv(); after["return"] == nil || string(after["id"]) != `"after"` {
				t.Errorf("next command: %v", after)
			}
		})
	}
}

func TestSuccessReplies(t *testing.T) {
	srv := startServer(t, func(s *Server) {
		s.Handle("nothing", func(context.Context, json.RawMessage) (any, error) { return nil, nil })
		s.Handle("nil-map", func(context.Context, json.RawMessage) (any, error) {
			var m map[string]int
			return m, nil
		})
		s.Handle("args", func(_ context.Context, raw json.RawMessage) (any, error) { return raw, nil })
	})
	c := dialNegotiated(t, srv.path)

	tests := []struct {
		name    string
		send    string
		replies []string // exact lines, without CRLF
	}{
		{"nil result", `{"execute":"nothing"}`, []string{`{"return": {}}`}},
		{"nil map result", `{"execute":"nil-map"}`, []string{`{"return": {}}`}},
		{"no arguments reach the handler as {}", `{"execute":"args"}`, []string{`{"return": {}}`}},
		{"string id", `{"execute":"nothing","id":"x-1"}`, []string{`{"return": {}, "id": "x-1"}`}},
		{"number id", `{"execute":"nothing","id":42}`, []string{`{"return": {}, "id": 42}`}},
		{"object id", `{"id": {"a": [1, 2.5, "b"]}, "execute":"nothing"}`, []string{`{"return": {}, "id": {"a": [1, 2.5, "b"]}}`}},
		{"null id", `{"execute":"nothing","id":null}`, []string{`{"return": {}, "id": null}`}},
		{"id first in errors, as QEMU", `{"execute":"nope","id":1}`, []string{`{"id": 1, "error": {"class": "CommandNotFound", "desc": "The command nope has not been found"}}`}},
		{"result", `{"execute":"echo","arguments":{"msg":"hi"},"id":7}`, []string{`{"return": {"msg": "hi"}, "id": 7}`}},
		{"two commands, no newline", `{"execute":"nothing","id":1}{"execute":"nothing","id":2}`, []string{`{"return": {}, "id": 1}`, `{"return": {}, "id": 2}`}},
		{"multi-line command", "{\n  \"execute\": \"nothing\",\n  \"id\": 3\n}\n", []string{`{"return": {}, "id": 3}`}},
		{"single quotes", `{'execute': 'echo', 'arguments': {'msg': 'it\'s "quoted", {x: y}'}, 'id': 'q'}`, []string{`{"return": {"msg": "it's \"quoted\", {x: y}"}, "id": "q"}`}},
		{"non-ASCII is escaped", `{"execute":"echo","arguments":{"msg":"é🙂<\u001b"}}`, []string{`{"return": {"msg": "\u00E9\uD83D\uDE42<\u001B"}}`}},
		{"query-commands", `{"execute":"query-commands"}`, []string{`{"return": [{"name": "args"}, {"name": "echo"}, {"name": "nil-map"}, {"name": "nothing"}, {"name": "qmp_capabilities"}, {"name": "query-commands"}, {"name": "query-status"}, {"name": "query-version"}]}`}},
		{"query-version", `{"execute":"query-version"}`, []string{`{"return": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": "pagecast test"}}`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c.t = t
			c.send(tt.send)
			for _, want := range tt.replies {
				if got := strings.TrimSuffix(string(c.recvLine()), "\r\n"); got != want {
					t.Errorf("got  %s\nwant %s", got, want)
				}
			}
		})
	}

	t.Run("one byte at a time", func(t *testing.T) {
		c.t = t
		for _, b := range []byte(`{"execute":"echo","arguments":{"msg":"slow"}}`) {
			c.send(string(b))
		}
		if got := strings.TrimSuffix(string(c.recvLine()), "\r\n"); got != `{"return": {"msg": "slow"}}` {
			t.Errorf("got %s", got)
		}
	})
}

func TestHalfClose(t *testing.T) {
	// As `echo '…' | socat - UNIX-CONNECT:…` does: send, shut down writing, read.
	srv := startServer(t, nil)
	c := dial(t, srv.path)
	c.send(`{"execute":"qmp_capabilities"}{"execute":"query-status","id":1}` + "\n")
	if err := c.conn.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if reply := c.recv(); string(reply["return"]) != "{}" {
		t.Errorf("qmp_capabilities: %v", reply)
	}
	if reply := c.recv(); string(reply["id"]) != "1" || reply["return"] == nil {
		t.Errorf("query-status: %v", reply)
	}
	c.expectClosed()
}

func TestOversizedInput(t *testing.T) {
	srv := startServer(t, nil)
	other := dialNegotiated(t, srv.path)
	c := dialNegotiated(t, srv.path)

	huge := `{"execute":"echo","arguments":{"msg":"` + strings.Repeat("x", 2<<20) + `"}}`
	go c.conn.Write([]byte(huge)) // fails once the server hangs up
	e := qmpError(t, c.recv())
	if e.Class != ClassGenericError || e.Desc != "QMP input exceeds 1048576 bytes" {
		t.Errorf("got %s %q", e.Class, e.Desc)
	}
	c.expectClosed()

	other.send(`{"execute":"query-status"}`)
	if reply := other.recv(); reply["return"] == nil {
		t.Errorf("other client: %v", reply)
	}

	// Just under the limit is fine.
	ok := dialNegotiated(t, srv.path)
	msg := strings.Repeat("y", maxInput-100)
	ok.send(`{"execute":"echo","arguments":{"msg":"` + msg + `"}}`)
	var reply struct {
		Return struct{ Msg string } `json:"return"`
	}
	if err := json.Unmarshal(ok.recvLine(), &reply); err != nil || reply.Return.Msg != msg {
		t.Errorf("command under the limit: err %v, got %d bytes back", err, len(reply.Return.Msg))
	}
}

func TestConcurrentClients(t *testing.T) {
	var (
		mu    sync.Mutex
		count int
	)
	srv := startServer(t, func(s *Server) {
		s.Handle("count", func(context.Context, json.RawMessage) (any, error) {
			mu.Lock()
			defer mu.Unlock()
			count++
			return map[string]int{"count": count}, nil
		})
	})
	const commands = 100

	// go-qemu clients get no events here: go-qemu's SocketMonitor hands Run a
	// buffer its reader goroutine reuses for the next line, an event included
	// (digitalocean/go-qemu#226), which the race detector reports.
	t.Run("go-qemu", func(t *testing.T) {
		var wg sync.WaitGroup
		for i := range 4 {
			mon := connectGoQEMU(t, srv.path)
			wg.Go(func() {
				for j := range commands {
					if _, err := mon.Run([]byte(`{"execute":"count"}`)); err != nil {
						t.Errorf("client %d command %d: %v", i, j, err)
						return
					}
				}
			})
		}
		wg.Wait()
	})

	t.Run("events meanwhile", func(t *testing.T) {
		const clients = 8
		conns := make([]*rawClient, clients)
		for i := range conns {
			conns[i] = dialNegotiated(t, srv.path)
		}
		stopEmit := make(chan struct{})
		emitted := make(chan struct{})
		go func() {
			defer close(emitted)
			for {
				select {
				case <-stopEmit:
					return
				default:
					srv.Emit("TICK", map[string]int{"n": 1})
					time.Sleep(50 * time.Microsecond)
				}
			}
		}()

		var wg sync.WaitGroup
		for i, c := range conns {
			wg.Go(func() {
				events := 0
				for j := range commands {
					id := fmt.Sprintf("%d-%d", i, j)
					if _, err := c.conn.Write([]byte(`{"execute":"count","id":"` + id + `"}`)); err != nil {
						t.Errorf("client %d: %v", i, err)
						return
					}
					for {
						c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
						line, err := c.r.ReadBytes('\n')
						if err != nil {
							t.Errorf("client %d command %d: %v", i, j, err)
							return
						}
						var m struct {
							Event  string          `json:"event"`
							Return json.RawMessage `json:"return"`
							ID     string          `json:"id"`
						}
						if err := json.Unmarshal(line, &m); err != nil {
							t.Errorf("client %d: %q: %v", i, line, err)
							return
						}
						if m.Event != "" {
							events++
							continue
						}
						if m.ID != id || m.Return == nil {
							t.Errorf("client %d: got %s, want the reply to %s", i, line, id)
							return
						}
						break
					}
				}
				if events == 0 {
					t.Errorf("client %d received no events", i)
				}
			})
		}
		wg.Wait()
		close(stopEmit)
		<-emitted
	})

	mu.Lock()
	defer mu.Unlock()
	if want := 4*commands + 8*commands; count != want {
		t.Errorf("count = %d, want %d", count, want)
	}
}

func TestClientGoneMidCommand(t *testing.T) {
	started := make(chan struct{})
	release := make(chan struct{})
	srv := startServer(t, func(s *Server) {
		s.Handle("block", func(ctx context.Context, _ json.RawMessage) (any, error) {
			close(started)
			<-release
			return nil, nil
		})
	})
	c := dialNegotiated(t, srv.path)
	c.send(`{"execute":"block"}`)
	<-started
	c.conn.Close()

	mon := connectGoQEMU(t, srv.path)
	if _, err := mon.Run([]byte(`{"execute":"query-status"}`)); err != nil {
		t.Errorf("other client while a command of a gone client runs: %v", err)
	}
	close(release)
	if _, err := mon.Run([]byte(`{"execute":"query-status"}`)); err != nil {
		t.Errorf("other client after: %v", err)
	}
}

func TestShutdown(t *testing.T) {
	srv := New(nil, "")
	handlerDone := make(chan error, 1)
	started := make(chan struct{})
	srv.Handle("wait", func(ctx context.Context, _ json.RawMessage) (any, error) {
		close(started)
		<-ctx.Done()
		handlerDone <- ctx.Err()
		return nil, ctx.Err()
	})
	path := t.TempDir() + "/qmp.sock"
	l, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, l) }()

	idle := dialNegotiated(t, path)
	busy := dialNegotiated(t, path)
	busy.send(`{"execute":"wait"}`)
	<-started

	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Serve = %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return")
	}
	if err := <-handlerDone; !errors.Is(err, context.Canceled) {
		t.Errorf("handler's context: %v", err)
	}
	idle.expectClosed()
	if _, err := Listen(path); err != nil {
		t.Errorf("socket not free after shutdown: %v", err)
	}
}

// TestMaxClients: the server serves MaxClients at once; one more is told
// so in a QMP error and closed, and once a client has gone a new one is
// served (walk 153: 5 000 idle connections were all held).
func TestMaxClients(t *testing.T) {
	srv := startServer(t, nil)
	held := make([]*rawClient, 0, MaxClients)
	for range MaxClients {
		held = append(held, dial(t, srv.path))
	}
	conn, err := net.Dial("unix", srv.path)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(conn)
	if err != nil || !strings.Contains(string(b), `"class": "GenericError"`) || !strings.Contains(string(b), "too many QMP clients") {
		t.Fatalf("client %d: %q, %v; want a QMP error, then the end", MaxClients+1, b, err)
	}
	held[0].conn.Close()
	deadline := time.Now().Add(5 * time.Second)
	for srv.active.Load() >= MaxClients && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	c := dialNegotiated(t, srv.path)
	c.send(`{"execute":"query-status"}`)
	if reply := c.recv(); reply["return"] == nil {
		t.Errorf("a client after one went: %v", reply)
	}
}
