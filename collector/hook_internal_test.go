package collector

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/pagecast/pagecast/bpf"
	"github.com/pagecast/pagecast/internal/tcgtest"
	"github.com/pagecast/pagecast/qemu"
	"github.com/pagecast/pagecast/tcg"
)

// TestTCGEventsMonotonic: the TCG hook's events count, writes less MMIO
// and out-of-range stores since the attach, neither goes back nor wraps
// below 0 when a read catches a store to MMIO counted in writes and not
// yet in io (it read some 1.8e19 from an idle guest whose only stores
// went to MMIO).
func TestTCGEventsMonotonic(t *testing.T) {
	const capacity = 64
	f := tcgtest.Area(capacity, os.Getpid())
	le := binary.LittleEndian
	path := filepath.Join(t.TempDir(), "area")
	// Slot 0 (offset 256): writes, out of range, io. The attach's read:
	// 10 stores to MMIO counted in writes only.
	le.PutUint64(f[256:], 1000)
	le.PutUint64(f[256+16:], 100)
	if err := os.WriteFile(path, f, 0o600); err != nil {
		t.Fatal(err)
	}
	a, err := tcg.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	h := &tcgHook{area: a, maxPages: capacity, base: a.Stats()}
	defer h.close()
	for _, step := range []struct {
		writes, io, want uint64
	}{
		{1000, 110, 0},  // their io counted: RAM's count is 10 below the attach's
		{1030, 110, 20}, // 30 stores to RAM since
		{1040, 110, 30},
		{1045, 110, 35},
		{1045, 115, 35}, // 5 of those were MMIO's after all: held until RAM's count passes it
		{1050, 115, 35},
		{1060, 115, 45},
	} {
		le.PutUint64(f[256:], step.writes)
		le.PutUint64(f[256+16:], step.io)
		if err := os.WriteFile(path, f, 0o600); err != nil { // the same inode: the mapping sees it
			t.Fatal(err)
		}
		st, err := h.stats()
		if err != nil {
			t.Fatal(err)
		}
		if st.Events != step.want || st.Events > math.MaxInt64 {
			t.Errorf("writes %d, io %d: events %d, want %d", step.writes, step.io, st.Events, step.want)
		}
	}
}

// TestCheckPIDThread: --pid given a thread's id (a vCPU's thread-id, as
// query-cpus-fast shows it) is refused, naming the process: /proc has the
// thread under its own id too, so it passed, and the hooks, which match
// events by process, recorded nothing.
func TestCheckPIDThread(t *testing.T) {
	// A goroutine locked to a thread; while one holds the process's
	// first thread, the next cannot have it.
	tids := make(chan int)
	stop := make(chan struct{})
	defer close(stop)
	tid := os.Getpid()
	for try := 0; tid == os.Getpid() && try < 4; try++ {
		go func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			tids <- unix.Gettid()
			<-stop
		}()
		tid = <-tids
	}
	if tid == os.Getpid() {
		t.Skip("no thread but the process's first")
	}
	err := checkPID(tid, []vcpu{{ThreadID: tid}})
	if want := fmt.Sprintf("--pid %d is a thread of process %d, not a process: give --pid %d", tid, os.Getpid(), os.Getpid()); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("checkPID(a thread id): %v, want %q", err, want)
	}
	if err := checkPID(os.Getpid(), []vcpu{{ThreadID: tid}}); err != nil {
		t.Errorf("checkPID(the process, its thread): %v", err)
	}
}

// TestBPFLateMark: a program run that loaded epoch 5 and stored its page's
// history only after epoch 5 was read (its CPU stolen past the grace
// period) marks the page in 5; the read of 6 reports it, once, and a page
// both read in 5 and untouched since is not reported again.
func TestBPFLateMark(t *testing.T) {
	mark := func(e uint32) bpf.PageState { return bpf.PageState{State: 1<<16 | uint64(e&0xffff)} }
	h := &bpfHook{states: make([]bpf.PageState, 130)}
	h.states[3] = mark(5)
	if got := h.collect(5, nil); !slices.Equal(got, []uint64{3}) {
		t.Fatalf("epoch 5: %v, want [3]", got)
	}
	h.states[129] = mark(5) // late: its run loaded 5 before the read of 5
	h.states[64] = mark(6)
	if got := h.collect(6, nil); !slices.Equal(got, []uint64{64, 129}) {
		t.Fatalf("epoch 6: %v, want [64 129] (129 written late in 5)", got)
	}
	if got := h.collect(7, nil); len(got) != 0 {
		t.Fatalf("epoch 7: %v, want none", got)
	}
	if n := h.late.Load(); n != 1 {
		t.Errorf("late %d, want 1", n)
	}
}

// TestTCGHookAddresses: where QEMU's plugin API names pages by
// guest-physical frame (QEMU 8.2), the TCG hook turns them into RAM pages,
// so that a trace names a TCG guest's pages by offset in RAM whatever the
// QEMU: a 3.5 GiB pc's frame at 4 GiB is page 3 GiB, a frame in the hole
// below 4 GiB none (review 55: the trace claimed the hole as RAM).
func TestTCGHookAddresses(t *testing.T) {
	const memory = 3584 << 20
	layout := qemu.MachineLayout("pc", memory)
	capacity := layout.Frames()
	f := tcgtest.Area(capacity, os.Getpid())
	for _, frame := range []uint64{5, 0xd0000, 0x100000} { // RAM, the hole, 4 GiB
		f[tcg.HeaderSize+capacity+frame] = 1 // epoch 1's buffer
	}
	path := filepath.Join(t.TempDir(), "area")
	if err := os.WriteFile(path, f, 0o600); err != nil {
		t.Fatal(err)
	}
	a, err := tcg.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	h := &tcgHook{area: a, maxPages: memory / 4096, layout: &layout, base: a.Stats()}
	defer h.close()
	got, err := h.pages(1, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := []uint64{5, 0xc0000}; !slices.Equal(got, want) {
		t.Errorf("pages %#x, want %#x", got, want)
	}
	if h.beyond.Load() != 1 {
		t.Errorf("%d pages counted beyond RAM, want 1 (the hole's)", h.beyond.Load())
	}
}
