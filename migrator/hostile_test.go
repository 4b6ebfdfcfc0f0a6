package migrator

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"testing"
	"time"
)

// TestReceiveHostile plays sources that lie: each stream must be refused
// with a reason, and the destination's guest must never start.
func TestReceiveHostile(t *testing.T) {
	idle := memConfig{Memory: 4 << 20, Hot: 1}
	const mem = 4 << 20
	pages := uint64(mem / PageSize)
	for _, tc := range []struct {
		name string
		want string
		send func(w *Writer, src *memGuest)
	}{
		{"page beyond memory", "beyond", func(w *Writer, src *memGuest) {
			big := make([]byte, 2*mem) // the Writer checks only against what it is given
			w.Pages([]uint64{pages + 5}, big)
		}},
		{"zero run past the end", "malformed", func(w *Writer, src *memGuest) {
			w.Zero(pages-2, 4)
		}},
		{"corrupt compressed pages", "corrupt", func(w *Writer, src *memGuest) {
			// A valid record (its checksum is right) whose compressed
			// contents are garbage: only the decoder can tell.
			w.Compressed([]uint64{1, 2}, []byte{0x03, 0xff, 0x13, 0x37, 0x00})
		}},
		{"stream cut inside a record", "unexpected EOF", func(w *Writer, src *memGuest) {
			w.Pages([]uint64{1, 2, 3}, src.Memory())
			w.Flush()
			// The test below cuts the connection after flushing part.
		}},
		{"pages missing at the end", "never arrived", func(w *Writer, src *memGuest) {
			w.Zero(0, pages-1)
			sendTail(w, src)
		}},
		{"dirty bitmap without post-copy", "has no post-copy", func(w *Writer, src *memGuest) {
			// The handshake named no mode with post-copy, which the
			// destination would have checked it can run.
			w.Zero(0, pages)
			w.Bitmap(make([]uint64, pages/64))
			sendTail(w, src)
		}},
		{"round numbers that do not count up", "end of round 0 after round 7", func(w *Writer, src *memGuest) {
			w.Zero(0, pages)
			w.EndRound(7)
			w.EndRound(0)
			sendTail(w, src)
		}},
		{"a round number past the cap", "end of round 4294967295 after round 0", func(w *Writer, src *memGuest) {
			// Walk 148: taken, the log said rounds=4294967297.
			w.Zero(0, pages)
			w.EndRound(0xffffffff)
			sendTail(w, src)
		}},
		{"checksums before the end", "follow the commit", func(w *Writer, src *memGuest) {
			// Without post-copy they come after the commit, once the
			// destination's guest runs (see TestAuditAfterSwitchover).
			w.Zero(0, pages)
			w.Digest(ComputeDigest(src.Memory()))
			sendTail(w, src)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := newMemGuest(t, idle, false)
			fillMixed(src.mem, 3)
			dst := newMemGuest(t, idle, false)
			a, w, r, done := receiving(t, dst, ReceiveConfig{})
			go func() { // drain the destination's answers
				for {
					if _, err := r.Next(); err != nil {
						return
					}
				}
			}()
			w.Hello(Hello{Version: ProtocolVersion, PageSize: PageSize, MemoryBytes: mem, VCPUs: 1, Image: dst.Identity().Image})
			w.Flush()
			tc.send(w, src)
			if tc.name == "stream cut inside a record" {
				// Write half a record by hand and hang up.
				a.Write([]byte{byte(RecPages), 0, 0, 0, 0xff, 0x0f, 0, 0})
			} else {
				w.Flush()
			}
			if tc.name == "stream cut inside a record" {
				a.Close()
			}
			err := <-done
			a.Close()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Receive: %v, want an error about %q", err, tc.want)
			}
			if ok, st := dst.Waiting(); !ok {
				t.Fatalf("destination guest is %s after a hostile stream", st)
			}
		})
	}
}

