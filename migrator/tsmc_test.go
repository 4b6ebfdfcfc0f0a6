package migrator

import (
	"context"
	"net"
	"strings"
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
	load := lightLoad
	load.Memory = 8 << 20
	src := newMemGuest(t, load, true)
	dst := newMemGuest(t, load, false)
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
	p.cut()
	info, err := m.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if err := <-received; err != nil {
		t.Fatal(err)
	}
	t.Logf("tsmc with a cut link: %s; total %d ms, %.1f MiB; destination pulled %d, filled %d",
		info.Pagecast.StopReason, info.TotalTime, float64(info.RAM.Transferred)/(1<<20), res.Pulled, res.Pushed)
	if !strings.Contains(info.Pagecast.StopReason, "1 reconnections") {
		t.Errorf("the source did not reconnect once: %s", info.Pagecast.StopReason)
	}
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
