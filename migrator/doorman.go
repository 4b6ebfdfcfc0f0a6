package migrator

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"
)

// Doorman is a destination's listener that takes one migration at a time.
// It reads every connection's handshake as it comes, all at once (a
// source is not held behind a peer that says nothing), and hands on, in
// the order their handshakes arrive, those that bring one; a connection
// that brings none (a port probe, another protocol, a failed TLS
// handshake, a silent peer after 5 s) is handed on too while the
// destination is idle, failing at its first read as it did, so that the
// receiver says why. Once a migration is accepted (Busy), a connection
// that brings a fresh migration's handshake is refused at once, saying
// the destination is busy, where before it waited unanswered until the
// source gave up (10 s); one that brings the handshake of the running
// migration's source coming back (a post-copy resume, a repeated commit)
// is handed on, for ReceiveConfig.Reconnect, its handshake still to be
// read, if taken within 5 s (the source tries again). At most 256
// connections are screened or held at once (a flood of silent or false
// ones can fill them: plain TCP is for trusted networks); more are closed
// unanswered.
type Doorman struct {
	l     net.Listener
	log   *slog.Logger
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
	slots chan struct{} // connections being screened or held at once

	mu      sync.Mutex
	busy    string        // what the destination is busy with; "" while idle
	since   time.Time     // since when
	changed chan struct{} // closed, and made anew, when busy changes
}

// doormanHello bounds the wait for a connection's handshake, and
// doormanSlots how many connections are screened or held at once: more
// are closed unanswered, so that a flood of them costs a bounded number of
// sockets.
const (
	doormanHello = helloWait
	doormanSlots = 256
)

// NewDoorman starts taking l's connections; Close closes l. log hears of
// the connections it turns away itself (while busy).
func NewDoorman(l net.Listener, log *slog.Logger) *Doorman {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	d := &Doorman{l: l, log: log, conns: make(chan net.Conn), done: make(chan struct{}), changed: make(chan struct{}),
		slots: make(chan struct{}, doormanSlots)}
	go d.run()
	return d
}

func (d *Doorman) run() {
	for {
		c, err := d.l.Accept()
		if err != nil {
			d.Close()
			return
		}
		select {
		case d.slots <- struct{}{}:
			go func() {
				defer func() { <-d.slots }()
				d.screen(c)
			}()
		default:
			d.log.Warn("turned a connection away unanswered: more than 256 are being screened at once", "from", c.RemoteAddr().String())
			c.Close()
		}
	}
}

// What a screened connection brought.
type arrival int

const (
	fresh     arrival = iota // a new migration's handshake
	returning                // the running migration's source coming back
	failed                   // no handshake
)

// screen reads the handshake of c and hands c on as deliver says.
func (d *Doorman) screen(c net.Conn) {
	var raw bytes.Buffer
	cr := &firstErr{r: c}
	c.SetReadDeadline(time.Now().Add(doormanHello))
	rec, err := NewReader(io.TeeReader(cr, &raw)).Next()
	c.SetReadDeadline(time.Time{})
	rest := io.Reader(c)
	if cr.err != nil {
		rest = errReader{cr.err} // read again, it fails as it did
	}
	replay := &replayConn{Conn: c, r: io.MultiReader(&raw, rest)}
	switch {
	case err != nil && errors.Is(err, io.EOF) && raw.Len() == 0:
		d.deliver(replay, failed, nil) // a port probe
	case err != nil:
		d.deliver(replay, failed, err)
	case rec.Type != RecHello:
		d.deliver(replay, failed, fmt.Errorf("the stream starts with a %s record, not a handshake", rec.Type))
	case rec.Hello.Mode == resumeMode || strings.HasPrefix(rec.Hello.Mode, commitMode+":"):
		d.deliver(replay, returning, nil)
	default:
		d.deliver(replay, fresh, nil)
	}
}

// deliver hands c on to Accept. Once the destination is busy (at once, or
// while c waits to be taken) a fresh source is refused and a connection
// that failed (why; nil for a port probe) dropped; a returning source is handed on busy or not,
// but let go if no one takes it in doormanHello (a false one would hold
// its slot), as is a failed one.
func (d *Doorman) deliver(c net.Conn, what arrival, why error) {
	var expire <-chan time.Time
	if what != fresh {
		expire = time.After(doormanHello)
	}
	for {
		d.mu.Lock()
		busy, since, changed := d.busy, d.since, d.changed
		d.mu.Unlock()
		if busy != "" && what == fresh {
			d.refuse(c, busy, since)
			return
		}
		if busy != "" && what == failed {
			if why != nil {
				d.log.Warn("refused a connection that brought no handshake while busy with a migration", "from", c.RemoteAddr().String(), "err", why)
			}
			c.Close()
			return
		}
		select {
		case d.conns <- c:
			return
		case <-changed:
		case <-expire:
			c.Close()
			return
		case <-d.done:
			if what == failed && why != nil {
				d.log.Warn("refused a connection that brought no handshake", "from", c.RemoteAddr().String(), "err", why)
			}
			c.Close()
			return
		}
	}
}

// refuse tells a fresh source that the destination is busy, and with what.
func (d *Doorman) refuse(c net.Conn, busy string, since time.Time) {
	d.log.Warn("refused a source: busy with another migration", "from", c.RemoteAddr().String())
	w := NewWriter(c)
	if w.Text(RecRefuse, fmt.Sprintf("this destination is busy with %s, for %v now: it takes one migration at a time; try again once that one has ended",
		busy, time.Since(since).Round(time.Second))) == nil {
		w.Flush()
	}
	c.Close()
}

// Busy marks the destination busy with what (an incoming migration from
// an address), until Idle.
func (d *Doorman) Busy(what string) { d.set(what) }

// Idle marks the destination free for the next migration.
func (d *Doorman) Idle() { d.set("") }

func (d *Doorman) set(what string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.busy, d.since = what, time.Now()
	close(d.changed)
	d.changed = make(chan struct{})
}

// Accept returns the next connection handed on.
func (d *Doorman) Accept() (net.Conn, error) {
	select {
	case c := <-d.conns:
		return c, nil
	case <-d.done:
		return nil, net.ErrClosed
	}
}

// Close stops taking connections and closes the listener.
func (d *Doorman) Close() error {
	var err error
	d.once.Do(func() {
		close(d.done)
		err = d.l.Close()
	})
	return err
}

// Addr is the listener's address.
func (d *Doorman) Addr() net.Addr { return d.l.Addr() }

// replayConn is a connection whose first bytes, read already, are read
// again (and, where reading them failed, the failure).
type replayConn struct {
	net.Conn
	r io.Reader
}

func (c *replayConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// tlsConn is the TLS connection under c, if there is one.
func tlsConn(c net.Conn) (*tls.Conn, bool) {
	if rc, ok := c.(*replayConn); ok {
		c = rc.Conn
	}
	tc, ok := c.(*tls.Conn)
	return tc, ok
}

// firstErr reads r, keeping the first error it returns.
type firstErr struct {
	r   io.Reader
	err error
}

func (f *firstErr) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if err != nil && f.err == nil {
		f.err = err
	}
	return n, err
}

// errReader fails every read with err.
type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }
