package qmpclient

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/digitalocean/go-qemu/qmp"
	"github.com/pagecast/pagecast/internal/printable"
	"github.com/pagecast/pagecast/internal/proc"
	"golang.org/x/sys/unix"
)

// eventQueue is how many events wait for a reader before more are dropped.
const eventQueue = 64

// maxLine bounds one line from the monitor: a reply larger than this is an
// error, not an allocation without end.
const maxLine = 64 << 20

// Client is one QMP connection. Its Run sends one command at a time.
type Client struct {
	conn net.Conn
	r    *bufio.Reader

	mu      sync.Mutex // one command at a time
	replies chan reply
	events  chan qmp.Event
	done    chan struct{} // closed when the reader stops
	readErr error         // why it stopped; set before done closes
	quit    chan struct{} // closed by Disconnect
	once    sync.Once

	latestMu sync.Mutex
	latest   map[string]qmp.Event // the last event of each name, for Latest

	addr       string        // what Dial dialled, for errors
	answerWait time.Duration // SetAnswerWait's; 0: no bound
	lost       error         // a command not answered within answerWait: the connection is closed
}

// Dial connects to a QMP socket ("unix" and a path, or "tcp" and an
// address). Connect then does the handshake.
func Dial(network, addr string, timeout time.Duration) (*Client, error) {
	c, err := net.DialTimeout(network, addr, timeout)
	if err != nil {
		return nil, err
	}
	return &Client{conn: c, r: bufio.NewReaderSize(c, 64<<10), quit: make(chan struct{}), addr: addr}, nil
}

var _ qmp.Monitor = (*Client)(nil)

// Open connects to the QMP socket at path ("unix:" before it is taken)
// and does the handshake, both within wait. A QEMU QMP socket serves one
// client at a time, and a busy one accepts but never greets: that is said.
func Open(path string, wait time.Duration) (*Client, error) {
	path = strings.TrimPrefix(path, "unix:")
	c, err := Dial("unix", path, wait)
	if errors.Is(err, syscall.EAGAIN) {
		// Its queue is full of clients it has not taken (walk 110: a
		// third try against a held or stopped QEMU said only "resource
		// temporarily unavailable").
		return nil, fmt.Errorf("QMP socket %s takes no more connections, its queue full: %s", path, busyWhy(path))
	}
	if err != nil {
		return nil, fmt.Errorf("connect to QMP socket %s: %w", path, err)
	}
	if err := c.Handshake(wait); err != nil {
		c.Disconnect()
		if errors.As(err, new(noGreeting)) {
			return nil, fmt.Errorf("QMP socket %s sent no greeting in %v: %s", path, wait, busyWhy(path))
		}
		return nil, fmt.Errorf("QMP socket %s %w", path, err)
	}
	return c, nil
}

// noGreeting is a socket that accepted and said nothing within wait.
type noGreeting struct{ wait time.Duration }

func (e noGreeting) Error() string {
	return fmt.Sprintf("sent no greeting in %v (QEMU serves one client per QMP socket: is another client connected?)", e.wait)
}

// busyWhy says why a QMP socket at path does not greet: who holds it,
// where that can be found.
func busyWhy(path string) string {
	const serves = "QEMU serves one client per QMP socket"
	holding, waiting, err := Holders(path)
	if err != nil || len(holding) == 0 {
		if l, ok := Listener(path); ok && proc.Stopped(l.PID) {
			// Not a client's (walk 108: a QEMU stopped before it
			// greeted was said to be busy).
			// Its program, not its command line: QEMU's ran to 700
			// characters (walk 110).
			prog, _, _ := strings.Cut(l.Command, " ")
			return fmt.Sprintf("pid %d (%s) listens there, stopped (SIGSTOP: SIGCONT resumes it)", l.PID, filepath.Base(prog))
		}
		return serves + ": is another client connected?"
	}
	why := fmt.Sprintf("%s, and %s holds it", serves, joinPeers(holding))
	if len(waiting) > 0 {
		why += fmt.Sprintf("; %s waits for it too", joinPeers(waiting))
	}
	return why + ": stop it, or wait until it has finished"
}

func joinPeers(ps []Peer) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ", ")
}

// Handshake is Connect within wait: a socket that accepts and never
// greets (a busy QMP socket, a QEMU stuck before its main loop) is an
// error, not a wait for ever.
func (c *Client) Handshake(wait time.Duration) error {
	c.conn.SetDeadline(time.Now().Add(wait))
	if err := c.Connect(); err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) && strings.HasPrefix(err.Error(), "qmp greeting") {
			return noGreeting{wait}
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return fmt.Errorf("greeted, then did not answer qmp_capabilities in %v", wait)
		}
		return fmt.Errorf("handshake: %w", err)
	}
	c.conn.SetDeadline(time.Time{})
	return nil
}

