package qmpserver

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync/atomic"
	"time"
)

// A client is one connection. Its reading goroutine parses and runs the
// client's commands one after the other; its writing goroutine sends the
// greeting, replies and events, in the order they were queued on out.
type client struct {
	srv  *Server
	conn net.Conn
	log  *slog.Logger
	out  chan outgoing

	negotiated bool // qmp_capabilities succeeded; owned by the reading goroutine

	// Guarded by the server's clientsMu, under which Emit calls sendEvent.
	eventsOn bool // events are queued for the client
	dropping bool // the last event was dropped
	dropped  atomic.Uint64
}

// outgoing is one line for the client.
type outgoing struct {
	line []byte
	// startEvents marks a reply to qmp_capabilities that the writer must turn
	// events on for; see startEvents.
	startEvents bool
}

type clientIDKey struct{}

// ClientID identifies the connection a Handler's command came on: a
// command whose effect belongs to its client (a dirty log it started) keys
// it by this, and may end it with the connection, when ctx is cancelled.
// ok is false for a ctx that is not a command's.
func ClientID(ctx context.Context) (id uint64, ok bool) {
	id, ok = ctx.Value(clientIDKey{}).(uint64)
	return id, ok
}

// serveClient runs one connection until the client hangs up, sends too much,
// its connection fails, or ctx is cancelled.
func (s *Server) serveClient(ctx context.Context, conn net.Conn) {
	id := s.clientSeq.Add(1)
	c := &client{
		srv:  s,
		conn: conn,
		log:  s.log.With("client", id),
		out:  make(chan outgoing, clientQueue),
	}
	ctx, cancel := context.WithCancel(context.WithValue(ctx, clientIDKey{}, id))
	defer cancel()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	c.log.Info("qmp client connected")
	s.addClient(c)
	written := make(chan struct{})
	go func() {
		defer close(written)
		c.write(cancel)
	}()

	c.out <- outgoing{line: s.greeting}
	err := c.read(ctx)
	s.removeClient(c)
	close(c.out)
	<-written // replies to commands read before a hang-up still go out
	conn.Close()

	attrs := []any{"events_dropped", c.dropped.Load()}
	switch {
	case err == nil:
	case ctx.Err() != nil:
		attrs = append(attrs, "reason", "connection closed")
	default:
		attrs = append(attrs, "err", err)
	}
	c.log.Info("qmp client disconnected", attrs...)
}

// write sends what is queued on out until out is closed. After a failed write
// it cancels the connection (which closes it, ending read) and discards the
// rest, so that nobody ever waits on out for long.
func (c *client) write(fail context.CancelFunc) {
	broken := false
	for msg := range c.out {
		if broken {
			continue
		}
		if msg.startEvents {
			c.srv.clientsMu.Lock()
			c.eventsOn = true
			c.srv.clientsMu.Unlock()
		}
		if _, err := c.conn.Write(msg.line); err != nil {
			c.log.Debug("qmp client write failed", "err", err)
			broken = true
			fail()
		}
	}
}

// read reads and runs commands until the client hangs up (it returns nil), the
// connection fails or the client sends a command over maxInput. Commands read
// before a hang-up are run: a client may send commands and shut its side down.
func (c *client) read(ctx context.Context) error {
	r := bufio.NewReaderSize(c.conn, 64<<10)
	var sp splitter
	value := func(v []byte) { c.execute(ctx, v) }
	parseErr := func(err error) {
		c.log.Debug("qmp input unparsable", "err", err)
		c.reply(errorLine(GenericError("%s", err.Error()), nil))
	}
	for {
		b, err := r.ReadByte()
		if errors.Is(err, io.EOF) {
			sp.flush(value)
			return nil
		}
		if err != nil {
			return err
		}
		if err := sp.feed(b, value, parseErr); err != nil {
			c.log.Warn("qmp client sent too much, disconnecting", "err", err)
			c.reply(errorLine(GenericError("%s", err.Error()), nil))
			return err
		}
	}
}

