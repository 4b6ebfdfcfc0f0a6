package migrator

import (
	"bytes"
	"container/list"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Doorman is a destination's listener that takes one migration at a time.
// It reads every connection's handshake as it comes, all at once (a
// source is not held behind a peer that says nothing), and hands on, in
// the order their handshakes arrive, those that bring one; a port probe
// (a peer that hangs up without a word) is closed; a connection that
// brings no handshake (another protocol, a failed TLS handshake, a silent
// peer after 5 s) is handed on too while the destination is idle, failing
// at its first read as it did, so that the receiver says why. Once a migration is accepted (Busy), a connection
// that brings a fresh migration's handshake is refused at once, saying
// the destination is busy, where before it waited unanswered until the
// source gave up (10 s); one that brings the handshake of the running
// migration's source coming back (a post-copy resume, a repeated commit)
// is handed on, for ReceiveConfig.Reconnect, its handshake still to be
// read, if taken within 5 s (the source tries again). At most 256
// connections are screened or held at once; when a new one finds them
// all taken, the one screened longest without its handshake yet is closed
// to make room (a source sends its handshake within milliseconds of
// connecting, so a flood holds it out only by bringing 256 connections
// within them), and where none is being screened the new one is closed
// unanswered.
type Doorman struct {
	l       net.Listener
	log     *slog.Logger
	refused *refusals // log's lines on refused connections, a burst at a time
	conns   chan net.Conn
	done    chan struct{}
	once    sync.Once
	slots   chan struct{} // connections being screened or held at once

	turnedAway int       // connections closed since lastTurned for want of a slot (run's alone)
	evicted    int       // connections screened longest closed to make room since then
	lastTurned time.Time // when those were last logged

	smu       sync.Mutex
	screening list.List // of *screened, oldest first

	failedWaiting atomic.Int32 // connections without a handshake waiting to be taken

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

// acceptPasses says whether Accept's err passes with time: the process or
// the system out of descriptors or memory, or a connection reset before
// it was taken.
func acceptPasses(err error) bool {
	for _, e := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// NewDoorman starts taking l's connections; Close closes l. log hears of
// the connections it turns away itself (while busy).
func NewDoorman(l net.Listener, log *slog.Logger) *Doorman {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	d := &Doorman{l: l, log: log, refused: &refusals{log: log}, conns: make(chan net.Conn), done: make(chan struct{}), changed: make(chan struct{}),
		slots: make(chan struct{}, doormanSlots)}
	go d.run()
	return d
}

func (d *Doorman) run() {
	var backoff time.Duration
	for {
		c, err := d.l.Accept()
		if err != nil {
			if !acceptPasses(err) {
				d.Close()
				return
			}
			// Out of descriptors (a flood, say) or the like: it passes
			// once some close, so wait and take connections again, as
			// net/http's server does, rather than stop for good.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			d.log.Warn("accepting a migration connection failed; trying again", "err", err, "in", backoff)
			select {
			case <-time.After(backoff):
				continue
			case <-d.done:
				return
			}
		}
		backoff = 0
		select {
		case d.slots <- struct{}{}:
		default:
			if !d.evictOldest(screenedLeast) {
				// The screens may be starved of CPU, not silent: wait for
				// one to end a moment, the kernel holding the rest, where
				// evicting the newest screened took a source's hello
				// unread under a flood of junk (walk 68).
				select {
				case d.slots <- struct{}{}:
				case <-time.After(slotWait):
					c.Close()
					d.turnedAway++
					d.logFlood(c)
					continue
				case <-d.done:
					c.Close()
					return
				}
				break
			}
			d.evicted++
			d.logFlood(c)
			d.slots <- struct{}{} // the evicted one's screen gives its slot back at once
		}
		s := d.track(c)
		go func() {
			defer func() { <-d.slots }()
			d.screen(s)
		}()
	}
}

// logFlood says what a flood cost, once a second at most (a flood of
// probes logged each made 21 744 lines in 3 s).
func (d *Doorman) logFlood(c net.Conn) {
	if time.Since(d.lastTurned) < time.Second {
		return
	}
	d.log.Warn("more than 256 connections at once: closed those screened longest without a handshake to make room, and turned away the rest unanswered (a flood: a migration port is for trusted networks)",
		"closed-oldest", d.evicted, "turned-away", d.turnedAway, "last-from", c.RemoteAddr().String())
	d.evicted, d.turnedAway, d.lastTurned = 0, 0, time.Now()
}

// screened is a connection whose handshake is being read.
type screened struct {
	c       net.Conn
	since   time.Time     // screened since
	e       *list.Element // in Doorman.screening; nil once done or evicted
	evicted bool
}

// track lists c as being screened, newest last.
func (d *Doorman) track(c net.Conn) *screened {
	s := &screened{c: c, since: time.Now()}
	d.smu.Lock()
	s.e = d.screening.PushBack(s)
	d.smu.Unlock()
	return s
}

// untrack ends s's screening; false where it was evicted meanwhile.
func (d *Doorman) untrack(s *screened) bool {
	d.smu.Lock()
	defer d.smu.Unlock()
	if s.evicted {
		return false
	}
	d.screening.Remove(s.e)
	s.e = nil
	return true
}

// evictOldest closes the connection screened longest, if it has been
// screened at least least: its screen then fails its read and gives its
// slot back.
func (d *Doorman) evictOldest(least time.Duration) bool {
	d.smu.Lock()
	defer d.smu.Unlock()
	e := d.screening.Front()
	if e == nil || time.Since(e.Value.(*screened).since) < least {
		return false
	}
	s := d.screening.Remove(e).(*screened)
	s.e, s.evicted = nil, true
	s.c.Close()
	return true
}

// What a screened connection brought.
type arrival int

const (
	fresh     arrival = iota // a new migration's handshake
	returning                // the running migration's source coming back
	failed                   // no handshake
)

// screen reads the handshake of c and hands c on as deliver says. It
// reads a record's header first, and its payload only where the header is
// a handshake's of at most screenedHello bytes, so that a screened
// connection holds a few KiB, not a megabyte record (256 peers that each
// sent most of one held 920 MB); a peer that hangs up without a word (a
// port probe) is closed at once, not handed on holding its slot, and one
// evicted to make room is dropped.
func (d *Doorman) screen(s *screened) {
	c := s.c
	var raw bytes.Buffer
	cr := &firstErr{r: c}
	tee := io.TeeReader(cr, &raw)
	c.SetReadDeadline(time.Now().Add(doormanHello))
	var hdr [wireHeaderSize]byte
	_, err := io.ReadFull(tee, hdr[:])
	size := binary.LittleEndian.Uint32(hdr[4:])
	hello := RecordType(hdr[0]) == RecHello && size <= screenedHello
	if err == nil && hello {
		_, err = io.CopyN(io.Discard, tee, int64(size))
	}
	if !d.untrack(s) {
		return // closed to make room
	}
	c.SetReadDeadline(time.Time{})
	rest := io.Reader(c)
	if cr.err != nil {
		rest = errReader{cr.err} // read again, it fails as it did
	}
	switch {
	case err != nil && raw.Len() == 0 && errors.Is(err, io.EOF):
		c.Close() // a port probe
		return
	case err != nil:
		d.deliver(&replayConn{Conn: c, r: io.MultiReader(&raw, rest)}, failed, err)
		return
	case !hello:
		// The receiver reads the header, says what is wrong with it
		// where it can (QEMU's stream, a size past any record's), and
		// else fails at the payload.
		why := fmt.Errorf("the stream starts with a %s record of %d bytes, not a handshake: %w", RecordType(hdr[0]), size, ErrMalformed)
		if RecordType(hdr[0]) == RecHello {
			why = fmt.Errorf("a handshake of %d bytes, more than any of %d: %w", size, screenedHello, ErrMalformed)
		}
		d.deliver(&replayConn{Conn: c, r: io.MultiReader(&raw, errReader{why})}, failed, why)
		return
	}
	replay := &replayConn{Conn: c, r: io.MultiReader(bytes.NewReader(raw.Bytes()), rest)}
	rec, err := NewReader(&raw).Next()
	switch {
	case err != nil:
		d.deliver(replay, failed, err)
	case rec.Hello.Mode == resumeMode || strings.HasPrefix(rec.Hello.Mode, commitMode+":"):
		d.deliver(replay, returning, nil)
	default:
		d.deliver(replay, fresh, nil)
	}
}

// screenedLeast is how long a connection is screened before it may be
// closed to make room: a source's hello comes within milliseconds, but its
// screen may wait that long for a CPU under a flood. slotWait is how long
// a connection accepted with every slot taken waits for one.
const (
	screenedLeast = 100 * time.Millisecond
	slotWait      = 20 * time.Millisecond
)

// maxFailedWaiting is how many connections that brought no handshake wait
// to be taken at once; more are refused by the Doorman itself.
const maxFailedWaiting = 8

// screenedHello is the largest handshake payload screen reads: a hello of
// this version is at most wireHelloFixed+wireMaxMode bytes; another
// version's may be larger, and the receiver then says which.
const screenedHello = 4 << 10

// deliver hands c on to Accept. Once the destination is busy (at once, or
// while c waits to be taken) a fresh source is refused and a connection
// that failed (why) logged and dropped; a returning source is handed on
// busy or not, but let go if no one takes it in doormanHello (a false one
// would hold its slot), as is a failed one.
func (d *Doorman) deliver(c net.Conn, what arrival, why error) {
	if what == failed {
		// A few are handed on for the receiver to say why; more are a
		// flood, whose peers held every slot while they waited to be
		// taken, one at a time, and turned a source away (walk 68).
		if d.failedWaiting.Add(1) > maxFailedWaiting {
			d.failedWaiting.Add(-1)
			d.refused.warn("refused a connection that brought no handshake", "from", c.RemoteAddr().String(), "err", why)
			c.Close()
			return
		}
		defer d.failedWaiting.Add(-1)
	}
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
			d.refused.warn("refused a connection that brought no handshake while busy with a migration", "from", c.RemoteAddr().String(), "err", why)
			c.Close()
			return
		}
		select {
		case d.conns <- c:
			return
		case <-changed:
		case <-expire:
			if what == returning {
				d.log.Warn("closed a connection that came as the running migration's source coming back (a post-copy resume or a repeated commit): nothing took it in 5 s",
					"from", c.RemoteAddr().String())
			}
			c.Close()
			return
		case <-d.done:
			if what == failed {
				d.refused.warn("refused a connection that brought no handshake", "from", c.RemoteAddr().String(), "err", why)
			}
			c.Close()
			return
		}
	}
}

// refuse tells a fresh source that the destination is busy, and with what.
func (d *Doorman) refuse(c net.Conn, busy string, since time.Time) {
	d.refused.warn("refused a source: busy with another migration", "from", c.RemoteAddr().String())
	w := NewWriter(c)
	if w.Text(RecRefuse, fmt.Sprintf("this destination is busy with %s, for %v now: it takes one migration at a time; try again once that one has ended",
		busy, time.Since(since).Round(time.Second))) == nil {
		w.Flush()
	}
	c.Close()
}

// Refused logs a connection refused (no handshake, a source of another
// guest), as the Doorman logs its own: a burst of them at a time, the
// rest counted.
func (d *Doorman) Refused(msg string, args ...any) { d.refused.warn(msg, args...) }

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
		d.refused.stop()
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