// sendTail sends what ends an honest stream: the guest's state, end.
// toVerdict sends dst an honest stream of src's guest (every page zero,
// then src's state) and reads up to the destination's verdict, which must
// be that the copy checks out; it returns the hello it sent.
func toVerdict(t *testing.T, w *Writer, r *Reader, src, dst *memGuest) Hello {
	t.Helper()
	hello := Hello{Version: ProtocolVersion, PageSize: PageSize, MemoryBytes: dst.MemoryBytes(), VCPUs: 1, Image: dst.Identity().Image}
	go func() {
		w.Hello(hello)
		w.Zero(0, dst.MemoryBytes()/PageSize)
		sendTail(w, src)
		w.Flush()
	}()
	for {
		rec, err := r.Next()
		if err != nil {
			t.Fatalf("no verdict from the destination: %v", err)
		}
		if rec.Type == RecVerified {
			if !rec.OK {
				t.Fatalf("the destination refused an honest stream: %s", rec.Text)
			}
			return hello
		}
	}
}

func sendTail(w *Writer, src *memGuest) {
	state, _ := src.SaveState()
	w.State(StateGuest, state)
	w.Text(RecEnd, "")
}

// TestSourceResumesOnMismatch: a destination that reports its copy does not
// match makes the migration fail, and the paused source runs again.
func TestSourceResumesOnMismatch(t *testing.T) {
	src := newMemGuest(t, lightLoad, true)
	addr := playDestination(t, lightLoad.Memory/PageSize, false, func(conn net.Conn, w *Writer, r *Reader) {
		w.Verified(false, "memory differs in 1 of 16 chunks of 1 MiB, first at 0x400000-0x4fffff")
		w.Flush()
		r.Next() // the source must not commit
	})
	m, err := Outgoing(src, "tcp:"+addr, Config{})
	if err != nil {
		t.Fatal(err)
	}
	info, err := m.Wait()
	if err == nil || !strings.Contains(info.ErrorDesc, "could not take the guest: memory differs in 1 of 16 chunks") {
		t.Fatalf("migration with a mismatching destination: %v", err)
	}
	if ok, st := src.Running(); !ok {
		t.Fatalf("source is %s after a verification failure", st)
	}
	waitWrites(t, src, src.seqNow())
}

// TestHelloModes: a fresh destination refuses a source that says it
// resumes a post-copy (the destination that ran its guest is gone) and
// a mode it does not know, as refusals, which keep it waiting for the
// source (ErrNoHandshake), and tells the source why.
func TestHelloModes(t *testing.T) {
	for _, tc := range []struct{ mode, want string }{
		{resumeMode, "a post-copy source reconnecting, but this destination is a fresh one"},
		{commitMode + ":0123456789abcdef", "a source repeating its commit, but this destination is a fresh one"},
		{"nosuchmode", `the source's migration mode "nosuchmode"`},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			dst := newMemGuest(t, memConfig{Memory: 4 << 20, Hot: 1}, false)
			a, w, r, done := receiving(t, dst, ReceiveConfig{})
			go helloTo(w, dst, tc.mode)
			rec, err := r.Next()
			if err != nil || rec.Type != RecRefuse || !strings.Contains(rec.Text, tc.want) {
				t.Errorf("the destination's answer: %v %v, want a refusal saying %q", rec, err, tc.want)
			}
			err = <-done
			a.Close()
			if !errors.Is(err, ErrNoHandshake) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Receive: %v, want a refusal (ErrNoHandshake) saying %q", err, tc.want)
			}
			if ok, st := dst.Waiting(); !ok {
				t.Errorf("destination guest is %s after a refusal", st)
			}
		})
	}
}

