package qemuguest

import (
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/pagecast/pagecast/collector"
	"github.com/pagecast/pagecast/internal/tcgtest"
	"github.com/pagecast/pagecast/qemu"
	"github.com/pagecast/pagecast/tcg"
)

// replyOK is a monitor that answers every command with an empty return.
type replyOK struct{ sent []string }

func (r *replyOK) Run(cmd []byte) ([]byte, error) {
	r.sent = append(r.sent, string(cmd))
	return []byte(`{"return":{}}`), nil
}

// TestLateMarkAfterPause plays the plugin's mark (load the epoch, then
// mark that epoch's buffer) for a vCPU thread preempted between the two
// across a harvest, its mark landing once the harvest has read that
// buffer: the migration's last harvest, after the pause, must still have
// the page (it had neither harvest's: the destination kept the page as the
// round before sent it). While the guest runs, a harvest leaves the open
// epoch's marks for the next.
func TestLateMarkAfterPause(t *testing.T) {
	const capacity = 1024
	path, plug := pluginArea(t, capacity)
	epoch := func() uint32 { return atomic.LoadUint32((*uint32)(unsafe.Pointer(&plug[24]))) }
	mark := func(e uint32, page uint64) { plug[tcg.HeaderSize+uint64(e&1)*capacity+page] = 1 }

	a, err := tcg.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	a.SetEpoch(1)
	l := &tcgLog{area: a, epoch: 1, ramPages: capacity}
	defer l.Close()
	mon := &replyOK{}
	s := &Source{vm: vm{mon: mon}, tcgLog: l}

	// Running: a mark in the open epoch waits for the harvest that closes it.
	mark(epoch(), 5)
	h, err := l.Harvest()
	if err != nil {
		t.Fatal(err)
	}
	mark(epoch(), 6)
	if !h.Has(5) || h.Has(6) {
		t.Errorf("harvest while running: pages 5 %v, 6 %v; want 5 only", h.Has(5), h.Has(6))
	}

	const late = 77
	// The store to 77 is done, its mark has loaded the epoch, and the
	// thread is preempted over a pre-copy round's harvest.
	e := epoch()
	if _, err := l.Harvest(); err != nil {
		t.Fatal(err)
	}
	if err := s.Pause(); err != nil {
		t.Fatal(err)
	}
	mark(e, late) // the thread finishes its mark before QEMU's stop returns
	h, err = l.Harvest()
	if err != nil {
		t.Fatal(err)
	}
	if !h.Has(late) {
		t.Errorf("the last harvest, after the pause, lacks page %d, written before it: the destination keeps it stale", late)
	}
	if err := s.Resume(); err != nil {
		t.Fatal(err)
	}
	mark(epoch()+1, 9) // in the buffer the next harvest opens
	if h, err = l.Harvest(); err != nil {
		t.Fatal(err)
	} else if h.Has(9) {
		t.Error("resumed, a harvest took the open epoch's marks")
	}
	if len(mon.sent) != 2 {
		t.Errorf("monitor got %q, want stop and cont", mon.sent)
	}
}

// fakeEpochs hands out epochs of the given pages, with the drop counts set.
type fakeEpochs struct {
	pages   []uint64
	dropped map[string]uint64
}

func (f *fakeEpochs) CloseEpoch() (collector.Epoch, error) {
	return collector.Epoch{Pages: f.pages}, nil
}
func (f *fakeEpochs) Stats() (collector.Stats, error) {
	return collector.Stats{Dropped: maps.Clone(f.dropped)}, nil
}
func (f *fakeEpochs) Close() error { return nil }

// TestKVMLogLostWrites: writes the eBPF hooks saw and could not place (a
// memory slot not found, a page's history lost to contention) are pages
// of RAM the migration cannot name, so the harvest that learns of them
// says every page is dirty; writes past RAM (out_of_range: the VGA's
// memory, the firmware's) do not.
func TestKVMLogLostWrites(t *testing.T) {
	f := &fakeEpochs{pages: []uint64{2, 5}, dropped: map[string]uint64{"out_of_range": 0, "contended": 0}}
	l := &kvmLog{col: f, layout: qemu.SplitLayout(100*4096, 100*4096)}
	harvest := func() uint64 {
		t.Helper()
		b, err := l.Harvest()
		if err != nil {
			t.Fatal(err)
		}
		return b.Count()
	}
	if n := harvest(); n != 2 {
		t.Fatalf("no drops: %d pages, want 2", n)
	}
	f.dropped["out_of_range"] = 40
	if n := harvest(); n != 2 {
		t.Fatalf("writes past RAM dropped: %d pages, want 2", n)
	}
	f.dropped["contended"] = 1
	if n := harvest(); n != 100 {
		t.Fatalf("a write lost to contention: %d pages, want all 100", n)
	}
	if n := harvest(); n != 2 {
		t.Fatalf("no new loss: %d pages, want 2", n)
	}
	f.dropped["slot_unknown"] = 3
	if n := harvest(); n != 100 {
		t.Fatalf("writes to an unknown slot: %d pages, want all 100", n)
	}
}

// TestTCGLogAddresses: where QEMU's plugin API names pages by
// guest-physical frame (QEMU 8.2), the TCG dirty log maps them through the
// guest's layout: a 3.5 GiB pc's frame at 4 GiB is its RAM page at 3 GiB,
// and a frame in the hole below 4 GiB is no page; under QEMU 7.2's offsets
// the same marks are pages 3.25 GiB into RAM and 4 GiB in, past it
// (review 54: QEMU 8.2's writes above 4 GiB were dropped).
func TestTCGLogAddresses(t *testing.T) {
	const memory = 3584 << 20
	layout := qemu.MachineLayout("pc", memory)
	capacity := layout.Frames()
	path, plug := pluginArea(t, capacity)
	epoch := func() uint32 { return atomic.LoadUint32((*uint32)(unsafe.Pointer(&plug[24]))) }
	mark := func(page uint64) { plug[tcg.HeaderSize+uint64(epoch()&1)*capacity+page] = 1 }
	for _, tc := range []struct {
		layout *qemu.Layout
		want   []uint64
	}{
		{&layout, []uint64{5, 0xc0000}}, // frame 4 GiB is RAM page 3 GiB; the hole's frame is none
		{nil, []uint64{5, 0xd0000}},     // offsets: 3.25 GiB into RAM; 4 GiB is past it
	} {
		a, err := tcg.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		a.SetEpoch(1)
		l := &tcgLog{area: a, epoch: 1, ramPages: memory / 4096, layout: tc.layout}
		mark(5)
		mark(0xd0000)  // 3.25 GiB: in the hole below 4 GiB
		mark(0x100000) // 4 GiB
		h, err := l.Harvest()
		if err != nil {
			t.Fatal(err)
		}
		if got := h.List(); !slices.Equal(got, tc.want) {
			t.Errorf("layout %v: pages %#x, want %#x", tc.layout != nil, got, tc.want)
		}
		l.Close()
	}
}

// pluginArea writes a plugin area of capacity pages for this process to a
// file and maps it as the plugin does; the mapping goes when the test
// ends.
func pluginArea(t *testing.T, capacity uint64) (path string, plug []byte) {
	t.Helper()
	f := tcgtest.Area(capacity, os.Getpid())
	path = filepath.Join(t.TempDir(), "area")
	if err := os.WriteFile(path, f, 0o600); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Open(path, unix.O_RDWR, 0) // the plugin's own mapping
	if err != nil {
		t.Fatal(err)
	}
	plug, err = unix.Mmap(fd, 0, len(f), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	unix.Close(fd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(plug) })
	return path, plug
}
