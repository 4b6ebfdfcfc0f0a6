package qmpserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// A Handler runs one QMP command. args is the command's "arguments" object,
// {} when the client sent none; Args decodes it. The result is marshalled with
// encoding/json as the reply's "return" member; a nil result replies
// {"return": {}}, as QEMU does for commands without output. An error is
// reported as described for Error.
//
// ctx is cancelled when Serve stops, and once writing to the client has
// failed. A command that starts work outliving it (QEMU's migrate returns at
// once and migrates in the background) must not tie that work to ctx.
type Handler func(ctx context.Context, args json.RawMessage) (any, error)

// capabilitiesCommand ends capabilities negotiation; a connection runs it
// itself, since it changes the connection's mode.
const capabilitiesCommand = "qmp_capabilities"

// clientQueue is how many replies and events may wait for a client to read
// them. Past that, events for the client are dropped; its own replies wait.
const clientQueue = 256

// versionInfo is QEMU's VersionInfo, sent in the greeting and by query-version.
type versionInfo struct {
	QEMU struct {
		Micro int `json:"micro"`
		Minor int `json:"minor"`
		Major int `json:"major"`
	} `json:"qemu"`
	Package string `json:"package"`
}

// Server is a QMP server: a set of commands and the clients connected to it.
// It is safe for concurrent use; Handle, Emit and Serve may be called at any
// time, and Serve on several listeners at once.
type Server struct {
	log      *slog.Logger
	version  versionInfo
	greeting []byte

	commandsMu sync.RWMutex
	commands   map[string]Handler // nil for qmp_capabilities, which a connection runs

	clientsMu sync.Mutex
	clients   map[*client]struct{}
	clientSeq atomic.Uint64
	active    atomic.Int64 // connections being served
}

// MaxClients is how many clients a Server serves at once; one more is told
// so in a QMP error and closed (walk 153: 5 000 idle connections to
// pagecast's monitor were all held, 5 015 file descriptors). QEMU serves
// one a socket.
const MaxClients = 64

// tooMany is what a client past MaxClients is told before it is closed.
var tooMany = []byte(fmt.Sprintf(`{"error": {"class": "GenericError", "desc": "too many QMP clients: this monitor serves %d at once; close one and connect again"}}`+"\r\n", MaxClients))

// New returns a Server with the built-in commands qmp_capabilities,
// query-commands and query-version. It presents itself as QEMU 7.2.0 with the
// package string "pagecast <version>" (just "pagecast" if version is empty).
// A nil logger discards the log.
func New(logger *slog.Logger, version string) *Server {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		log:      logger.With("component", "qmp"),
		commands: make(map[string]Handler),
		clients:  make(map[*client]struct{}),
	}
	s.version.QEMU.Major, s.version.QEMU.Minor, s.version.QEMU.Micro = 7, 2, 0
	s.version.Package = "pagecast"
	if version != "" {
		s.version.Package += " " + version
	}

	var greeting struct {
		QMP struct {
			Version      versionInfo `json:"version"`
			Capabilities []string    `json:"capabilities"`
		} `json:"QMP"`
	}
	greeting.QMP.Version = s.version
	greeting.QMP.Capabilities = []string{}
	s.greeting = encodeLine(greeting)

	s.commands[capabilitiesCommand] = nil
	s.Handle("query-commands", s.queryCommands)
	s.Handle("query-version", s.queryVersion)
	return s
}

// Handle registers the command name. It panics if name is empty, h is nil or
// the command is already registered (the built-in ones included).
func (s *Server) Handle(name string, h Handler) {
	if name == "" || h == nil {
		panic("qmpserver: Handle needs a command name and a handler")
	}
	s.commandsMu.Lock()
	defer s.commandsMu.Unlock()
	if _, dup := s.commands[name]; dup {
		panic(fmt.Sprintf("qmpserver: command %s registered twice", name))
	}
	s.commands[name] = h
}

// handler returns the handler of a registered command other than
// qmp_capabilities.
func (s *Server) handler(name string) (Handler, bool) {
	s.commandsMu.RLock()
	defer s.commandsMu.RUnlock()
	h := s.commands[name]
	return h, h != nil
}

