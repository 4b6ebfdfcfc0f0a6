package migrator

import (
	"bytes"
	"context"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pagecast/pagecast/uffd"
)

// uffdAvailable tries userfaultfd on a small shared mapping.
func uffdAvailable() error {
	fd, err := unix.MemfdCreate("pagecast-uffd-probe", unix.MFD_CLOEXEC)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.Ftruncate(fd, 1<<20); err != nil {
		return err
	}
	mem, err := unix.Mmap(fd, 0, 1<<20, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return err
	}
	defer unix.Munmap(mem)
	r, err := uffd.Register(mem)
	if err != nil {
		return err
	}
	return r.Close()
}

// TestTSMCRecovery cuts the link in stage 3, while the destination's guest
// runs without some of its pages: the source must reconnect, learn what is
// still missing, and finish, with memory equal.
func TestTSMCRecovery(t *testing.T) {
	if err := uffdAvailable(); err != nil {
		t.Skip(err)
	}
	t.Run("same image", func(t *testing.T) { tsmcRecovery(t, false, false) })
	// A destination that takes the source's image as well as its own (a
	// KVM destination, a TCG source): the reconnection's hello is checked
	// as the first was (it was held to the destination's own image alone,
	// and refused, so stage 3 never finished).
	t.Run("image the destination takes", func(t *testing.T) { tsmcRecovery(t, true, false) })
	// The link broken by the destination, as QMP migrate-pause does
	// there (QEMU's remedy for a source that hangs with its connection
	// open; walk 149): postcopy-paused, and the source comes back.
	t.Run("migrate-pause on the destination", func(t *testing.T) { tsmcRecovery(t, false, true) })
}