// TestCommitLost: a link that breaks after the destination's verdict and
// before the source's commit leaves the destination's guest unstarted, and
// the destination says where the guest may be: paused at a source that
// committed, or running there if it did not.
func TestCommitLost(t *testing.T) {
	cfg := memConfig{Memory: 4 << 20, Hot: 1}
	src := newMemGuest(t, cfg, false)
	dst := newMemGuest(t, cfg, false)
	a, w, r, done := receiving(t, dst, ReceiveConfig{})
	toVerdict(t, w, r, src, dst)
	a.Close() // the commit never comes
	err := <-done
	if want := "the link broke before the source's commit came, so this destination does not start the guest"; err == nil || !strings.Contains(err.Error(), want) ||
		!strings.Contains(err.Error(), "if its migration reports completed, the commit was lost on the way") {
		t.Errorf("Receive: %v, want %q and where the guest may be", err, want)
	}
	if ok, st := dst.Running(); ok {
		t.Errorf("destination is %s without a commit", st)
	}
}

// TestNothingReceived: a source that goes after the handshake, before any
// page, leaves the destination's guest as it was, and Receive says so
// (ErrNothingReceived), so that a waiting destination can wait on.
func TestNothingReceived(t *testing.T) {
	cfg := memConfig{Memory: 4 << 20, Hot: 1}
	dst := newMemGuest(t, cfg, false)
	a, w, r, done := receiving(t, dst, ReceiveConfig{})
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		w.Hello(Hello{Version: ProtocolVersion, PageSize: PageSize, MemoryBytes: cfg.Memory, VCPUs: 1, Image: dst.Identity().Image})
		w.Flush()
	}()
	if rec, err := r.Next(); err != nil || rec.Type != RecAccept {
		t.Fatalf("the destination's answer: %v %v, want an accept", rec, err)
	}
	<-sent
	w.Text(RecAbort, "the source failed: read the destination's answer to the handshake: i/o timeout")
	w.Flush()
	err := <-done
	a.Close()
	if !errors.Is(err, ErrNothingReceived) || !strings.Contains(err.Error(), "the source aborted the migration") {
		t.Errorf("Receive: %v, want the abort, marked ErrNothingReceived", err)
	}
}

// TestSourceStalls: a source that stops sending midway is given up on
// after the idle timeout, and the destination says what that means.
func TestSourceStalls(t *testing.T) {
	cfg := memConfig{Memory: 4 << 20, Hot: 1}
	src := newMemGuest(t, cfg, false)
	dst := newMemGuest(t, cfg, false)
	_, w, r, done := receiving(t, dst, ReceiveConfig{IdleTimeout: 300 * time.Millisecond})
	go func() {
		for {
			if _, err := r.Next(); err != nil {
				return
			}
		}
	}()
	w.Hello(Hello{Version: ProtocolVersion, PageSize: PageSize, MemoryBytes: cfg.Memory, VCPUs: 1, Image: dst.Identity().Image})
	w.Pages([]uint64{1, 2}, src.Memory())
	w.Flush() // and then nothing more
	err := <-done
	if want := "nothing came from the source for 300ms"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("Receive: %v, want %q", err, want)
	}
	// Pages came: not as it was, and said so (walk 107: "EOF" alone).
	if want := "2 of the guest's 1024 pages had arrived; this receiver takes no other migration: to migrate again, start a new receiver"; errors.Is(err, ErrNothingReceived) || !strings.Contains(err.Error(), want) ||
		strings.Count(err.Error(), "(") != strings.Count(err.Error(), ")") || !strings.Contains(err.Error(), "vm run --incoming, which starts a QEMU of its own") {
		t.Errorf("Receive: %v, want %q", err, want)
	}
}

// receiving runs Receive into dst with cfg on one end of a pipe and returns
// the other end, a source's, with its Writer and Reader, and Receive's
// error once it has returned.
func receiving(t *testing.T, dst *memGuest, cfg ReceiveConfig) (net.Conn, *Writer, *Reader, <-chan error) {
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close() })
	done := make(chan error, 1)
	go func() {
		_, err := Receive(context.Background(), b, dst, cfg)
		b.Close()
		done <- err
	}()
	return a, NewWriter(a), NewReader(a), done
}