// queryCommands is query-commands: the names of all commands, sorted.
func (s *Server) queryCommands(context.Context, json.RawMessage) (any, error) {
	type commandInfo struct {
		Name string `json:"name"`
	}
	s.commandsMu.RLock()
	names := make([]string, 0, len(s.commands))
	for name := range s.commands {
		names = append(names, name)
	}
	s.commandsMu.RUnlock()
	slices.Sort(names)
	infos := make([]commandInfo, len(names))
	for i, name := range names {
		infos[i] = commandInfo{Name: name}
	}
	return infos, nil
}

// queryVersion is query-version.
func (s *Server) queryVersion(_ context.Context, args json.RawMessage) (any, error) {
	if _, err := Args[struct{}](args); err != nil {
		return nil, err
	}
	return s.version, nil
}

// Serve accepts clients on l and serves each on its own goroutine until ctx is
// cancelled or l is closed. Then it closes l (which removes a socket made by
// Listen), disconnects its clients, waits for their goroutines, and returns nil.
// It returns an error only if accepting fails for good.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	var clients sync.WaitGroup
	defer func() {
		cancel()
		l.Close()
		clients.Wait()
	}()
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()

	s.log.Info("serving qmp", "addr", l.Addr().String())
	var delay time.Duration
	var lastRefused time.Time
	for {
		conn, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				s.log.Info("qmp server stopped", "addr", l.Addr().String())
				return nil
			}
			if !retryable(err) {
				return fmt.Errorf("accept qmp client: %w", err)
			}
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.log.Warn("accept qmp client failed, retrying", "err", err, "delay", delay)
			select {
			case <-time.After(delay):
			case <-ctx.Done():
			}
			continue
		}
		delay = 0
		if s.active.Load() >= MaxClients {
			if time.Since(lastRefused) > time.Second {
				s.log.Warn("qmp client refused: too many clients", "max", MaxClients)
				lastRefused = time.Now()
			}
			clients.Go(func() {
				conn.SetWriteDeadline(time.Now().Add(time.Second))
				conn.Write(tooMany)
				conn.Close()
			})
			continue
		}
		s.active.Add(1)
		clients.Go(func() {
			defer s.active.Add(-1)
			s.serveClient(ctx, conn)
		})
	}
}

// retryable reports whether an Accept error may go away by itself, like
// running out of file descriptors.
func retryable(err error) bool {
	for _, errno := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED} {
		if errors.Is(err, errno) {
			return true
		}
	}
	return false
}

// Emit sends the event to every client that has completed capabilities
// negotiation, stamped with the current time. data, if not nil, must marshal
// to a JSON object (QMP's "data" member). Emit never waits for a client: a
// client whose queue is full loses the event, and the loss is logged.
func (s *Server) Emit(event string, data any) {
	now := time.Now()
	msg := struct { // members in QEMU's order
		Timestamp struct {
			Seconds      int64 `json:"seconds"`
			Microseconds int64 `json:"microseconds"`
		} `json:"timestamp"`
		Event string          `json:"event"`
		Data  json.RawMessage `json:"data,omitempty"`
	}{Event: event}
	msg.Timestamp.Seconds = now.Unix()
	msg.Timestamp.Microseconds = int64(now.Nanosecond() / 1000)
	if data != nil {
		raw, err := marshal(data)
		if err != nil {
			s.log.Error("qmp event not sent: cannot encode its data", "event", event, "err", err)
			return
		}
		switch {
		case string(raw) == "null":
		case raw[0] != '{':
			s.log.Error("qmp event not sent: its data is not a JSON object", "event", event)
			return
		default:
			msg.Data = raw
		}
	}
	line := encodeLine(msg)

	s.clientsMu.Lock()
	defer s.clientsMu.Unlock()
	for c := range s.clients {
		c.sendEvent(event, line)
	}
}

// call runs a handler, turning a panic into an error reply: one broken command
// must not take the monitor and its virtual machine down.
func (s *Server) call(ctx context.Context, name string, h Handler, args json.RawMessage) (result any, err error) {
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("qmp command panicked", "command", name, "panic", p, "stack", string(debug.Stack()))
			result, err = nil, GenericError("internal error in command %s", name)
		}
	}()
	return h(ctx, args)
}

func (s *Server) addClient(c *client) {
	s.clientsMu.Lock()
	defer s.clientsMu.Unlock()
	s.clients[c] = struct{}{}
}

// removeClient forgets c; once it returns, Emit no longer sends to c.
func (s *Server) removeClient(c *client) {
	s.clientsMu.Lock()
	defer s.clientsMu.Unlock()
	delete(s.clients, c)
}
