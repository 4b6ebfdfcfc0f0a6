package qmpserver

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// logBuffer collects a Server's log for tests to inspect.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// testServer is a Server serving a socket in a test's temporary directory.
type testServer struct {
	*Server
	path string
	log  *logBuffer
}

// startServer starts a Server with the commands the tests use, plus those
// register adds, and stops it when the test ends, checking that Serve returns
// nil and removes the socket.
func startServer(t *testing.T, register func(*Server)) *testServer {
	t.Helper()
	logs := &logBuffer{}
	logger := slog.New(slog.NewTextHandler(io.MultiWriter(logs, t.Output()), &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv := New(logger, "test")
	srv.Handle("query-status", func(context.Context, json.RawMessage) (any, error) {
		return map[string]any{"status": "running", "running": true, "singlestep": false}, nil
	})
	srv.Handle("echo", func(_ context.Context, raw json.RawMessage) (any, error) {
		args, err := Args[struct {
			Msg string `json:"msg"`
		}](raw)
		if err != nil {
			return nil, err
		}
		return map[string]string{"msg": args.Msg}, nil
	})
	if register != nil {
		register(srv)
	}

	path := filepath.Join(t.TempDir(), "qmp.sock")
	l, err := Listen(path)
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-served:
			if err != nil {
				t.Errorf("Serve returned %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Serve did not return after its context was cancelled")
		}
	})
	return &testServer{Server: srv, path: path, log: logs}
}

// rawClient speaks QMP by hand, to see exactly what goes over the wire.
type rawClient struct {
	t    *testing.T
	conn *net.UnixConn
	r    *bufio.Reader
}

// dial connects and reads the greeting.
func dial(t *testing.T, path string) *rawClient {
	t.Helper()
	conn, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("dial %s: %v", path, err)
	}
	t.Cleanup(func() { conn.Close() })
	c := &rawClient{t: t, conn: conn.(*net.UnixConn), r: bufio.NewReader(conn)}
	if g := c.recv(); g["QMP"] == nil {
		t.Fatalf("first line is not a greeting: %v", g)
	}
	return c
}

// dialNegotiated connects and completes capabilities negotiation.
func dialNegotiated(t *testing.T, path string) *rawClient {
	t.Helper()
	c := dial(t, path)
	c.send(`{"execute":"qmp_capabilities"}`)
	if reply := c.recv(); string(reply["return"]) != "{}" {
		t.Fatalf("qmp_capabilities: %v", reply)
	}
	return c
}

func (c *rawClient) send(s string) {
	c.t.Helper()
	if _, err := c.conn.Write([]byte(s)); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// recvLine reads one line of output, checking it is ASCII and CRLF-terminated.
func (c *rawClient) recvLine() []byte {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := c.r.ReadBytes('\n')
	if err != nil {
		c.t.Fatalf("read: %v (got %q)", err, line)
	}
	if !bytes.HasSuffix(line, []byte("\r\n")) {
		c.t.Errorf("line does not end with CRLF: %q", line)
	}
	for _, b := range line {
		if b >= 0x80 {
			c.t.Errorf("line is not ASCII: %q", line)
			break
		}
	}
	return line
}

// recv reads one message, its members undecoded.
func (c *rawClient) recv() map[string]json.RawMessage {
	c.t.Helper()
	line := c.recvLine()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(line, &m); err != nil {
		c.t.Fatalf("line is not a JSON object: %q: %v", line, err)
	}
	return m
}

// expectClosed checks that the server has closed the connection.
func (c *rawClient) expectClosed() {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := c.r.ReadBytes('\n')
	if err == nil {
		c.t.Fatalf("connection still open, got %q", line)
	}
	if !errors.Is(err, io.EOF) && !strings.Contains(err.Error(), "connection reset") {
		c.t.Fatalf("reading a closed connection: %v", err)
	}
}

// qmpError decodes the error member of a reply, failing if there is none.
func qmpError(t *testing.T, reply map[string]json.RawMessage) Error {
	t.Helper()
	var e Error
	if reply["error"] == nil || json.Unmarshal(reply["error"], &e) != nil {
		t.Fatalf("reply is not an error: %v", reply)
	}
	return e
}