// reply is a line that is not an event, with the QMP error it holds.
type reply struct {
	line []byte
	err  error
}

// message is any line from the monitor: a greeting, a reply or an event.
type message struct {
	QMP   json.RawMessage `json:"QMP"`
	Event string          `json:"event"`
	Error *struct {
		Class string `json:"class"`
		Desc  string `json:"desc"`
	} `json:"error"`
}

func (m message) err() error {
	if m.Error == nil {
		return nil
	}
	// QEMU's text, printed wherever the error goes: a monitor that is
	// not QEMU's cannot put control characters on the user's terminal
	// (walk 107: one cleared the screen and set its title).
	if m.Error.Desc == "" {
		return errors.New(printable.Line(m.Error.Class))
	}
	return errors.New(printable.Line(m.Error.Desc))
}

// readLine reads one line into a slice of its own. A line longer than the
// reader's buffer is kept in pieces, made whole once it has ended within
// maxLine: grown by append, a line that never ended took 366 MiB of
// allocations before it was refused at 64 MiB (walk 107 measured migrate
// at 277-303 MB).
func (c *Client) readLine() ([]byte, message, error) {
	var pieces [][]byte
	total := 0
	for {
		chunk, err := c.r.ReadSlice('\n')
		total += len(chunk)
		if total > maxLine {
			return nil, message{}, fmt.Errorf("qmp: a line over %d bytes", maxLine)
		}
		if err == bufio.ErrBufferFull {
			pieces = append(pieces, bytes.Clone(chunk))
			continue
		}
		if err != nil {
			return nil, message{}, err
		}
		pieces = append(pieces, chunk) // the reader's own, copied below
		break
	}
	line := make([]byte, 0, total)
	for _, p := range pieces {
		line = append(line, p...)
	}
	var m message
	if err := json.Unmarshal(line, &m); err != nil {
		return nil, message{}, fmt.Errorf("qmp: not a QMP message: %q: %w", truncate(line), err)
	}
	return line, m, nil
}

func truncate(b []byte) []byte {
	if len(b) > 200 {
		return b[:200]
	}
	return b
}

// Connect reads the greeting and negotiates capabilities, then starts
// reading replies and events.
func (c *Client) Connect() error {
	for {
		line, m, err := c.readLine()
		if err != nil {
			return fmt.Errorf("qmp greeting: %w", err)
		}
		if m.Event != "" {
			// QEMU can send an event before its greeting (as
			// kata-containers/govmm#90 found): not the greeting.
			continue
		}
		if m.QMP == nil {
			return fmt.Errorf("qmp greeting: the first line is not a QMP greeting: %q", truncate(line))
		}
		break
	}
	if _, err := c.conn.Write([]byte(`{"execute":"qmp_capabilities"}` + "\n")); err != nil {
		return err
	}
	for {
		_, m, err := c.readLine()
		if err != nil {
			return fmt.Errorf("qmp_capabilities: %w", err)
		}
		if m.Event != "" {
			continue // sent before the reply: not the reply
		}
		if err := m.err(); err != nil {
			return err
		}
		break
	}
	c.replies = make(chan reply)
	c.events = make(chan qmp.Event, eventQueue)
	c.done = make(chan struct{})
	go c.read()
	return nil
}

func (c *Client) read() {
	defer close(c.done)
	defer close(c.events)
	for {
		line, m, err := c.readLine()
		if err != nil {
			c.readErr = err
			return
		}
		if m.Event == "" {
			select {
			case c.replies <- reply{line, m.err()}:
			case <-c.quit:
				c.readErr = net.ErrClosed
				return
			}
			continue
		}
		var e qmp.Event
		if json.Unmarshal(line, &e) == nil {
			c.keepLatest(e)
			select {
			case c.events <- e:
			default: // nobody reads them: dropped
			}
		}
	}
}

// keepLatest keeps e as the last event of its name. Events are few (QEMU
// sends one a state change) and their names fewer: the map stays small.
func (c *Client) keepLatest(e qmp.Event) {
	c.latestMu.Lock()
	defer c.latestMu.Unlock()
	if c.latest == nil {
		c.latest = make(map[string]qmp.Event)
	}
	if len(c.latest) < maxEventNames || c.latest[e.Event].Event != "" {
		c.latest[e.Event] = e
	}
}

