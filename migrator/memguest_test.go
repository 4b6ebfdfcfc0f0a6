package migrator

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/pagecast/pagecast/bitmap"
)

// memGuest is the tests' virtual machine: no CPU, but RAM (a shared memfd
// mapping, as a monitor's, so that TSMC's destination can put it under
// userfaultfd) and a writer goroutine that dirties it in a hot-set pattern
// and tracks every page it writes. It implements Guest and Destination, so
// every mode runs without /dev/kvm.
//
// The writer's sequence is its state: write number n (from 1) puts the
// value n at an offset of a page both drawn from a PCG generator, a page of
// the hot set with probability P, else any page. SaveState is the count and
// the generator, so a destination restored from it writes on exactly where
// the source stopped.
type memGuest struct {
	cfg   memConfig
	mem   []byte
	fd    int // the memfd mem maps
	image [32]byte
	// takes and refuses go into Identity: other images a destination
	// takes, and those it refuses with why.
	takes   [][32]byte
	refuses map[[32]byte]string
	// kernelWrites: the writer stores through process_vm_writev, so that a
	// write to a page absent under userfaultfd (TSMC's stage 3) waits in a
	// system call, not in Go code the runtime may be unable to stop (see
	// package uffd). Destinations write so.
	kernelWrites bool
	throttle     atomic.Int32
	// throttled is the writer's time the throttle withheld, and stalled
	// the time it spent in stores that took over a millisecond (waiting
	// for a page post-copy had not brought yet), both while it ran.
	throttled, stalled time.Duration
	// onStart, if set, runs in Start before the writer does (with the
	// guest's memory as the migration left it).
	onStart func()
	// restoreErr, if set, makes Restore fail.
	restoreErr error
	// pauseTakes is how long Pause takes before the guest stops (a QMP
	// stop on a loaded host): it runs, writing, until then.
	pauseTakes time.Duration

	mu    sync.Mutex
	cond  *sync.Cond
	state string
	// pausedAt is when the running guest was last paused, startedAt when
	// it was started (a destination's).
	pausedAt, startedAt time.Time
	seq                 uint64
	pcg                 *rand.PCG
	rng                 *rand.Rand
	logs                map[*memLog]struct{}
	done                chan struct{} // closed when the writer ends
}

// memConfig is a memGuest's size and workload.
type memConfig struct {
	Memory uint64  // bytes of RAM
	Hot    uint64  // pages in the hot set, which starts a quarter into memory
	P      float64 // share of the writes that go to the hot set
	Rate   float64 // writes per second, unthrottled
	// Sweep: write number n goes to page n mod the memory's pages
	// (pagecast's sweep workload), not to the hot set or at random.
	Sweep bool
	// StartTakes is how long Start takes before the guest runs (a
	// destination's start on a loaded host); PauseLate how long Pause
	// returns after the guest has stopped (the engine's thread waiting
	// for a CPU).
	StartTakes, PauseLate time.Duration
}

// The workloads of the tests. light converges in plain pre-copy at 32
// MiB/s and a 100 ms downtime limit (its hot set is a third of what the
// link moves in it); heavy never does at 16 MiB/s (it rewrites a hot set
// bigger than that within every round) unless the guest is slowed.
var (
	lightLoad = memConfig{Memory: 16 << 20, Hot: 256, P: 0.9, Rate: 20000}
	heavyLoad = memConfig{Memory: 8 << 20, Hot: 768, P: 0.95, Rate: 50000}
)

const (
	memPrelaunch = "prelaunch"
	memRunning   = "running"
	memPaused    = "paused"
	memClosed    = "closed"
)

var (
	_ PauseMarker   = (*memGuest)(nil)
	_ Guest         = (*memGuest)(nil)
	_ Destination   = (*memGuest)(nil)
	_ PausedStarter = (*memGuest)(nil)
)