// execute runs one command the client sent and queues the reply.
func (c *client) execute(ctx context.Context, raw []byte) {
	req, qerr := parseRequest(raw)
	if qerr != nil {
		c.log.Debug("qmp input refused", "err", qerr)
		c.reply(errorLine(qerr, req.id))
		return
	}

	if !c.negotiated {
		if req.name != capabilitiesCommand {
			c.reply(errorLine(&Error{Class: ClassCommandNotFound, Desc: "Expecting capabilities negotiation with 'qmp_capabilities'"}, req.id))
			return
		}
		if err := checkCapabilities(req.args); err != nil {
			c.reply(errorLine(err, req.id))
			return
		}
		c.negotiated = true
		c.log.Debug("qmp capabilities negotiated")
		c.startEvents(returnLine(json.RawMessage("{}"), req.id))
		return
	}
	if req.name == capabilitiesCommand {
		c.reply(errorLine(&Error{Class: ClassCommandNotFound, Desc: "Capabilities negotiation is already complete, command ignored"}, req.id))
		return
	}

	h, ok := c.srv.handler(req.name)
	if !ok {
		c.log.Debug("qmp command not found", "command", req.name)
		c.reply(errorLine(CommandNotFound(req.name), req.id))
		return
	}
	start := time.Now()
	result, err := c.srv.call(ctx, req.name, h, req.args)
	if err != nil {
		qerr := replyError(err)
		c.log.Debug("qmp command failed", "command", req.name, "duration", time.Since(start), "class", qerr.Class, "err", qerr.Desc)
		c.reply(errorLine(qerr, req.id))
		return
	}
	ret, err := encodeReturn(result)
	if err != nil {
		c.log.Error("qmp command reply cannot be encoded", "command", req.name, "err", err)
		c.reply(errorLine(GenericError("internal error: the reply of %s cannot be encoded", req.name), req.id))
		return
	}
	c.log.Debug("qmp command", "command", req.name, "duration", time.Since(start))
	c.reply(returnLine(ret, req.id))
}

// checkCapabilities checks qmp_capabilities' arguments. The greeting offers
// no capability, so none can be enabled; "oob" is the only one QEMU 7.2 knows.
func checkCapabilities(args json.RawMessage) *Error {
	a, err := Args[struct {
		Enable []string `json:"enable"`
	}](args)
	if err != nil {
		return replyError(err)
	}
	if len(a.Enable) == 0 {
		return nil
	}
	if capability := a.Enable[0]; capability != "oob" {
		return GenericError("Parameter 'enable' does not accept value '%s'", capability)
	}
	return GenericError("Capability 'oob' not available")
}

// startEvents queues the reply to qmp_capabilities and turns events on, so
// that every event is queued behind the reply: the client gets the events of
// the commands it sends next, and go-qemu's Connect, which takes the line after
// its qmp_capabilities for the reply, is not confused. Both happen at once
// under the lock Emit holds. If the queue is full (the client sent many
// commands before negotiating and reads nothing) the writer turns events on
// when it takes the reply off the queue, later than it could be but in order.
func (c *client) startEvents(reply []byte) {
	c.srv.clientsMu.Lock()
	queued := false
	select {
	case c.out <- outgoing{line: reply}:
		queued = true
		c.eventsOn = true
	default:
	}
	c.srv.clientsMu.Unlock()
	if !queued {
		c.out <- outgoing{line: reply, startEvents: true}
	}
}

// reply queues a reply. It waits while the client's queue is full: a client
// that does not read its replies stops being read.
func (c *client) reply(line []byte) {
	c.out <- outgoing{line: line}
}

// sendEvent queues an event line unless the client is not receiving events yet
// or its queue is full. It never waits. It logs when it starts dropping a
// client's events and when it stops; the total is logged at disconnection.
func (c *client) sendEvent(event string, line []byte) {
	if !c.eventsOn {
		return
	}
	select {
	case c.out <- outgoing{line: line}:
		if c.dropping {
			c.dropping = false
			c.log.Info("qmp client is reading again, events no longer dropped", "events_dropped", c.dropped.Load())
		}
	default:
		n := c.dropped.Add(1)
		if !c.dropping {
			c.dropping = true
			c.log.Warn("qmp client is not reading, dropping events", "event", event, "events_dropped", n)
		}
	}
}
