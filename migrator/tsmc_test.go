package migrator

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pagecast/pagecast/internal/testutil"
	"github.com/pagecast/pagecast/uffd"
	"github.com/pagecast/pagecast/vmm"
)

// TestMigrateTSMC: three-stage copy of a hotset guest over a slow link, so
// that the destination's guest touches hot pages before stage 3 has pushed
// them and they must be pulled on demand. Memory must equal the source's
// wherever the destination's guest has not written since, and no page may
// cross the wire more than twice.
func TestMigrateTSMC(t *testing.T) {
	testutil.RequiresKVM(t)
	if err := uffdAvailable(); err != nil {
		t.Skip(err)
	}
	const workload = "hotset:hot=1024,p=0.95"
	src := newGuest(t, testMemory, workload, true)
	dst := newGuest(t, testMemory, workload, false)
	dlog, err := dst.StartDirtyLog()
	if err != nil {
		t.Fatal(err)
	}
	defer dlog.Close()
	d := listenDestination(t, dst, ReceiveConfig{})
	m, err := Outgoing(src, d.uri, Config{Mode: ModeTSMC, MaxBandwidth: 16 << 20})
	if err != nil {
		t.Fatal(err)
	}
	info, err := m.Wait()
	if err != nil {
		t.Fatal(err)
	}
	<-d.done
	if d.err != nil {
		t.Fatal(d.err)
	}
	dirty := info.Pagecast.RoundPages[len(info.Pagecast.RoundPages)-1]
	t.Logf("tsmc: total %d ms, downtime %d ms, %.1f MiB (precopy %.1f, downtime %.1f, postcopy %.1f), %d dirty pages, %d pulled by the guest, %d pushed",
		info.TotalTime, info.Downtime, float64(info.RAM.Transferred)/(1<<20), float64(info.RAM.PrecopyBytes)/(1<<20),
		float64(info.RAM.DowntimeBytes)/(1<<20), float64(info.RAM.PostcopyBytes)/(1<<20), dirty, d.res.Pulled, d.res.Pushed)

	if d.res.Pulled == 0 {
		t.Error("the destination's guest never touched a page before it arrived: the on-demand path went untested")
	}
	if d.res.Pages+d.res.ZeroPages != testMemory/PageSize {
		t.Errorf("stage 1 sent %d pages, want each of the %d once", d.res.Pages+d.res.ZeroPages, testMemory/PageSize)
	}
	if d.res.Pushed != dirty {
		t.Errorf("stage 3 delivered %d pages for %d dirty ones: some crossed more than twice, or never", d.res.Pushed, dirty)
	}
	// Bytes: memory once plus the dirty set once, with record overhead.
	if limit := uint64(testMemory) + dirty*PageSize + (testMemory/PageSize+dirty)*16 + 1<<20; info.RAM.Transferred > limit {
		t.Errorf("%d bytes on the wire, more than memory + the dirty set (%d)", info.RAM.Transferred, limit)
	}

	s, _ := src.GuestStatus()
	waitProgress(t, dst, s.TotalProgress())
	assertSameMemory(t, src, dst, dlog)
	if st, _ := src.State(); st != vmm.StatePaused {
		t.Errorf("source after migration: %s", st)
	}
}

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
	testutil.RequiresKVM(t)
	if err := uffdAvailable(); err != nil {
		t.Skip(err)
	}
	const workload = "hotset:hot=1024,p=0.95"
	src := newGuest(t, testMemory, workload, true)
	dst := newGuest(t, testMemory, workload, false)
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
	m, err := Outgoing(src, p.uri, Config{Mode: ModeTSMC, MaxBandwidth: 16 << 20, IdleTimeout: 2 * time.Second})
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
	time.Sleep(200 * time.Millisecond) // some pages pushed, most not
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

	s, _ := src.GuestStatus()
	waitProgress(t, dst, s.TotalProgress())
	assertSameMemory(t, src, dst, dlog)
}