// newMemGuest makes a guest of cfg. A source (start) gets its memory filled
// with a mix of contents and its writer running; a destination waits, its
// memory zero.
func newMemGuest(t testing.TB, cfg memConfig, start bool) *memGuest {
	t.Helper()
	fd, err := unix.MemfdCreate("pagecast-test-guest", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Ftruncate(fd, int64(cfg.Memory)); err != nil {
		t.Fatal(err)
	}
	mem, err := unix.Mmap(fd, 0, int(cfg.Memory), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	g := &memGuest{cfg: cfg, mem: mem, image: sha256.Sum256(fmt.Appendf(nil, "memguest %+v", cfg)),
		kernelWrites: !start, state: memPrelaunch, pcg: rand.NewPCG(1, 2), logs: map[*memLog]struct{}{}}
	g.rng = rand.New(g.pcg)
	g.cond = sync.NewCond(&g.mu)
	g.fd = fd // its holes are read as zeros (MemoryFile)
	t.Cleanup(func() {
		g.close()
		unix.Munmap(mem)
		unix.Close(fd)
	})
	if start {
		fillMixed(mem, 7)
		if err := g.Start(); err != nil {
			t.Fatal(err)
		}
	}
	return g
}

// fillMixed gives memory contents of several classes, as a real guest's:
// zero pages, pages of few distinct words, text-like pages and random ones.
func fillMixed(mem []byte, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, seed))
	for p := 0; p < len(mem)/PageSize; p++ {
		page := mem[p*PageSize : (p+1)*PageSize]
		switch c := rng.IntN(10); {
		case c < 3: // zero
		case c < 5:
			w := [2]uint64{rng.Uint64(), rng.Uint64()}
			for i := 0; i < PageSize; i += 8 {
				binary.LittleEndian.PutUint64(page[i:], w[(i/64)%2])
			}
		case c < 8:
			const letters = "etaoin shrdlu\n"
			for i := range page {
				page[i] = letters[rng.IntN(len(letters))]
			}
		default:
			for i := 0; i < PageSize; i += 8 {
				binary.LittleEndian.PutUint64(page[i:], rng.Uint64())
			}
		}
	}
}

func (g *memGuest) MemoryBytes() uint64 { return g.cfg.Memory }
func (g *memGuest) Memory() []byte      { return g.mem }
func (g *memGuest) MemoryFD() int       { return g.fd }
func (g *memGuest) Identity() Identity {
	return Identity{VCPUs: 1, Image: g.image, Takes: g.takes, Refuses: g.refuses}
}

func (g *memGuest) Running() (bool, string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.state == memRunning, g.state
}

func (g *memGuest) Waiting() (bool, string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.state == memPrelaunch, g.state
}

func (g *memGuest) Start() error { return g.start(memRunning) }

// StartPaused starts the guest paused (PausedStarter): its writer waits
// for Resume.
func (g *memGuest) StartPaused() error { return g.start(memPaused) }

func (g *memGuest) start(state string) error {
	time.Sleep(g.cfg.StartTakes)
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.state != memPrelaunch {
		return fmt.Errorf("start: guest is %s", g.state)
	}
	if g.onStart != nil {
		g.onStart()
	}
	g.state, g.startedAt = state, time.Now()
	g.done = make(chan struct{})
	go g.write(g.done)
	return nil
}

func (g *memGuest) Stop() error { return g.Pause() }

func (g *memGuest) Pause() error {
	time.Sleep(g.pauseTakes)
	defer time.Sleep(g.cfg.PauseLate)
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.state != memRunning && g.state != memPaused {
		return fmt.Errorf("pause: guest is %s", g.state)
	}
	if g.state == memRunning {
		g.pausedAt = time.Now()
	}
	g.state = memPaused // the writer holds mu while it writes: none is under way
	return nil
}

// PausedAt is when the guest last stopped (migrator.PauseMarker).
func (g *memGuest) PausedAt() time.Time {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.pausedAt
}

func (g *memGuest) Resume() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.state != memRunning && g.state != memPaused {
		return fmt.Errorf("resume: guest is %s", g.state)
	}
	g.state = memRunning
	g.cond.Broadcast()
	return nil
}

func (g *memGuest) close() {
	g.mu.Lock()
	g.state = memClosed
	g.cond.Broadcast()
	done := g.done
	g.mu.Unlock()
	if done != nil {
		<-done
	}
}

func (g *memGuest) Throttle() int { return int(g.throttle.Load()) }

func (g *memGuest) SetThrottle(pct int) error {
	if pct < 0 || pct > 99 {
		return fmt.Errorf("throttle %d%%: want 0 to 99", pct)
	}
	g.throttle.Store(int32(pct))
	return nil
}

// memStateMagic starts a memGuest's saved state.
var memStateMagic = []byte("MEMGUEST")

func (g *memGuest) SaveState() ([]byte, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.state == memRunning {
		return nil, errors.New("save state: guest is running")
	}
	st, err := g.pcg.MarshalBinary()
	if err != nil {
		return nil, err
	}
	return append(binary.LittleEndian.AppendUint64(bytes.Clone(memStateMagic), g.seq), st...), nil
}

