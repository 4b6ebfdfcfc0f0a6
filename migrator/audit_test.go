package migrator

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// missesAtPause is a source whose memory changes at the pause without its
// dirty log seeing it, as a device's DMA would: a byte in each of 16 pages
// spread through memory, so that some lie in chunks without a dirty page
// (TSMC checks only those) whatever the guest wrote last.
type missesAtPause struct{ *memGuest }

func (g missesAtPause) Pause() error {
	if err := g.memGuest.Pause(); err != nil {
		return err
	}
	for i := range 16 {
		g.mem[i*len(g.mem)/16+PageSize/2] ^= 0x5a
	}
	return nil
}

// cannotStop is a destination whose guest, once running, cannot be stopped.
type cannotStop struct{ *memGuest }

func (cannotStop) Stop() error { return errors.New("the monitor is gone") }

// TestAuditAfterSwitchover: a write the source's dirty log missed is caught
// by the checksums of the paused source, which follow the commit (TSMC's:
// stage 3's pages), against those of the memory the destination's guest
// started with: the destination stops its guest and the source runs it on
// from its own copy.
func TestAuditAfterSwitchover(t *testing.T) {
	for _, tc := range []struct{ mode, want string }{
		{ModePrecopy, "memory does not match"},
		{ModeTSMC, "clean chunks differ"},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			src := newMemGuest(t, lightLoad, true)
			dst := newMemGuest(t, lightLoad, false)
			d := listenDestination(t, dst, ReceiveConfig{})
			mig, err := Outgoing(missesAtPause{src}, d.uri, Config{Mode: tc.mode, DowntimeLimit: testDowntime})
			if err != nil {
				t.Fatal(err)
			}
			info, err := mig.Wait()
			if err == nil || !strings.Contains(info.ErrorDesc, tc.want) || !strings.Contains(info.ErrorDesc, "runs on here") {
				t.Fatalf("migration whose dirty log missed writes: %v", err)
			}
			if info.Pagecast != nil && info.Pagecast.Verified {
				t.Error("a migration whose memory differed reports it verified")
			}
			<-d.done
			if d.err == nil || !strings.Contains(d.err.Error(), "verify memory after the switch-over") {
				t.Fatalf("destination: %v", d.err)
			}
			if ok, st := src.Running(); !ok {
				t.Fatalf("source is %s after the destination's check failed", st)
			}
			waitWrites(t, src, src.seqNow())
			if ok, st := dst.Running(); ok || st != memPaused {
				t.Fatalf("destination is %s after its check failed, want paused", st)
			}
		})
	}
}

// TestAuditCannotStop: if the destination cannot stop a guest whose memory
// differs, the source is told so and keeps its copy paused: the guest never
// runs in two places.
func TestAuditCannotStop(t *testing.T) {
	src := newMemGuest(t, lightLoad, true)
	dst := newMemGuest(t, lightLoad, false)
	d := listenDestination(t, cannotStop{dst}, ReceiveConfig{})
	mig, err := Outgoing(missesAtPause{src}, d.uri, Config{Mode: ModePrecopy, DowntimeLimit: testDowntime})
	if err != nil {
		t.Fatal(err)
	}
	info, err := mig.Wait()
	if err == nil || !strings.Contains(info.ErrorDesc, "could not stop its guest") {
		t.Fatalf("migration to a destination that cannot stop: %v", err)
	}
	<-d.done
	if d.err == nil || !strings.Contains(d.err.Error(), "the monitor is gone") {
		t.Fatalf("destination: %v", d.err)
	}
	if ok, st := src.Running(); ok {
		t.Fatalf("source is %s: the guest runs in two places", st)
	}
	if ok, _ := dst.Running(); !ok {
		t.Fatal("the destination's guest stopped though it could not be")
	}
}