// TestHelloTakesAndRefuses: a destination takes a source of another image
// its Identity's Takes lists (a QEMU under KVM, one under TCG), and
// refuses in the handshake one its Refuses names, saying its reason (a
// QEMU under TCG refused a KVM guest's state only once every page had
// come: walk 69); the source runs on.
func TestHelloTakesAndRefuses(t *testing.T) {
	cfg := memConfig{Memory: 4 << 20, Hot: 1}
	kvm, tcg := [32]byte{1}, [32]byte{2}

	src, dst := newMemGuest(t, cfg, true), newMemGuest(t, cfg, false)
	src.image, dst.image = kvm, tcg
	dst.refuses = map[[32]byte]string{kvm: "the source runs under KVM, this destination under TCG"}
	d := listenDestination(t, dst, ReceiveConfig{})
	m, err := Outgoing(src, d.uri, Config{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Wait(); err == nil || !strings.Contains(err.Error(), "the source runs under KVM, this destination under TCG") || strings.Contains(err.Error(), "guest image differs") {
		t.Errorf("a KVM source into a TCG destination: %v, want the destination's reason alone", err)
	}
	<-d.done
	if ok, st := src.Running(); !ok {
		t.Fatalf("source is %s after a refused handshake", st)
	}

	src, dst = newMemGuest(t, cfg, true), newMemGuest(t, cfg, false)
	src.image, dst.image, dst.takes = tcg, kvm, [][32]byte{tcg}
	d = listenDestination(t, dst, ReceiveConfig{})
	if m, err = Outgoing(src, d.uri, Config{}); err != nil {
		t.Fatal(err)
	}
	if info, err := m.Wait(); err != nil || !info.Pagecast.Verified {
		t.Errorf("a TCG source into a KVM destination: %v, verified %v", err, info.Pagecast != nil && info.Pagecast.Verified)
	}
	<-d.done
	if d.err != nil {
		t.Errorf("destination: %v", d.err)
	}
}

// TestCommitOfAnotherMigration: a destination waiting for its source to
// repeat a lost commit takes only its own migration's, named by the guest
// state it received: one of another migration is refused (a destination
// restarted meanwhile took another source's commit, started that guest
// and failed the memory check against the other's sums).
func TestCommitOfAnotherMigration(t *testing.T) {
	cfg := memConfig{Memory: 4 << 20, Hot: 1}
	src := newMemGuest(t, cfg, false)
	dst := newMemGuest(t, cfg, false)
	again := make(chan net.Conn)
	a, w, r, done := receiving(t, dst, ReceiveConfig{Reconnect: func(ctx context.Context) (net.Conn, error) {
		select {
		case c := <-again:
			return c, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}})
	hello := toVerdict(t, w, r, src, dst)
	a.Close() // the commit never comes
	state, _ := src.SaveState()
	for _, tag := range []string{"0123456789abcdef", stateTag(state)} {
		x, y := net.Pipe()
		defer x.Close()
		again <- y
		cw, cr := NewWriter(x), NewReader(x)
		h := hello
		h.Mode = commitMode + ":" + tag
		sent := make(chan struct{})
		go func() {
			defer close(sent)
			cw.Hello(h)
			cw.Flush()
		}()
		rec, err := cr.Next()
		<-sent
		if tag != stateTag(state) {
			if err != nil || rec.Type != RecRefuse || !strings.Contains(rec.Text, "a source repeating the commit of another migration") {
				t.Fatalf("the waiting destination's answer to another migration's commit: %v %v", rec, err)
			}
			if ok, st := dst.Running(); ok {
				t.Fatalf("destination is %s after another migration's commit", st)
			}
			continue
		}
		if err != nil || rec.Type != RecAccept {
			t.Fatalf("the waiting destination's answer to its own migration's commit: %v %v", rec, err)
		}
		go func() {
			cw.Commit(true)
			cw.Flush()
			x.Close() // the checksums do not come: the guest runs unchecked
		}()
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if ok, st := dst.Running(); !ok {
		t.Errorf("destination is %s after its own migration's commit", st)
	}
}

// TestHostileDestination plays destinations that lie to the source: each
// takes the handshake, then answers with something no honest destination
// sends, or stops reading. The migration must fail saying what came, and
// the source's guest run on.
func TestHostileDestination(t *testing.T) {
	pages := lightLoad.Memory / PageSize
	junk := make([]byte, 4096)
	rand.NewChaCha8([32]byte{1}).Read(junk)
	huge := make([]byte, wireHeaderSize) // a verdict whose header claims 4 GiB
	huge[0] = byte(RecVerified)
	binary.LittleEndian.PutUint32(huge[4:], 0xffffffff)
	for _, tc := range []struct {
		name    string
		atStart bool // act right after the handshake, else once the stream has ended
		act     func(conn net.Conn, w *Writer, r *Reader)
		want    string
	}{
		{"a verdict claiming 4 GiB", false, func(conn net.Conn, w *Writer, r *Reader) { conn.Write(huge) }, "exceeds the"},
		{"junk for a verdict", false, func(conn net.Conn, w *Writer, r *Reader) { conn.Write(junk) }, "malformed"},
		{"a page request in pre-copy's verdict", false, func(conn net.Conn, w *Writer, r *Reader) {
			w.Request([]uint64{0})
			w.Flush()
		}, "answered with a request record"},
		{"a request for a page past the guest's memory", false, func(conn net.Conn, w *Writer, r *Reader) {
			w.Request([]uint64{pages + 100})
			w.Flush()
		}, "malformed"},
		{"a destination that stops reading", true, func(conn net.Conn, w *Writer, r *Reader) {
			time.Sleep(5 * time.Second) // the source's idle timeout is 1 s
		}, "i/o timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := newMemGuest(t, lightLoad, true)
			addr := playDestination(t, pages, tc.atStart, func(conn net.Conn, w *Writer, r *Reader) {
				tc.act(conn, w, r)
				if !tc.atStart {
					io.Copy(io.Discard, conn) // until the source hangs up
				}
			})
			m, err := Outgoing(src, "tcp:"+addr, Config{IdleTimeout: time.Second})
			if err != nil {
				t.Fatal(err)
			}
			info, err := m.Wait()
			if err == nil || !strings.Contains(info.ErrorDesc, tc.want) {
				t.Fatalf("migration to a destination that sent %s: %v (%s), want an error saying %q", tc.name, err, info.ErrorDesc, tc.want)
			}
			t.Logf("%s: %s", tc.name, info.ErrorDesc)
			if ok, st := src.Running(); !ok {
				t.Fatalf("source is %s after a hostile destination", st)
			}
			waitWrites(t, src, src.seqNow())
		})
	}
}

// playDestination listens on loopback for one source, takes its handshake
// and plays a destination: act runs at once, or once the source's stream
// has ended (its end record read). It returns the address.
func playDestination(t *testing.T, pages uint64, atStart bool, act func(conn net.Conn, w *Writer, r *Reader)) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		conn, err := l.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		w, r := NewWriter(conn), NewReader(conn)
		if _, err := r.Next(); err != nil {
			return
		}
		w.Text(RecAccept, "")
		w.Flush()
		r.SetLimits(pages)
		for !atStart {
			rec, err := r.Next()
			if err != nil {
				return
			}
			atStart = rec.Type == RecEnd
		}
		act(conn, w, r)
	}()
	return l.Addr().String()
}

// TestLaterRefused: pages named for stage 3 (RecLater) come only from a
// source with post-copy, before its dirty bitmap: otherwise the stream is
// malformed, and the destination's guest stays waiting.
func TestLaterRefused(t *testing.T) {
	for _, tc := range []struct {
		mode        string
		afterBitmap bool
		want        string
	}{
		{ModePrecopy, false, `pages named for stage 3 from a source whose mode ("precopy") has no post-copy`},
		{ModeTSMC, true, "or after its dirty bitmap"},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			dst := newMemGuest(t, memConfig{Memory: 4 << 20, Hot: 1}, false)
			a, w, r, done := receiving(t, dst, ReceiveConfig{})
			go func() {
				helloTo(w, dst, tc.mode)
				if rec, err := r.Next(); err != nil || rec.Type != RecAccept {
					return
				}
				if tc.afterBitmap {
					w.Bitmap(make([]uint64, 4<<20/PageSize/64))
				}
				w.Later([]uint64{1, 2})
				w.Flush()
			}()
			err := <-done
			a.Close()
			if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Receive: %v, want malformed, saying %q", err, tc.want)
			}
			if ok, st := dst.Waiting(); !ok {
				t.Errorf("destination guest is %s after a malformed stream", st)
			}
		})
	}
}

