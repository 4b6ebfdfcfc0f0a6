package migrator

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"
)

// Doorman is a destination's listener that takes one migration at a time.
// While none is under way it hands every connection on, in order (a
// source queued behind a peer still shaking hands waits its turn). Once a
// migration is accepted (Busy), a connection that brings a fresh
// migration's handshake is refused at once, saying the destination is
// busy, where before it waited unanswered until the source gave up (10
// s); one that brings the handshake of the running migration's source
// coming back (a post-copy resume, a repeated commit) is handed on, for
// ReceiveConfig.Reconnect, its handshake still to be read, if taken
// within 5 s (the source tries again). At most 256 connections are
// screened or held at once (a flood of silent or false ones can fill
// them: plain TCP is for trusted networks).
type Doorman struct {
	l     net.Listener
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
	slots chan struct{} // connections being screened or held at once

	mu      sync.Mutex
	busy    string        // what the destination is busy with; "" while idle
	since   time.Time     // since when
	changed chan struct{} // closed, and made anew, when busy changes
}

// doormanHello bounds the wait for the handshake of a connection that
// comes while the destination is busy, and doormanSlots how many such
// connections are screened or held at once: more are closed unanswered,
// so that a flood of them costs a bounded number of sockets.
const (
	doormanHello = 5 * time.Second
	doormanSlots = 256
)

// NewDoorman starts taking l's connections; Close closes l.
func NewDoorman(l net.Listener) *Doorman {
	d := &Doorman{l: l, conns: make(chan net.Conn), done: make(chan struct{}), changed: make(chan struct{}),
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
		d.deliver(c, false)
	}
}

// deliver hands c on, or, once the destination is busy (at once, or while
// c waits to be taken), screens it; reconnecting says c is the running
// migration's source coming back, which is handed on busy or not.
func (d *Doorman) deliver(c net.Conn, reconnecting bool) {
	var expire <-chan time.Time // a source coming back that no one takes in doormanHello is let go (a fake one would hold its slot)
	if reconnecting {
		expire = time.After(doormanHello)
	}
	for {
		d.mu.Lock()
		busy, changed := d.busy != "", d.changed
		d.mu.Unlock()
		if busy && !reconnecting {
			select {
			case d.slots <- struct{}{}:
				go func() {
					defer func() { <-d.slots }()
					d.screen(c)
				}()
			default:
				c.Close()
			}
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
			c.Close()
			return
		}
	}
}

// screen reads the handshake of c, come while the destination is busy: a
// source coming back is handed on, any other source refused.
func (d *Doorman) screen(c net.Conn) {
	var raw bytes.Buffer
	c.SetReadDeadline(time.Now().Add(doormanHello))
	rec, err := NewReader(io.TeeReader(c, &raw)).Next()
	c.SetReadDeadline(time.Time{})
	if err != nil || rec.Type != RecHello {
		c.Close() // a port probe, or not pagecast: nothing to tell
		return
	}
	if m := rec.Hello.Mode; m == resumeMode || strings.HasPrefix(m, commitMode+":") {
		d.deliver(&replayConn{Conn: c, r: io.MultiReader(&raw, c)}, true)
		return
	}
	d.mu.Lock()
	busy, since := d.busy, d.since
	d.mu.Unlock()
	if busy == "" { // the migration ended while this one shook hands
		d.deliver(&replayConn{Conn: c, r: io.MultiReader(&raw, c)}, false)
		return
	}
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
// again.
type replayConn struct {
	net.Conn
	r io.Reader
}

func (c *replayConn) Read(p []byte) (int, error) { return c.r.Read(p) }