// TestAuditUnanswered: if the destination never answers the checksums
// (the link dies after the commit), the migration is complete, unchecked:
// the guest is with the destination and the source stays paused.
func TestAuditUnanswered(t *testing.T) {
	src := newMemGuest(t, lightLoad, true)
	dst := newMemGuest(t, lightLoad, false)
	d := listenDestination(t, dst, ReceiveConfig{})
	dst.onStart = func() {
		(<-d.conn).Close() // the link dies as the guest starts
	}
	mig, err := Outgoing(src, d.uri, Config{Mode: ModePrecopy, DowntimeLimit: testDowntime})
	if err != nil {
		t.Fatal(err)
	}
	info, err := mig.Wait()
	if err != nil {
		t.Fatalf("a migration whose check went unanswered: %v", err)
	}
	if info.Pagecast.Verified {
		t.Error("an unchecked migration reports it verified")
	}
	if info.Pagecast.Unconfirmed == "" {
		t.Error("an unchecked migration does not say it is unconfirmed")
	}
	<-d.done
	if ok, st := src.Running(); ok {
		t.Fatalf("source is %s", st)
	}
	if ok, st := dst.Running(); !ok {
		t.Fatalf("destination is %s, want running", st)
	}
}

// TestCommitRepeated: a link that breaks after the destination's verdict,
// the commit lost with it, no longer leaves the guest running nowhere
// (the destination would not start it; the source, committed, kept it
// paused): the source connects again and repeats the commit, which the
// destination, still waiting for it, takes. The guest runs there,
// checked, and the source reports the migration verified, not unconfirmed.
func TestCommitRepeated(t *testing.T) {
	src := newMemGuest(t, lightLoad, true)
	dst := newMemGuest(t, lightLoad, false)
	addr, received := reconnectingDestination(t, dst, func(res Received) error {
		if res.Bytes < lightLoad.Memory/2 {
			return fmt.Errorf("received %d bytes of a %d-byte guest: the first connection's not counted", res.Bytes, lightLoad.Memory)
		}
		return nil
	})
	p := newProxy(t, addr)
	p.dropCommit.Store(true)
	m, err := Outgoing(src, p.uri, Config{Mode: ModePrecopy, DowntimeLimit: testDowntime, IdleTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	info, err := m.Wait()
	if err != nil {
		t.Fatalf("a migration whose commit was lost: %v", err)
	}
	if p.dropCommit.Load() {
		t.Fatal("the proxy never saw the verdict: nothing was dropped")
	}
	if !info.Pagecast.Verified || info.Pagecast.Unconfirmed != "" || !strings.Contains(info.Pagecast.StopReason, "the commit, which was repeated on a new connection") {
		t.Errorf("source: verified %v, unconfirmed %q, stopped because %q", info.Pagecast.Verified, info.Pagecast.Unconfirmed, info.Pagecast.StopReason)
	}
	if err := <-received; err != nil {
		t.Fatalf("destination: %v", err)
	}
	if ok, st := dst.Running(); !ok {
		t.Fatalf("destination is %s, want running", st)
	}
	if ok, st := src.Running(); ok {
		t.Fatalf("source is %s: the guest runs twice", st)
	}
}

// TestCommitLostTSMC: in tsmc the source takes a lost commit as sent and
// reconnects for stage 3; the destination, which never started the guest,
// says so, and the source runs the guest on (it retried for 5 minutes,
// then kept the guest paused, saying it ran on the destination: the guest
// ran nowhere).
func TestCommitLostTSMC(t *testing.T) {
	src := newMemGuest(t, lightLoad, true)
	dst := newMemGuest(t, lightLoad, false)
	addr, received := reconnectingDestination(t, dst, nil)
	p := newProxy(t, addr)
	p.dropCommit.Store(true)
	m, err := Outgoing(src, p.uri, Config{Mode: ModeTSMC, DowntimeLimit: testDowntime, IdleTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	info, err := m.Wait()
	if err == nil || !strings.Contains(err.Error(), "the destination says the commit never came") || !strings.Contains(err.Error(), "the guest runs on here") {
		t.Fatalf("tsmc whose commit was lost: %v (%+v)", err, info)
	}
	if err := <-received; err == nil || !strings.Contains(err.Error(), "was told, and runs the guest on") {
		t.Errorf("destination: %v", err)
	}
	if ok, st := src.Running(); !ok {
		t.Errorf("source is %s, want running", st)
	}
	if ok, st := dst.Running(); ok {
		t.Errorf("destination is %s without a commit", st)
	}
}

// TestCancelAfterCommit: once the commit is sent, a cancel is refused
// (ErrCommitted) and the migration goes on: the destination runs the guest
// or starts it once the commit reaches it, so resuming the guest here could
// run it twice (a Ctrl-C while the source repeated a lost commit said the
// guest ran on at the source, which kept it paused, while the destination
// ran it).
func TestCancelAfterCommit(t *testing.T) {
	src := newMemGuest(t, lightLoad, true)
	dst := newMemGuest(t, lightLoad, false)
	d := listenDestination(t, dst, ReceiveConfig{}) // no Reconnect: the lost commit is never taken
	p := newProxy(t, d.uri)
	p.dropCommit.Store(true)
	m, err := Outgoing(src, p.uri, Config{Mode: ModePrecopy, DowntimeLimit: testDowntime, IdleTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		m.mu.Lock()
		committed := m.committed
		m.mu.Unlock()
		if committed {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("never committed: %+v", m.Info())
		}
	}
	if err := m.Cancel(); !errors.Is(err, ErrCommitted) {
		t.Fatalf("Cancel after the commit: %v, want ErrCommitted", err)
	}
	m.abort() // end the commit's repeats (45 s) for the test
	info, err := m.Wait()
	if err != nil || info.Status != StatusCompleted || info.Pagecast.Unconfirmed == "" {
		t.Errorf("after a refused cancel: %v, status %s, unconfirmed %q", err, info.Status, info.Pagecast.Unconfirmed)
	}
	if ok, st := src.Running(); ok {
		t.Errorf("source is %s after its commit", st)
	}
	if err := m.Cancel(); err != nil {
		t.Errorf("Cancel of a finished migration: %v", err)
	}
}

// reconnectingDestination receives one migration into dst on a loopback
// listener that also takes a source's reconnections (as vm run --incoming
// does), and returns its address and Receive's outcome, checked by check
// if given.
func reconnectingDestination(t *testing.T, dst Destination, check func(Received) error) (addr string, received <-chan error) {
	t.Helper()
	l, err := Listen("tcp:127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	done := make(chan error, 1)
	go func() {
		conn, err := l.Accept()
		if err != nil {
			done <- err
			return
		}
		defer conn.Close()
		res, err := Receive(context.Background(), conn, dst, ReceiveConfig{
			IdleTimeout: 5 * time.Second,
			Reconnect: func(ctx context.Context) (net.Conn, error) {
				stop := context.AfterFunc(ctx, func() { l.Close() })
				defer stop()
				return l.Accept()
			},
		})
		if err == nil && check != nil {
			err = check(res)
		}
		done <- err
	}()
	return "tcp:" + l.Addr().String(), done
}

// cutAfterStarted is a destination's link that breaks after the write that
// follows its guest's start (armed): the word that it runs goes, the answer
// to the checksums does not.
type cutAfterStarted struct {
	net.Conn
	armed  atomic.Bool
	writes atomic.Int32
}

func (c *cutAfterStarted) Write(b []byte) (int, error) {
	if c.armed.Load() && c.writes.Add(1) > 1 {
		c.Conn.Close()
		return 0, net.ErrClosed
	}
	return c.Conn.Write(b)
}

// TestAuditUnansweredAfterStarted: a destination that said its guest runs
// and then went before it answered the checksums leaves the migration
// unconfirmed, but known to have put the guest there (walk 153: the
// guest was said to be nowhere known).
func TestAuditUnansweredAfterStarted(t *testing.T) {
	src := newMemGuest(t, lightLoad, true)
	dst := newMemGuest(t, lightLoad, false)
	l, err := Listen("tcp:127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	link := make(chan *cutAfterStarted, 1)
	received := make(chan error, 1)
	go func() {
		conn, err := l.Accept()
		l.Close() // the source's repeated commit finds no one
		if err != nil {
			received <- err
			return
		}
		defer conn.Close()
		c := &cutAfterStarted{Conn: conn}
		link <- c
		_, err = Receive(context.Background(), c, dst, ReceiveConfig{})
		received <- err
	}()
	dst.onStart = func() { (<-link).armed.Store(true) }
	mig, err := Outgoing(src, "tcp:"+l.Addr().String(), Config{Mode: ModePrecopy, DowntimeLimit: testDowntime, IdleTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	info, err := mig.Wait()
	<-received
	if err != nil || info.Pagecast.Verified || info.Pagecast.Unconfirmed == "" || !info.Pagecast.GuestStarted {
		t.Errorf("a destination that said its guest runs, then went: %v, verified %v, unconfirmed %q, guest started %v; want unconfirmed, the guest started there",
			err, info.Pagecast.Verified, info.Pagecast.Unconfirmed, info.Pagecast.GuestStarted)
	}
	if ok, st := src.Running(); ok {
		t.Errorf("source is %s: the guest runs in two places", st)
	}
}