func tsmcRecovery(t *testing.T, takes, pause bool) {
	load := lightLoad
	load.Memory = 8 << 20
	src := newMemGuest(t, load, true)
	dst := newMemGuest(t, load, false)
	if takes {
		src.image, dst.image, dst.takes = [32]byte{2}, [32]byte{1}, [][32]byte{{2}}
	}
	dlog, err := dst.StartDirtyLog()
	if err != nil {
		t.Fatal(err)
	}
	defer dlog.Close()

	l, err := Listen("tcp:127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	received := make(chan error, 1)
	var res Received
	pauses := make(chan struct{}, 1)
	var statusMu sync.Mutex
	var statuses []string
	go func() {
		conn, err := l.Accept()
		if err != nil {
			received <- err
			return
		}
		defer conn.Close()
		res, err = Receive(context.Background(), conn, dst, ReceiveConfig{
			IdleTimeout: 5 * time.Second,
			Reconnect:   func(context.Context) (net.Conn, error) { return l.Accept() },
			Pause:       pauses,
			Status: func(st string) {
				statusMu.Lock()
				defer statusMu.Unlock()
				statuses = append(statuses, st)
			},
		})
		received <- err
	}()
	p := newProxy(t, "tcp:"+l.Addr().String())
	// A slow link, so that stage 3 lasts long enough to be cut.
	m, err := Outgoing(src, p.uri, Config{Mode: ModeTSMC, MaxBandwidth: 8 << 20, IdleTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for m.Info().Status != StatusPostcopy {
		if time.Now().After(deadline) || m.Info().Status == StatusFailed {
			t.Fatalf("never reached stage 3: %+v", m.Info())
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // some pages pushed, most not
	if pause {
		pauses <- struct{}{}
	} else {
		p.cut()
	}
	waited := make(chan error, 1)
	var info Info
	go func() {
		var err error
		info, err = m.Wait()
		waited <- err
	}()
	select {
	case err := <-waited:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(60 * time.Second):
		// A post-copy source retries for good: a refused reconnection
		// never ends.
		t.Fatalf("stage 3 did not finish within a minute of the cut: %+v", m.Info())
	}
	if err := <-received; err != nil {
		t.Fatal(err)
	}
	t.Logf("tsmc with a cut link: %s; total %d ms, %.1f MiB; destination pulled %d, filled %d",
		info.Pagecast.StopReason, info.TotalTime, float64(info.RAM.Transferred)/(1<<20), res.Pulled, res.Pushed)
	if !strings.Contains(info.Pagecast.StopReason, "1 reconnections") {
		t.Errorf("the source did not reconnect once: %s", info.Pagecast.StopReason)
	}
	// What the destination's query-migrate says as it goes, as QEMU's
	// destination does (walk 148: {} while the guest waited on 2043
	// pages of a source gone).
	statusMu.Lock()
	if want := []string{StatusActive, StatusPostcopy, StatusPostcopyPaused, StatusPostcopy}; !slices.Equal(statuses, want) {
		t.Errorf("the destination said %v, want %v", statuses, want)
	}
	statusMu.Unlock()
	// Both connections' bytes (it counted the last one's only: 5 MB of
	// 270 MiB in a walk's run), less what the cut lost in flight, more
	// the handshakes and checksums the source does not count.
	if res.Bytes < info.RAM.Transferred/2 || res.Bytes > info.RAM.Transferred*21/20 {
		t.Errorf("the destination read %d bytes, the source sent %d", res.Bytes, info.RAM.Transferred)
	}
	waitWrites(t, dst, src.seqNow())
	assertSameMemory(t, src, dst, dlog)
}

// TestLateRequests: requests the destination made for pages already on
// their way arrive after the source's last push, more of them than the
// listener's queue holds, and then the verdict: the source reads them all
// and completes. (It hung for good with 65 or more: the listener, its
// queue full, never read the verdict, and post-copy cannot be cancelled.)
func TestLateRequests(t *testing.T) {
	load := lightLoad
	load.Memory = 4 << 20
	src := newMemGuest(t, load, true)
	pages := load.Memory / PageSize
	const late = 200
	addr := playDestination(t, pages, false, func(conn net.Conn, w *Writer, r *Reader) {
		w.Verified(true, "")
		w.Flush()
		for { // the commit, stage 3's pages, then the checksums
			rec, err := r.Next()
			if err != nil {
				t.Errorf("fake destination: %v", err)
				return
			}
			if rec.Type == RecDigest {
				break
			}
		}
		for i := range late {
			w.Request([]uint64{uint64(i)})
		}
		w.Verified(true, "")
		w.Flush()
		for {
			if _, err := r.Next(); err != nil {
				return
			}
		}
	})
	m, err := Outgoing(src, "tcp:"+addr, Config{Mode: ModeTSMC, IdleTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-m.Done():
	case <-time.After(20 * time.Second):
		t.Fatalf("source still %q 20 s after the destination's verdict", m.Info().Status)
	}
	if i := m.Info(); i.Status != StatusCompleted || i.RAM.PostcopyRequests < late {
		t.Errorf("status %s (%s), %d pages asked for; want completed, at least the %d late ones", i.Status, i.ErrorDesc, i.RAM.PostcopyRequests, late)
	}
}

// tsmcByHand is the guest of the tests whose source is written by hand.
var tsmcByHand = memConfig{Memory: 4 << 20, Hot: 1, P: 0, Rate: 2000}

// handSource is a destination receiving from a source the test writes by
// hand: its stage 1 and 2 are sent (sent is closed once they are), every
// page zero and dirty those set in dirty.
type handSource struct {
	pages    uint64
	dst      *memGuest
	a        net.Conn
	w        *Writer
	r        *Reader
	sent     chan struct{}
	received func() error // the destination's end
}

func tsmcBy(t *testing.T, dirty []uint64, rcfg ReceiveConfig) handSource {
	t.Helper()
	cfg := tsmcByHand
	h := handSource{pages: cfg.Memory / PageSize, dst: newMemGuest(t, cfg, false), sent: make(chan struct{})}
	src := newMemGuest(t, cfg, false)
	ctx, cancel := context.WithCancel(context.Background())
	var b net.Conn
	h.a, b = net.Pipe()
	done := make(chan error, 1)
	go func() {
		_, err := Receive(ctx, b, h.dst, rcfg)
		done <- err
	}()
	h.received = sync.OnceValue(func() error { return <-done })
	t.Cleanup(func() { cancel(); h.a.Close(); h.received() })
	h.w, h.r = NewWriter(h.a), NewReader(h.a)
	go func() {
		defer close(h.sent)
		h.w.Hello(Hello{Version: ProtocolVersion, PageSize: PageSize, MemoryBytes: cfg.Memory, VCPUs: 1, Image: h.dst.Identity().Image, Mode: ModeTSMC})
		h.w.Zero(0, h.pages)
		state, _ := src.SaveState()
		h.w.State(StateGuest, state)
		h.w.Bitmap(dirty)
		h.w.Text(RecEnd, "")
		h.w.Flush()
	}()
	h.r.SetLimits(h.pages)
	return h
}

// TestFaultsAfterReconnect: in stage 3, a fault the destination forwards
// while the link is down is asked for again once the source reconnects,
// and so are the faults after. (The forwarder ended at the first failed
// write, and the guest then waited on every page the push had not reached;
// found by a review walk.)
func TestFaultsAfterReconnect(t *testing.T) {
	if err := uffdAvailable(); err != nil {
		t.Skip(err)
	}
	again := make(chan net.Conn)
	all := make([]uint64, tsmcByHand.Memory/PageSize/64)
	for i := range all {
		all[i] = ^uint64(0)
	}
	h := tsmcBy(t, all, ReceiveConfig{Reconnect: func(ctx context.Context) (net.Conn, error) { // every page dirty: each comes in stage 3
		select {
		case c := <-again:
			return c, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}})
	cfg, pages, dst, a, w, r, sent, received := tsmcByHand, h.pages, h.dst, h.a, h.w, h.r, h.sent, h.received
	for {
		rec, err := r.Next()
		if err != nil {
			t.Fatal(err)
		}
		if rec.Type == RecVerified {
			break
		}
	}
	<-sent // one writer at a time
	w.Commit(true)
	w.Flush()
	rec, err := r.Next() // the guest runs there
	if err != nil || rec.Type != RecStarted {
		t.Fatalf("after the commit: %v %v, want the destination's started", rec, err)
	}
	rec, err = r.Next() // the guest's first fault
	if err != nil || rec.Type != RecRequest {
		t.Fatalf("first request: %v %v", rec, err)
	}
	zero := make([]byte, cfg.Memory)
	w.Pages(rec.GFNs[:1], zero)
	w.Flush()
	// The guest faults on its next page; the forwarder writes the request
	// on a link this source no longer reads, then the link breaks.
	time.Sleep(300 * time.Millisecond)
	a.Close()

	// The source comes back.
	a2, b2 := net.Pipe()
	t.Cleanup(func() { a2.Close() })
	again <- b2
	w2, r2 := NewWriter(a2), NewReader(a2)
	w2.Hello(Hello{Version: ProtocolVersion, PageSize: PageSize, MemoryBytes: cfg.Memory, VCPUs: 1, Image: dst.Identity().Image, Mode: resumeMode})
	w2.Flush() // returns once the destination has read it (a pipe)
	r2.SetLimits(pages)
	recs := make(chan *Record)
	go func() {
		for {
			rec, err := r2.Next()
			if err != nil {
				close(recs)
				return
			}
			c := *rec
			c.GFNs = append([]uint64(nil), rec.GFNs...)
			recs <- &c
		}
	}()
	asked := 0
	deadline := time.After(3 * time.Second)
	for asked < 5 {
		select {
		case rec, ok := <-recs:
			if !ok {
				t.Fatalf("link closed after %d requests: %v", asked, received())
			}
			if rec.Type != RecRequest {
				t.Logf("after reconnect: %s", rec.Type)
				continue
			}
			asked++
			t.Logf("request %d after the reconnection: pages %v", asked, rec.GFNs)
			// Send what it asks for; the guest then faults on another.
			w2.Pages(rec.GFNs, zero)
			w2.Flush()
		case <-deadline:
			t.Fatalf("after the reconnection the destination asked for %d pages in 3 s, and its guest waits", asked)
		}
	}
}

// TestStage3FailureStopsGuest: a stage 3 that fails (here on a record
// the destination does not expect) stops the guest it started, and says
// so, before the pages it lacks are let go as zeros. (It ran on, 37 of
// its 64 missing pages reading as zeros; found by a review walk.)
func TestStage3FailureStopsGuest(t *testing.T) {
	if err := uffdAvailable(); err != nil {
		t.Skip(err)
	}
	cfg := memConfig{Memory: 4 << 20, Hot: 1, P: 0, Rate: 2000}
	src := newMemGuest(t, cfg, false)
	fillMixed(src.mem, 3)
	dst := newMemGuest(t, cfg, false)
	done := make(chan error, 1)
	stage3(t, cfg, src, dst, func(b net.Conn) {
		_, err := Receive(context.Background(), b, dst, ReceiveConfig{})
		done <- err
	})
	err := <-done
	t.Logf("Receive: %v", err)
	nonzero := 0
	for g := uint64(192); g < 256; g++ {
		for _, c := range src.mem[g*PageSize : (g+1)*PageSize] {
			if c != 0 {
				nonzero++
				break
			}
		}
	}
	zeroAtDst := 0
	for g := uint64(192); g < 256; g++ {
		if bytes.Count(dst.mem[g*PageSize:(g+1)*PageSize], []byte{0}) == PageSize {
			zeroAtDst++
		}
	}
	if ok, st := dst.Running(); ok {
		t.Fatalf("after a failed stage 3 the destination's guest is %s; of the 64 dirty pages (%d non-zero at the source) %d read as all zeros there", st, nonzero, zeroAtDst)
	}
	if err == nil || !strings.Contains(err.Error(), "the guest is stopped here, 64 of its pages never came") {
		t.Errorf("Receive: %v, want it to say the guest is stopped and how many pages never came", err)
	}
}

// stage3 runs a scripted TSMC source against receive, which reads its
// side of a pipe: stage 1 sends src's pages, then the state and pages
// 192-255 as dirty; the commit starts the destination's guest and stage
// 3; a record stage 3 does not expect follows.
func stage3(t *testing.T, cfg memConfig, src, dst *memGuest, receive func(net.Conn)) {
	pages := cfg.Memory / PageSize
	a, b := net.Pipe()
	go receive(b)
	t.Cleanup(func() { a.Close() })
	w, r := NewWriter(a), NewReader(a)
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		w.Hello(Hello{Version: ProtocolVersion, PageSize: PageSize, MemoryBytes: cfg.Memory, VCPUs: 1, Image: dst.Identity().Image, Mode: ModeTSMC})
		gfns := make([]uint64, 0, MaxBatch)
		for g := range pages {
			gfns = append(gfns, g)
			if len(gfns) == MaxBatch {
				w.Pages(gfns, src.mem)
				gfns = gfns[:0]
			}
		}
		state, _ := src.SaveState()
		w.State(StateGuest, state)
		dirty := make([]uint64, pages/64)
		dirty[3] = ^uint64(0) // pages 192-255 dirty
		w.Bitmap(dirty)
		w.Text(RecEnd, "")
		w.Flush()
	}()
	go func() {
		for {
			if _, err := r.Next(); err != nil {
				return
			}
		}
	}()
	<-sent // one writer at a time
	time.Sleep(300 * time.Millisecond)
	w.Commit(true)
	w.Flush()
	time.Sleep(200 * time.Millisecond)
	w.Text(RecAccept, "") // no record the destination expects in stage 3
	w.Flush()
}

// TestStage3PanicStopsGuest: a panic in stage 3 (a fault in guest memory
// that guardFaults turns into an error goes this way too) stops the guest
// it started before it goes on, as a failed stage 3 does: the pages it
// lacks would otherwise read as zeros once the region is gone (review 75).
func TestStage3PanicStopsGuest(t *testing.T) {
	if err := uffdAvailable(); err != nil {
		t.Skip(err)
	}
	cfg := memConfig{Memory: 4 << 20, Hot: 1, P: 0, Rate: 2000}
	src := newMemGuest(t, cfg, false)
	fillMixed(src.mem, 3)
	dst := newMemGuest(t, cfg, false)
	// In stage 3's loop: its guest's state, which it panicked asking
	// for, is asked aside now (TestTSMCStateAskedAside).
	var reached atomic.Bool
	stage3Read = func(*Record) {
		reached.Store(true)
		panic("a bug in stage 3")
	}
	t.Cleanup(func() { stage3Read = nil })
	panicked := make(chan any, 1)
	stage3(t, cfg, src, dst, func(b net.Conn) {
		defer func() { panicked <- recover() }()
		Receive(context.Background(), b, dst, ReceiveConfig{})
	})
	select {
	case p := <-panicked:
		if p != "a bug in stage 3" {
			t.Errorf("Receive ended with %v, want the panic to go on", p)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Receive did not end")
	}
	if !reached.Load() {
		t.Fatal("no stage 3")
	}
	if ok, st := dst.Running(); ok {
		t.Errorf("after a panic in stage 3 the destination's guest is %s", st)
	}
}

// TestCancelInStage2: a cancel accepted while TSMC's stage 2 waits for the
// destination's verdict stops the migration there: no commit goes, and the
// guest runs on here. (The commit went, the destination ran the guest, and
// the source, its context cancelled, pushed none of the dirty pages and
// kept its copy paused: the guest was lost; found by a review walk.)
func TestCancelInStage2(t *testing.T) {
	src := newMemGuest(t, lightLoad, true)
	atEnd, goOn := make(chan struct{}), make(chan struct{})
	gotCommit := make(chan bool, 1)
	addr := playDestination(t, lightLoad.Memory/PageSize, false, func(_ net.Conn, w *Writer, r *Reader) {
		close(atEnd) // stage 2 has ended
		<-goOn
		w.Verified(true, "")
		w.Flush()
		commit := false
		for {
			rec, err := r.Next()
			if err != nil {
				gotCommit <- commit
				return
			}
			commit = commit || rec.Type == RecCommit
		}
	})
	m, err := Outgoing(src, "tcp:"+addr, Config{Mode: ModeTSMC, IdleTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-atEnd:
	case <-time.After(60 * time.Second):
		t.Fatal("stage 2 never ended")
	}
	if st := m.Info().Status; st != StatusDevice {
		t.Fatalf("status %q at stage 2's end, want %q", st, StatusDevice)
	}
	cerr := m.Cancel()
	close(goOn)
	info, werr := m.Wait()
	commit := <-gotCommit
	ok, runState := src.Running()
	t.Logf("Cancel: %v; Wait: %v (%s)", cerr, werr, info.Status)
	if cerr != nil {
		t.Fatalf("Cancel in stage 2: %v, want it accepted", cerr)
	}
	if commit || !ok {
		t.Errorf("cancel accepted in stage 2, yet the commit went (%v) and the source's guest is %s", commit, runState)
	}
	if info.Status != StatusCancelled {
		t.Errorf("status %q after the cancel, want %q", info.Status, StatusCancelled)
	}
}

// faultHeld is a destination whose state, once its guest runs, is answered
// only by a vCPU not held in a fault: a test guest's state takes the lock
// its writer holds while it waits on a missing page, as a QEMU's main loop
// may wait on a device's DMA into one.
type faultHeld struct {
	*memGuest
	started atomic.Bool
}

func (g *faultHeld) Start() error {
	err := g.memGuest.Start()
	g.started.Store(true)
	return err
}

func (g *faultHeld) Waiting() (bool, string) {
	if !g.started.Load() {
		return g.memGuest.Waiting()
	}
	time.Sleep(100 * time.Millisecond) // the writer faults on a page stage 3 has yet to bring
	answer := make(chan string, 1)
	go func() { _, st := g.memGuest.Waiting(); answer <- st }()
	select {
	case st := <-answer:
		return false, st
	case <-time.After(5 * time.Second):
		return false, "no answer: the guest is held in a fault"
	}
}

// TestTSMCStateAskedAside: stage 3 asks the destination its guest's state,
// for its log, aside from the loop that brings the pages the guest faults
// on. Asked in that loop, a state held up by a fault held the loop with
// it, until the source gave up on a link where nothing moved (in CI, under
// load, TestMigrateModes/tsmc then hung for 19 minutes on its test guest).
func TestTSMCStateAskedAside(t *testing.T) {
	if err := uffdAvailable(); err != nil {
		t.Skip(err)
	}
	src := newMemGuest(t, lightLoad, true)
	dst := &faultHeld{memGuest: newMemGuest(t, lightLoad, false)}
	d := listenDestination(t, dst, ReceiveConfig{})
	info := migrateTo(t, src, d, Config{Mode: ModeTSMC, MaxBandwidth: 16 << 20, DowntimeLimit: testDowntime,
		IdleTimeout: 2 * time.Second, RecoverTimeout: time.Second})
	if !info.Pagecast.Verified || d.res.Pulled == 0 {
		t.Errorf("verified %v, %d pages pulled by the guest: want the memory verified and the guest faulting", info.Pagecast.Verified, d.res.Pulled)
	}
}

// TestPauseEnd: the end of a post-copy's pause is the nearer of two upper
// bounds, the destination's word read and the verdict's reading plus the
// time the destination says passed since it sent it, and not before the
// commit went (walk 143: read alone, the word came up to 4.6 ms late).
func TestPauseEnd(t *testing.T) {
	t0 := time.Unix(1000, 0)
	ms := func(n float64) time.Time { return t0.Add(time.Duration(n*1000+0.5) * time.Microsecond) }
	p := pauseTimes{paused: t0, verdict: ms(3), commit: ms(3.1)}
	for _, tc := range []struct {
		read  float64 // ms after the pause
		since time.Duration
		want  float64
	}{
		{8, 1100 * time.Microsecond, 4.1}, // the word read late: the destination's own count
		{4.5, 3 * time.Millisecond, 4.5},  // the verdict read late: the word's reading
		{5, 0, 3.1},                       // not before the commit
		{5, time.Hour, 5},                 // a lying destination: the word's reading bounds it
	} {
		if got := p.end(ms(tc.read), tc.since); !got.Equal(ms(tc.want)) {
			t.Errorf("read at %v ms, %v since the verdict: end %v ms after the pause, want %v", tc.read, tc.since, got.Sub(t0).Seconds()*1e3, tc.want)
		}
	}
}

// TestStartedSinceVerdict: the destination counts the time its guest took
// to start from before its verdict went, so that the source's reading of
// the verdict plus it is never before the start. Here the source reads
// the verdict 50 ms after it was written (a pipe's writer waits for its
// reader); counted from after the write, it said 0.1 ms for a start that
// came 1.9 ms after the verdict went (walk 145).
func TestStartedSinceVerdict(t *testing.T) {
	if err := uffdAvailable(); err != nil {
		t.Skip(err)
	}
	dirty := make([]uint64, tsmcByHand.Memory/PageSize/64)
	dirty[len(dirty)-1] = 1 << 63 // the last page comes in stage 3
	h := tsmcBy(t, dirty, ReceiveConfig{})
	w, r := h.w, h.r
	if rec, err := r.Next(); err != nil || rec.Type != RecAccept {
		t.Fatalf("first record: %v %v, want accept", rec, err)
	}
	<-h.sent
	const late = 50 * time.Millisecond
	time.Sleep(late) // the destination's verdict waits in the pipe
	if rec, err := r.Next(); err != nil || rec.Type != RecVerified || !rec.OK {
		t.Fatalf("after stage 2: %v %v, want a good verdict", rec, err)
	}
	w.Commit(true)
	w.Flush()
	rec, err := r.Next()
	if err != nil || rec.Type != RecStarted {
		t.Fatalf("after the commit: %v %v, want started", rec, err)
	}
	// Less what the destination took between stage 2's end and its
	// verdict (0.4 ms under the race detector); counted from after the
	// write, it said 57 µs.
	if rec.Since < late/2 {
		t.Errorf("the destination says its guest started %v after its verdict went, which waited %v to be read", rec.Since, late)
	}
}
