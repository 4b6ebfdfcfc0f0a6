package migrator

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pagecast/pagecast/bitmap"
)

// MeasurePageRate migrates a copy of n of g's pages, spread evenly over
// its memory (those in holes of its memory file left holes), from this
// process to itself on loopback with pre-copy and no bandwidth cap, and
// returns the pages a second that took, and the bytes a second it wrote
// to the wire: how fast the engine's own path —
// reading each page, the wire, the receiver writing it into memory it has
// not touched before, the checksums — moves pages on this host as it is
// loaded now, with both ends on it. A simulated migration whose
// destination runs on this host too charges its pages at that rate
// besides the link (SimConfig.PageRate): on two cores beside a TCG guest,
// the rate, not a 128 MiB/s link, is what a 2 GiB migration waited for.
func MeasurePageRate(ctx context.Context, g Guest, n int) (pages, bytes float64, err error) {
	total := g.MemoryBytes() / PageSize
	if n <= 0 || total == 0 {
		return 0, 0, errors.New("measure the page rate: no pages")
	}
	n = int(min(uint64(n), total))
	var holes *bitmap.Bitmap
	if h, err := Holes(g); err == nil {
		holes = h
	}
	src, err := newMemfdVM("pagecast-rate-src", n)
	if err != nil {
		return 0, 0, fmt.Errorf("measure the page rate: %w", err)
	}
	defer src.close()
	dst, err := newMemfdVM("pagecast-rate-dst", n)
	if err != nil {
		return 0, 0, fmt.Errorf("measure the page rate: %w", err)
	}
	defer dst.close()
	mem := g.Memory()
	for i := range n {
		p := uint64(i) * total / uint64(n)
		if holes != nil && holes.Has(p) {
			continue
		}
		copy(src.mem[i*PageSize:(i+1)*PageSize], mem[p*PageSize:(p+1)*PageSize])
	}
	l, err := Listen("tcp:127.0.0.1:0", nil)
	if err != nil {
		return 0, 0, fmt.Errorf("measure the page rate: %w", err)
	}
	defer l.Close()
	received := ReceiveOnce(l, dst, ReceiveConfig{})
	start := time.Now()
	m, err := Outgoing(src, "tcp:"+l.Addr().String(), Config{Mode: ModePrecopy})
	if err != nil {
		return 0, 0, fmt.Errorf("measure the page rate: %w", err)
	}
	stop := context.AfterFunc(ctx, m.abort)
	defer stop()
	info, err := m.Wait()
	if err != nil {
		l.Close() // the receiver may wait for a source that never came
	}
	if rerr := <-received; err == nil && rerr != nil {
		err = rerr
	}
	if err != nil {
		return 0, 0, fmt.Errorf("measure the page rate: %w", err)
	}
	elapsed := time.Since(start)
	if info.Status != StatusCompleted || elapsed <= 0 {
		return 0, 0, fmt.Errorf("measure the page rate: the migration ended %s", info.Status)
	}
	return float64(n) / elapsed.Seconds(), float64(info.RAM.Transferred) / elapsed.Seconds(), nil
}

// memfdVM is an idle guest in a memfd, both ends of MeasurePageRate's
// migration: a Guest that writes nothing and a Destination that runs
// nothing.
type memfdVM struct {
	fd  int
	mem []byte
}

func newMemfdVM(name string, pages int) (*memfdVM, error) {
	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("memfd: %w", err)
	}
	if err := unix.Ftruncate(fd, int64(pages)*PageSize); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("size the memfd: %w", err)
	}
	mem, err := unix.Mmap(fd, 0, pages*PageSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("map the memfd: %w", err)
	}
	return &memfdVM{fd: fd, mem: mem}, nil
}

func (v *memfdVM) close() {
	unix.Munmap(v.mem)
	unix.Close(v.fd)
}

func (v *memfdVM) MemoryBytes() uint64     { return uint64(len(v.mem)) }
func (v *memfdVM) Memory() []byte          { return v.mem }
func (v *memfdVM) MemoryFD() int           { return v.fd }
func (v *memfdVM) Identity() Identity      { return Identity{VCPUs: 1} }
func (v *memfdVM) Running() (bool, string) { return true, "running" }
func (v *memfdVM) StartDirtyLog() (DirtyLog, error) {
	return idleLog{pages: uint64(len(v.mem)) / PageSize}, nil
}
func (v *memfdVM) Pause() error               { return nil }
func (v *memfdVM) Resume() error              { return nil }
func (v *memfdVM) Throttle() int              { return 0 }
func (v *memfdVM) SetThrottle(int) error      { return nil }
func (v *memfdVM) SaveState() ([]byte, error) { return nil, nil }
func (v *memfdVM) EarlyPages(*bitmap.Bitmap) []uint64 {
	return nil
}
func (v *memfdVM) Waiting() (bool, string) { return true, "waiting" }
func (v *memfdVM) Restore([]byte) error    { return nil }
func (v *memfdVM) Start() error            { return nil }
func (v *memfdVM) Stop() error             { return nil }

// idleLog is the dirty log of a guest that writes nothing.
type idleLog struct{ pages uint64 }

func (l idleLog) Harvest() (*bitmap.Bitmap, error) { return bitmap.New(l.pages), nil }
func (idleLog) Close() error                       { return nil }