func (g *memGuest) Restore(state []byte) error {
	if g.restoreErr != nil {
		return g.restoreErr
	}
	rest, ok := bytes.CutPrefix(state, memStateMagic)
	if !ok || len(rest) < 8 {
		return fmt.Errorf("restore: %d bytes are not a test guest's state", len(state))
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.state != memPrelaunch {
		return fmt.Errorf("restore: guest is %s", g.state)
	}
	if err := g.pcg.UnmarshalBinary(rest[8:]); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	g.seq = binary.LittleEndian.Uint64(rest)
	return nil
}

func (g *memGuest) EarlyPages(*bitmap.Bitmap) []uint64 { return nil }

// seqNow is the number of writes done.
func (g *memGuest) seqNow() uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.seq
}

// nextWrite draws write number seq: its page and byte offset.
func nextWrite(rng *rand.Rand, cfg memConfig, seq uint64) (page, off uint64) {
	pages := cfg.Memory / PageSize
	if cfg.Sweep {
		return seq % pages, rng.Uint64N(PageSize/8) * 8
	}
	if rng.Float64() < cfg.P {
		page = pages/4 + rng.Uint64N(cfg.Hot)
	} else {
		page = rng.Uint64N(pages)
	}
	return page, rng.Uint64N(PageSize/8) * 8
}

// write is the writer: every millisecond or so it does the writes due at
// Rate, less the throttle's share, while the guest runs.
func (g *memGuest) write(done chan struct{}) {
	defer close(done)
	last := time.Now()
	credit := 0.0
	for {
		time.Sleep(time.Millisecond)
		g.mu.Lock()
		for g.state == memPaused {
			g.cond.Wait()
			last = time.Now()
		}
		if g.state == memClosed {
			g.mu.Unlock()
			return
		}
		now := time.Now()
		share := 1 - float64(g.throttle.Load())/100
		g.throttled += time.Duration(float64(now.Sub(last)) * (1 - share))
		credit = min(credit+now.Sub(last).Seconds()*g.cfg.Rate*share, g.cfg.Rate/20) // no catching up after a stall
		last = now
		for ; credit >= 1; credit-- {
			g.seq++
			page, off := nextWrite(g.rng, g.cfg, g.seq)
			t0 := time.Now()
			g.store(page*PageSize+off, g.seq)
			if d := time.Since(t0); d > time.Millisecond {
				g.stalled += d
			}
			for l := range g.logs {
				l.set.Set(page)
			}
		}
		g.mu.Unlock()
	}
}

// slowed is the writer's time that the throttle withheld and that it
// stalled on missing pages.
func (g *memGuest) slowed() (throttled, stalled time.Duration) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.throttled, g.stalled
}

// store writes v at byte addr of memory.
func (g *memGuest) store(addr, v uint64) {
	if !g.kernelWrites {
		binary.LittleEndian.PutUint64(g.mem[addr:addr+8], v)
		return
	}
	var buf [8]byte
	binary.LittleEndian.PutUint64(buf[:], v)
	local := []unix.Iovec{{Base: &buf[0], Len: 8}}
	remote := []unix.RemoteIovec{{Base: uintptr(unsafe.Pointer(&g.mem[addr])), Len: 8}}
	if _, err := unix.ProcessVMWritev(os.Getpid(), local, remote, 0); err != nil {
		panic(fmt.Sprintf("test guest: write at %#x: %v", addr, err))
	}
}

// memLog is a dirty log of a memGuest.
type memLog struct {
	g   *memGuest
	set *bitmap.Bitmap
}

func (g *memGuest) StartDirtyLog() (DirtyLog, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	l := &memLog{g: g, set: bitmap.New(g.cfg.Memory / PageSize)}
	g.logs[l] = struct{}{}
	return l, nil
}

func (l *memLog) Harvest() (*bitmap.Bitmap, error) {
	l.g.mu.Lock()
	defer l.g.mu.Unlock()
	if _, open := l.g.logs[l]; !open {
		return nil, errors.New("harvest: dirty log is closed")
	}
	out := l.set
	l.set = bitmap.New(l.g.cfg.Memory / PageSize)
	return out, nil
}

func (l *memLog) Close() error {
	l.g.mu.Lock()
	defer l.g.mu.Unlock()
	delete(l.g.logs, l)
	return nil
}

// waitWrites waits until g has done more than from writes.
func waitWrites(t testing.TB, g *memGuest, from uint64) uint64 {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if n := g.seqNow(); n > from {
			return n
		}
		if time.Now().After(deadline) {
			t.Fatalf("guest writes stuck at %d", from)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