// maxEventNames bounds the names Latest keeps: a monitor that sent events
// of ever new names (not QEMU) cannot grow the map without end.
const maxEventNames = 256

// Latest is the last event named event received so far, whether or not
// Events' reader took it or it was dropped. The reader takes an event
// before the reply that follows it, so once Run returns, the events QEMU
// sent while running the command are here: stop's STOP, stamped when the
// vCPUs had stopped.
func (c *Client) Latest(event string) (qmp.Event, bool) {
	c.latestMu.Lock()
	defer c.latestMu.Unlock()
	e, ok := c.latest[event]
	return e, ok
}

// SetAnswerWait bounds how long Run waits for each reply from now on (0:
// no bound). A command not answered within it fails with ErrNoAnswer and
// closes the connection, so that its late reply cannot be taken for
// another command's; every Run after fails so too. For a client's
// questions before work that may hold QEMU's main loop (QEMU's own
// stop-and-copy does, for its whole downtime): a QEMU stopped with SIGSTOP
// or stuck held pagecast migrate silent for good (walk 107).
func (c *Client) SetAnswerWait(wait time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.answerWait = wait
}

// Lost is the error of the command the monitor did not answer within the
// answer wait, after which the connection is closed; nil while it answers.
// Callers that take a failed question for "not known" ask it after.
func (c *Client) Lost() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lost
}

// ErrNoAnswer is a command the monitor did not answer within the client's
// answer wait (errors.Is).
var ErrNoAnswer = errors.New("the monitor did not answer")

// Run sends one command (a JSON object) and returns its reply, a slice
// the caller owns. A QMP error reply comes back as an error holding its
// desc, as go-qemu's SocketMonitor gives it.
func (c *Client) Run(command []byte) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done == nil {
		return nil, errors.New("qmp: not connected")
	}
	if c.lost != nil {
		// Said so, under whatever the caller names this command
		// (walk 108: "query-memory-size-summary: … did not answer
		// query-cpus-fast").
		return nil, fmt.Errorf("not sent, the connection being closed: %w", c.lost)
	}
	if _, err := c.conn.Write(command); err != nil {
		return nil, err
	}
	var late <-chan time.Time
	if c.answerWait > 0 {
		t := time.NewTimer(c.answerWait)
		defer t.Stop()
		late = t.C
	}
	select {
	case r := <-c.replies:
		if r.err != nil {
			return nil, r.err
		}
		return r.line, nil
	case <-c.done:
		return nil, fmt.Errorf("qmp: connection lost: %w", c.readErr)
	case <-late:
		why := "is its QEMU stopped (SIGSTOP) or stuck?"
		if pid := c.PeerPID(); pid != 0 && proc.Stopped(pid) {
			why = fmt.Sprintf("its QEMU, pid %d, is stopped (SIGSTOP: SIGCONT resumes it)", pid)
		}
		c.conn.Close()
		c.lost = fmt.Errorf("QMP socket %s: %w %s in %v: %s (the connection is closed)",
			c.addr, ErrNoAnswer, commandName(command), c.answerWait, why)
		return nil, c.lost
	}
}

// commandName is the "execute" of a QMP command, or "a command".
func commandName(command []byte) string {
	var m struct {
		Execute string `json:"execute"`
	}
	if json.Unmarshal(command, &m) != nil || m.Execute == "" {
		return "a command"
	}
	return printable.Line(m.Execute)
}

// Events returns the events received since Connect, and on; it is closed
// when the connection ends. Events are dropped while 64 wait unread.
func (c *Client) Events(context.Context) (<-chan qmp.Event, error) {
	if c.events == nil {
		return nil, errors.New("qmp: not connected")
	}
	return c.events, nil
}

// Disconnect closes the connection and waits for the reader to stop.
func (c *Client) Disconnect() error {
	err := c.conn.Close()
	c.once.Do(func() { close(c.quit) })
	if c.done != nil {
		<-c.done
	}
	return err
}

// PeerPID is the process at the other end of a unix socket's connection,
// as the kernel tells it (SO_PEERCRED): the QEMU itself where the socket
// is its own, a proxy where the socket is forwarded. 0 for a TCP
// connection, or where it cannot be told.
func (c *Client) PeerPID() int {
	uc, ok := c.conn.(*net.UnixConn)
	if !ok {
		return 0
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return 0
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil || credErr != nil || cred == nil {
		return 0
	}
	return int(cred.Pid)
}
