package migrator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Limiter is a token bucket: it lets bytes through at Rate per second on
// average, in bursts of at most a few milliseconds' worth, so that a
// loopback connection behaves like a slower link. QEMU's max-bandwidth
// limits its migration stream the same way.
type Limiter struct {
	clock  Clock
	mu     sync.Mutex
	rate   float64 // bytes per second; 0: unlimited
	asked  uint64  // rate as set, which a float64 may not hold exactly
	tokens float64
	last   time.Time
}

// limiterBurst is how long a burst may last at the configured rate: long
// enough that the sleeps are coarse compared with timer slack, short enough
// that the rate holds within each round.
const limiterBurst = 20 * time.Millisecond

// minBurst is the smallest bucket: one buffered write of the wire protocol.
const minBurst = 64 << 10

// NewLimiter returns a limiter at bytesPerSecond on the wall clock; 0
// means no limit.
func NewLimiter(bytesPerSecond uint64) *Limiter {
	return NewLimiterClock(WallClock{}, bytesPerSecond)
}

// NewLimiterClock returns a limiter at bytesPerSecond whose time is clock's.
func NewLimiterClock(clock Clock, bytesPerSecond uint64) *Limiter {
	l := &Limiter{clock: clock, last: clock.Now()}
	l.SetRate(bytesPerSecond)
	return l
}

// SetRate changes the rate; 0 means no limit.
func (l *Limiter) SetRate(bytesPerSecond uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.rate, l.asked = float64(bytesPerSecond), bytesPerSecond
	l.tokens = min(l.tokens, l.burst())
}

// Rate is the limit in bytes per second, as set; 0 means none. (Read
// back from the float it is kept in, 2^64-1 came back as 2^63: review
// 102.)
func (l *Limiter) Rate() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.asked
}

func (l *Limiter) burst() float64 {
	return max(minBurst, l.rate*limiterBurst.Seconds())
}

// Wait blocks until n bytes may pass, or ctx ends.
func (l *Limiter) Wait(ctx context.Context, n int) error {
	l.mu.Lock()
	if l.rate == 0 {
		l.mu.Unlock()
		return nil
	}
	now := l.clock.Now()
	l.tokens = min(l.burst(), l.tokens+now.Sub(l.last).Seconds()*l.rate)
	l.last = now
	l.tokens -= float64(n) // may go negative: the debt is slept off below
	debt := -l.tokens
	rate := l.rate
	l.mu.Unlock()
	if debt <= 0 {
		return nil
	}
	select {
	case <-l.clock.After(time.Duration(debt / rate * float64(time.Second))):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// linkConn is the source's view of the connection: writes pass the
// limiter, and every read or write that makes no progress for idle fails,
// so a silently dead link ends the migration instead of hanging it.
type linkConn struct {
	net.Conn
	ctx     context.Context
	limit   *Limiter
	idle    time.Duration
	written uint64
}

func (c *linkConn) Write(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		chunk := p[n:]
		if len(chunk) > minBurst {
			chunk = chunk[:minBurst]
		}
		if err := c.limit.Wait(c.ctx, len(chunk)); err != nil {
			return n, err
		}
		if c.idle > 0 {
			c.Conn.SetWriteDeadline(time.Now().Add(c.idle))
		}
		m, err := c.Conn.Write(chunk)
		n += m
		c.written += uint64(m)
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func (c *linkConn) Read(p []byte) (int, error) {
	if c.idle > 0 {
		c.Conn.SetReadDeadline(time.Now().Add(c.idle))
		// A stop that set the read deadline in the past before the line
		// above (Receive's reads) must not be undone by it.
		if err := c.ctx.Err(); err != nil {
			return 0, err
		}
	}
	return c.Conn.Read(p)
}

var _ io.ReadWriter = (*linkConn)(nil)

// Relay is a link of a given rate in front of a migration's destination:
// it listens on a loopback port and forwards each connection to the
// destination, the source-to-destination direction through a token bucket
// (the way back, QEMU's return path, as it comes). QEMU's max-bandwidth
// caps only its live rounds: its stop-and-copy goes at full speed, which
// no real link of that rate allows. Migrated through a Relay, QEMU's
// migration and pagecast's face the same link.
type Relay struct {
	l      net.Listener
	ctx    context.Context // ends at Close, and with it waits for the bucket
	cancel context.CancelFunc
	to     string
	limit  *Limiter
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  []net.Conn
}

// NewRelay starts a relay to the migration URI to (tcp:HOST:PORT) at
// bytesPerSecond (0: no limit).
func NewRelay(to string, bytesPerSecond uint64) (*Relay, error) {
	addr, err := ParseURI(to)
	if err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("relay: %w", err)
	}
	r := &Relay{l: l, to: addr, limit: NewLimiter(bytesPerSecond)}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	r.wg.Add(1)
	go r.accept()
	return r, nil
}

// URI is where to migrate to: the relay's end.
func (r *Relay) URI() string { return "tcp:" + r.l.Addr().String() }

// Close stops the relay and closes every connection through it.
func (r *Relay) Close() error {
	err := r.l.Close()
	r.cancel()
	r.mu.Lock()
	for _, c := range r.conns {
		c.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()
	return err
}

func (r *Relay) accept() {
	defer r.wg.Done()
	for {
		in, err := r.l.Accept()
		if err != nil {
			return
		}
		out, err := net.Dial("tcp", r.to)
		if err != nil {
			in.Close()
			continue
		}
		r.mu.Lock()
		if r.ctx.Err() != nil { // Close came while this one was dialled: it closed the others already
			r.mu.Unlock()
			in.Close()
			out.Close()
			return
		}
		r.conns = append(r.conns, in, out)
		r.mu.Unlock()
		// Each direction passes on the end of its stream (a half-close);
		// the connections close once both have ended.
		var both sync.WaitGroup
		both.Add(2)
		r.wg.Add(3)
		go func() {
			defer r.wg.Done()
			both.Wait()
			in.Close()
			out.Close()
		}()
		go func() {
			defer r.wg.Done()
			defer both.Done()
			io.Copy(in, out)
			closeWrite(in)
		}()
		go func() {
			defer r.wg.Done()
			defer both.Done()
			buf := make([]byte, minBurst)
			for {
				n, err := in.Read(buf)
				if n > 0 {
					if r.limit.Wait(r.ctx, n) != nil {
						out.Close()
						return
					}
					if _, werr := out.Write(buf[:n]); werr != nil {
						in.Close() // the destination is gone: so is the source's link
						return
					}
				}
				if err == io.EOF {
					closeWrite(out)
					return
				}
				if err != nil {
					out.Close()
					return
				}
			}
		}()
	}
}

// closeWrite ends c's stream in the direction of writes.
func closeWrite(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.CloseWrite()
		return
	}
	c.Close()
}

// linkHint adds what a failure of the link's connection means to err: the
// destination went away (it exited, was killed, or the network broke), or
// nothing moved for idle (the destination or the link stalled).
func linkHint(err error, idle time.Duration) error {
	switch {
	case err == nil, strings.Contains(err.Error(), "the destination hung up"): // said already
		return err
	case errors.Is(err, os.ErrDeadlineExceeded):
		return fmt.Errorf("%w (nothing moved on the link for %v: the destination or the network stalled)", err, idle)
	case errors.Is(err, syscall.EPIPE), errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%w (the destination went away: it exited or was killed, or the network broke)", err)
	}
	return err
}
