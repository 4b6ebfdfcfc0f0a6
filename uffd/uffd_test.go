package uffd

import (
	"bytes"
	"encoding/binary"
	"errors"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// newMemfd maps size bytes of a fresh memfd shared, as vmm maps guest RAM,
// and fills every page with pattern.
func newMemfd(t testing.TB, size int) []byte {
	t.Helper()
	fd, err := unix.MemfdCreate("uffd-test", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatalf("memfd_create: %v", err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Ftruncate(fd, int64(size)); err != nil {
		t.Fatalf("ftruncate: %v", err)
	}
	mem, err := unix.Mmap(fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatalf("mmap: %v", err)
	}
	t.Cleanup(func() { unix.Munmap(mem) })
	for p := range size / PageSize {
		copy(mem[p*PageSize:], pattern(uint64(p)))
	}
	return mem
}

// pattern is a page's test content: no zero word, different in every page.
func pattern(p uint64) []byte {
	b := make([]byte, PageSize)
	for w := range uint64(PageSize / 8) {
		binary.LittleEndian.PutUint64(b[w*8:], p<<32|w|1<<63)
	}
	return b
}

// register registers mem, skipping the test where userfaultfd is missing.
// Its cleanup runs before those of mem's mapping, registered earlier.
func register(t testing.TB, mem []byte) *Region {
	t.Helper()
	r, err := Register(mem)
	if errors.Is(err, errUnavailable) {
		t.Skipf("needs userfaultfd: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return r
}

func page(mem []byte, p uint64) []byte { return mem[p*PageSize : (p+1)*PageSize] }

// touch reads one byte with a plain load: a fault from user mode. It is
// a separate function so the load sits at a point where the Go runtime can
// preempt the blocked goroutine (see the package comment).
//
//go:noinline
func touch(b []byte) byte { return b[0] }

// readThroughKernel copies b into a pipe and back, so the kernel, not this
// thread's own load, touches b: a fault from kernel mode inside a system
// call, the way KVM touches guest memory.
func readThroughKernel(b []byte) ([]byte, error) {
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC); err != nil {
		return nil, err
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	if _, err := unix.Write(fds[1], b); err != nil {
		return nil, err
	}
	out := make([]byte, len(b))
	n, err := unix.Read(fds[0], out)
	return out[:n], err
}

// TestFillOnDemand drops pages of plain shared memory and serves the faults
// of a reader blocked on one, once with each kind of access.
func TestFillOnDemand(t *testing.T) {
	for _, tc := range []struct {
		name string
		read func(b []byte) ([]byte, error)
	}{
		{"user load", func(b []byte) ([]byte, error) { touch(b); return bytes.Clone(b), nil }},
		{"kernel copy", readThroughKernel},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mem := newMemfd(t, 16<<20)
			r := register(t, mem)
			dropped := []uint64{7, 3, 4, 5, 100, 2000, 4095, 4, 3} // runs 3-5, duplicates
			if err := r.Drop(dropped); err != nil {
				t.Fatal(err)
			}
			want := uint64(7)
			if got := r.Missing(); got != want {
				t.Fatalf("Missing after Drop = %d, want %d", got, want)
			}

			// A page never dropped reads at once, without a fault.
			if got := touch(page(mem, 6)); got != pattern(6)[0] {
				t.Fatalf("page 6 reads %#x, want %#x", got, pattern(6)[0])
			}
			if !bytes.Equal(page(mem, 2001), pattern(2001)) {
				t.Fatal("page 2001, never dropped, changed")
			}

			// A reader of a dropped page blocks until the handler fills it.
			type result struct {
				b   []byte
				err error
			}
			done := make(chan result, 1)
			go func() {
				b, err := tc.read(page(mem, 100))
				done <- result{b, err}
			}()
			select {
			case p := <-r.Faults():
				if p != 100 {
					t.Fatalf("fault on page %d, want 100 (or a fault on a page not dropped)", p)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("no fault reported for the reader of dropped page 100")
			}
			select {
			case <-done:
				t.Fatal("the reader of page 100 went on before the page was filled")
			case <-time.After(50 * time.Millisecond):
			}
			if err := r.Fill(100, pattern(100)); err != nil {
				t.Fatal(err)
			}
			select {
			case res := <-done:
				if res.err != nil {
					t.Fatal(res.err)
				}
				if !bytes.Equal(res.b, pattern(100)) {
					t.Fatal("the reader of page 100 saw other content than was filled")
				}
			case <-time.After(5 * time.Second):
				t.Fatal("the reader of page 100 is still blocked after Fill")
			}
			if got := r.Missing(); got != want-1 {
				t.Fatalf("Missing after filling page 100 = %d, want %d", got, want-1)
			}

			// Present pages, filled or never dropped, answer ErrPresent and
			// leave the count alone.
			for _, p := range []uint64{100, 6} {
				if err := r.Fill(p, pattern(p)); !errors.Is(err, ErrPresent) {
					t.Errorf("Fill of present page %d: %v, want ErrPresent", p, err)
				}
			}
			want--
			for _, p := range []uint64{3, 4, 5, 7, 2000, 4095} {
				if err := r.Fill(p, pattern(p)); err != nil {
					t.Fatal(err)
				}
				want--
				if got := r.Missing(); got != want {
					t.Fatalf("Missing after filling page %d = %d, want %d", p, got, want)
				}
			}
			for p := range uint64(len(mem) / PageSize) {
				if !bytes.Equal(page(mem, p), pattern(p)) {
					t.Fatalf("page %d differs from its pattern after all fills", p)
				}
			}
			// Duplicates may still come; anything else is a fault on a page
			// never dropped.
			for {
				select {
				case p := <-r.Faults():
					if p != 100 {
						t.Errorf("fault reported on page %d", p)
					}
					continue
				default:
				}
				break
			}
		})
	}
}

func TestBadArguments(t *testing.T) {
	mem := newMemfd(t, 1<<20)
	for _, tc := range []struct {
		name string
		mem  []byte
	}{
		{"empty", mem[:0]},
		{"unaligned address", mem[1 : PageSize+1]},
		{"partial page", mem[:PageSize+1]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if r, err := Register(tc.mem); err == nil {
				r.Close()
				t.Fatal("Register succeeded")
			} else {
				t.Log(err)
			}
		})
	}

	r := register(t, mem)
	if err := r.Drop([]uint64{1, 256}); err == nil {
		t.Error("Drop beyond the region succeeded")
	}
	if r.Missing() != 0 {
		t.Errorf("a failed Drop left Missing at %d", r.Missing())
	}
	if err := r.Fill(256, pattern(256)); err == nil {
		t.Error("Fill beyond the region succeeded")
	}
	if err := r.Fill(1, pattern(1)[:100]); err == nil {
		t.Error("Fill of a short page succeeded")
	}
}

// TestCloseWithPagesAbsent closes a region while a reader is blocked on a
// page never filled: Close must not hang, the fault channel must close, and
// the reader is released to see zeros.
func TestCloseWithPagesAbsent(t *testing.T) {
	mem := newMemfd(t, 1<<20)
	r := register(t, mem)
	if err := r.Drop([]uint64{10, 11, 12}); err != nil {
		t.Fatal(err)
	}
	done := make(chan []byte, 1)
	go func() {
		b, err := readThroughKernel(page(mem, 11))
		if err != nil {
			t.Error(err)
		}
		done <- b
	}()
	select {
	case <-r.Faults():
	case <-time.After(5 * time.Second):
		t.Fatal("no fault reported")
	}

	closed := make(chan error, 1)
	go func() { closed <- r.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close hangs")
	}
	for range r.Faults() {
		// drain: the channel must be closed, not merely empty
	}
	select {
	case b := <-done:
		if !bytes.Equal(b, make([]byte, PageSize)) {
			t.Error("a page still absent at Close did not read as zero")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the reader of an absent page stays blocked after Close")
	}
	if err := r.Fill(10, pattern(10)); err == nil {
		t.Error("Fill after Close succeeded")
	}
	if err := r.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// BenchmarkFaultRoundTrip measures one on-demand pull without a guest: a
// system call touches a dropped page (a fault from kernel mode, as KVM's),
// the handler receives it from Faults and fills it, and the call goes on.
func BenchmarkFaultRoundTrip(b *testing.B) {
	const size = 64 << 20
	mem := newMemfd(b, size)
	r := register(b, mem)
	data := pattern(1)
	go func() {
		for p := range r.Faults() {
			if err := r.Fill(p, data); err != nil && !errors.Is(err, ErrPresent) {
				b.Error(err)
			}
		}
	}()
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC); err != nil {
		b.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	all := make([]uint64, size/PageSize)
	for p := range all {
		all[p] = uint64(p)
	}
	var one [1]byte
	b.ResetTimer()
	for i := range b.N {
		p := uint64(i) % uint64(len(all))
		if p == 0 {
			b.StopTimer()
			if err := r.Drop(all); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
		if _, err := unix.Write(fds[1], page(mem, p)[:1]); err != nil {
			b.Fatal(err)
		}
		if _, err := unix.Read(fds[0], one[:]); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "faults/s")
}

// BenchmarkFill measures the push side: UFFDIO_COPY into absent pages
// nobody waits for.
func BenchmarkFill(b *testing.B) {
	const size = 64 << 20
	mem := newMemfd(b, size)
	r := register(b, mem)
	data := pattern(1)
	all := make([]uint64, size/PageSize)
	for p := range all {
		all[p] = uint64(p)
	}
	b.ResetTimer()
	for i := range b.N {
		p := uint64(i) % uint64(len(all))
		if p == 0 {
			b.StopTimer()
			if err := r.Drop(all); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
		if err := r.Fill(p, data); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pages/s")
	b.SetBytes(PageSize)
}

// TestHoleReadsZero: a hole of the memfd that was not dropped (a zero page
// punched out before the region was made) reads as zero at once, filled by
// the region itself, and is never reported as a fault: no one would fill
// it, and its reader would wait until Close.
func TestHoleReadsZero(t *testing.T) {
	mem := newMemfd(t, 1<<20)
	if err := unix.Madvise(page(mem, 9), unix.MADV_REMOVE); err != nil {
		t.Fatal(err)
	}
	r := register(t, mem)
	if err := r.Drop([]uint64{10}); err != nil {
		t.Fatal(err)
	}
	for _, read := range []func(b []byte) ([]byte, error){
		func(b []byte) ([]byte, error) { touch(b); return bytes.Clone(b), nil },
		readThroughKernel,
	} {
		done := make(chan []byte, 1)
		go func() {
			b, err := read(page(mem, 9))
			if err != nil {
				t.Error(err)
			}
			done <- b
		}()
		select {
		case b := <-done:
			if !bytes.Equal(b, make([]byte, PageSize)) {
				t.Fatal("the hole reads other than zeros")
			}
		case p := <-r.Faults():
			t.Fatalf("fault reported on page %d, a hole never dropped", p)
		case <-time.After(5 * time.Second):
			t.Fatal("the reader of a hole never dropped is still blocked")
		}
	}
	if got := r.Missing(); got != 1 {
		t.Fatalf("Missing = %d, want 1 (page 10)", got)
	}
	if err := r.Fill(10, pattern(10)); err != nil {
		t.Fatal(err)
	}
}

// TestBlocked: the time faulting threads waited is counted from each
// fault to its page's Fill, once per fault; pages filled before anyone
// touched them count nothing.
func TestBlocked(t *testing.T) {
	mem := newMemfd(t, 1<<20)
	r := register(t, mem)
	if err := r.Drop([]uint64{5, 6, 7}); err != nil {
		t.Fatal(err)
	}
	if err := r.Fill(7, pattern(7)); err != nil { // before any fault
		t.Fatal(err)
	}
	if b := r.Blocked(); b != 0 {
		t.Fatalf("Blocked %v with no fault, want 0", b)
	}
	const hold = 100 * time.Millisecond
	// Two readers of page 5 (one from user mode, one through the kernel)
	// and one of page 6, each on a thread of its own, as a vCPU is: a
	// goroutine preempted in its fault may fault again from another
	// thread, a second wait (CI: 533 ms counted for three of at most 170).
	start := time.Now()
	done := make(chan error, 3)
	go func() { runtime.LockOSThread(); touch(page(mem, 5)); done <- nil }()
	go func() { runtime.LockOSThread(); _, err := readThroughKernel(page(mem, 5)); done <- err }()
	go func() { runtime.LockOSThread(); touch(page(mem, 6)); done <- nil }()
	for seen := map[uint64]int{}; seen[5] < 2 || seen[6] < 1; {
		select {
		case p := <-r.Faults():
			seen[p]++
		case <-time.After(5 * time.Second):
			t.Fatalf("faults seen %v, want two on page 5 and one on page 6", seen)
		}
	}
	time.Sleep(hold)
	for _, p := range []uint64{5, 6} {
		if err := r.Fill(p, pattern(p)); err != nil {
			t.Fatal(err)
		}
	}
	elapsed := time.Since(start)
	for range 3 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	// Three faults held at least hold each, and none longer than the
	// whole test.
	if b := r.Blocked(); b < 3*hold || b > 3*elapsed {
		t.Errorf("Blocked %v for three faults held %v or more each (%v in all), want between %v and %v", b, hold, elapsed, 3*hold, 3*elapsed)
	}
	// Filled again, or filled without a fault: nothing more.
	before := r.Blocked()
	r.Fill(5, pattern(5))
	if b := r.Blocked(); b != before {
		t.Errorf("Blocked %v after filling a present page, want %v", b, before)
	}
}

// BenchmarkDrop measures Drop of scattered pages (every other one: each a
// run of its own, a system call each) and of one run of as many pages, in
// pages of memory the guest had written. A destination's post-copy pauses
// its guest for the drop (TSMC's stage 2).
func BenchmarkDrop(b *testing.B) {
	const size = 64 << 20
	for _, tc := range []struct {
		name string
		step uint64
	}{{"scattered", 2}, {"run", 1}} {
		b.Run(tc.name, func(b *testing.B) {
			mem := newMemfd(b, size)
			r := register(b, mem)
			var pages []uint64
			for p := uint64(0); p < size/PageSize/2*tc.step; p += tc.step {
				pages = append(pages, p)
			}
			runs := len(pages)
			if tc.step == 1 {
				runs = 1
			}
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				for _, p := range pages { // back in memory, as a guest's writes leave it
					if err := r.Fill(p, pattern(p)); err != nil && !errors.Is(err, ErrPresent) {
						b.Fatal(err)
					}
				}
				b.StartTimer()
				if err := r.Drop(pages); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(b.Elapsed().Seconds()/float64(b.N)/float64(runs)*1e9, "ns/run")
			b.ReportMetric(b.Elapsed().Seconds()/float64(b.N)/float64(len(pages))*1e9, "ns/page")
		})
	}
}

// TestAbsentWords: pages punched out before the region was made and marked
// absent by words are reported when touched, not filled with zeros, each
// counted once; bits past the region's pages are refused.
func TestAbsentWords(t *testing.T) {
	const pages = 100
	mem := newMemfd(t, pages*PageSize)
	for _, p := range []uint64{3, 5, 70} {
		copy(page(mem, p), pattern(p))
		if err := unix.Madvise(page(mem, p), unix.MADV_REMOVE); err != nil {
			t.Fatal(err)
		}
	}
	r := register(t, mem)
	words := []uint64{1<<3 | 1<<5, 1 << 6}
	for range 2 { // again: the same pages, counted once
		if err := r.AbsentWords(words); err != nil {
			t.Fatal(err)
		}
		if got := r.Missing(); got != 3 {
			t.Fatalf("Missing = %d, want 3", got)
		}
	}
	if got := r.MissingWords(); !slices.Equal(got, words) {
		t.Errorf("MissingWords = %x, want %x", got, words)
	}
	for _, bad := range [][]uint64{{0, 1 << 36}, {0, 0, 1}} { // page 100; page 128
		if err := r.AbsentWords(bad); err == nil || !strings.Contains(err.Error(), "beyond the region's 100 pages") {
			t.Errorf("AbsentWords(%x): %v, want beyond the region", bad, err)
		}
	}
	if got := r.Missing(); got != 3 {
		t.Fatalf("Missing after refusals = %d, want 3", got)
	}
	done := make(chan []byte, 1)
	go func() {
		b, err := readThroughKernel(page(mem, 70))
		if err != nil {
			t.Error(err)
		}
		done <- b
	}()
	select {
	case p := <-r.Faults():
		if p != 70 {
			t.Fatalf("fault on page %d, want 70", p)
		}
	case b := <-done:
		t.Fatalf("page 70, marked absent, read without a fault: %x…", b[:8])
	case <-time.After(5 * time.Second):
		t.Fatal("no fault reported on page 70")
	}
	for _, p := range []uint64{3, 5, 70} {
		if err := r.Fill(p, pattern(p)); err != nil {
			t.Fatal(err)
		}
	}
	if b := <-done; !bytes.Equal(b, pattern(70)) {
		t.Fatal("page 70 reads other than what was filled")
	}
}