// helloTo says a source's hello to dst, in mode.
func helloTo(w *Writer, dst *memGuest, mode string) {
	w.Hello(Hello{Version: ProtocolVersion, PageSize: PageSize, MemoryBytes: dst.MemoryBytes(), VCPUs: 1, Image: dst.Identity().Image, Mode: mode})
	w.Flush()
}

// TestSyncHostile: a MODE+postcopy source that named the pages post-copy
// brings waits for the destination's sync before it pauses its guest
// (wire protocol 10). A destination that hangs up then, answers with
// something else, or never answers fails the migration saying so, the
// guest never paused and running on at the source.
func TestSyncHostile(t *testing.T) {
	load := memConfig{Memory: 8 << 20, Rate: 100000} // round 1 leaves most of memory pending: post-copy
	pages := load.Memory / PageSize
	for _, tc := range []struct {
		name   string
		answer func(w *Writer)
		want   string
	}{
		{"hangs up", func(*Writer) {}, "wait for the destination to drop the"},
		{"answers with a request", func(w *Writer) { w.Request([]uint64{0}); w.Flush() }, "answered the pages post-copy brings with a request record"},
		{"aborts", func(w *Writer) { w.Text(RecAbort, "out of memory"); w.Flush() }, "the destination aborted: out of memory"},
		{"never answers", func(*Writer) { time.Sleep(3 * time.Second) }, "i/o timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := newMemGuest(t, load, true)
			named := make(chan int, 1)
			addr := playDestination(t, pages, true, func(conn net.Conn, w *Writer, r *Reader) {
				n := 0
				for {
					rec, err := r.Next()
					if err != nil {
						named <- -1
						return
					}
					if rec.Type == RecLater {
						n += len(rec.GFNs)
					}
					if rec.Type == RecSync {
						break
					}
				}
				named <- n
				tc.answer(w)
			})
			m, err := Outgoing(src, "tcp:"+addr, Config{Mode: ModePrecopy + "+" + Postcopy, MaxBandwidth: 8 << 20, IdleTimeout: time.Second})
			if err != nil {
				t.Fatal(err)
			}
			info, err := m.Wait()
			if n := <-named; n < int(pages)/2 {
				t.Fatalf("%d pages named before the sync, want most of the %d", n, pages)
			}
			if err == nil || !strings.Contains(info.ErrorDesc, tc.want) {
				t.Fatalf("a destination that %s at the sync: %v (%s), want an error saying %q", tc.name, err, info.ErrorDesc, tc.want)
			}
			t.Logf("%s: %s", tc.name, info.ErrorDesc)
			if at := src.PausedAt(); !at.IsZero() {
				t.Errorf("the guest was paused at %v: the pause comes after the sync", at)
			}
			if ok, st := src.Running(); !ok {
				t.Fatalf("source is %s after a destination that %s", st, tc.name)
			}
			waitWrites(t, src, src.seqNow())
		})
	}
}
