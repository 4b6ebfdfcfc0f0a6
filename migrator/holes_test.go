package migrator

import (
	"hash/crc32"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/pagecast/pagecast/bitmap"
)

// memfdGuest maps a memfd of pages pages (MeasurePageRate's memfdVM) and
// returns it with a func that says how many bytes of it are allocated.
func memfdGuest(t *testing.T, pages int) (int, []byte, func() int64) {
	t.Helper()
	v, err := newMemfdVM("pagecast-holes-test", pages)
	if err != nil {
		t.Skip(err)
	}
	t.Cleanup(v.close)
	held := func() int64 {
		var st unix.Stat_t
		if err := unix.Fstat(v.fd, &st); err != nil {
			t.Fatal(err)
		}
		return st.Blocks * 512
	}
	return v.fd, v.mem, held
}

// TestHolesDigest: the pages never written of a memfd are its holes, and
// the checksums that take them as zeros without reading them equal those
// that read every byte, in chunks of any size, the last one short, and
// allocate no hole.
func TestHolesDigest(t *testing.T) {
	const pages = 1000 // 3.9 MiB: three chunks of 1 MiB and a short one
	fd, mem, held := memfdGuest(t, pages)
	written := map[int]bool{}
	write := func() {
		for p := range written {
			mem[p*PageSize+17] = byte(p) | 1
		}
	}
	for _, p := range []int{0, 1, 2, 255, 256, 300, 301, 302, 303, 600, 999} {
		written[p] = true
	}
	write()
	zeroPages(mem[300*PageSize : 302*PageSize]) // punched out again
	delete(written, 300)
	delete(written, 301)
	h, err := holes(fd, pages)
	if err != nil {
		t.Fatal(err)
	}
	for p := range pages {
		if h.Has(uint64(p)) == written[p] {
			t.Fatalf("page %d: hole %v, written %v", p, h.Has(uint64(p)), written[p])
		}
	}
	for _, fragmented := range []bool{false, true} {
		if fragmented { // many runs in a chunk
			for p := 400; p < 520; p += 2 {
				written[p] = true
			}
		}
		for _, chunk := range []int{PageSize, 64 * PageSize, DigestChunk, 4 * DigestChunk} {
			zeroPages(mem)
			write()
			before := held()
			got := computeDigest(mem, chunk, fd)
			if allocated := held() - before; allocated != 0 {
				t.Errorf("chunks of %d: the checksums allocated %d bytes of holes", chunk, allocated)
			}
			want := computeDigest(mem, chunk, -1) // reads (and fills) the holes
			if err := want.Compare(got); err != nil {
				t.Errorf("chunks of %d, fragmented %v: %v", chunk, fragmented, err)
			}
		}
	}
}

// TestHoleContents: the source takes a hole for a zero page without
// reading it until a harvest names it written; then it reads it.
func TestHoleContents(t *testing.T) {
	const pages = 64
	fd, mem, held := memfdGuest(t, pages)
	mem[5*PageSize] = 1
	g := fdGuest{fd: fd, mem: mem}
	log := &listLog{}
	l, c := trackHoles(g, mem, log)
	if _, ok := l.(PageLister); !ok {
		t.Fatal("the log lost its HarvestPages")
	}
	before := held()
	for p := range uint64(pages) {
		if c.Zero(p) != (p != 5) {
			t.Fatalf("page %d: Zero %v", p, c.Zero(p))
		}
	}
	if held() != before {
		t.Errorf("asking about holes allocated %d bytes", held()-before)
	}
	mem[9*PageSize+100] = 3 // written after the holes were found
	if !c.Zero(9) {
		t.Fatal("page 9, a hole when the log started, read")
	}
	log.next = []uint64{9}
	if _, err := l.(PageLister).HarvestPages(); err != nil {
		t.Fatal(err)
	}
	if c.Zero(9) {
		t.Error("page 9 still taken for zero after a harvest named it")
	}
	// Through Harvest too.
	mem[11*PageSize] = 4
	b := bitmap.New(pages)
	b.Set(11)
	log.bits = b
	if _, err := l.Harvest(); err != nil {
		t.Fatal(err)
	}
	if c.Zero(11) || !c.Zero(12) {
		t.Errorf("after a harvest of page 11: Zero(11) %v, Zero(12) %v", c.Zero(11), c.Zero(12))
	}
}

type fdGuest struct {
	Guest
	fd  int
	mem []byte
}

func (g fdGuest) MemoryFD() int { return g.fd }

type listLog struct {
	next []uint64
	bits *bitmap.Bitmap
}

func (l *listLog) Harvest() (*bitmap.Bitmap, error) { return l.bits, nil }
func (l *listLog) HarvestPages() ([]uint64, error)  { return l.next, nil }
func (l *listLog) Close() error                     { return nil }

// TestPageSums: the destination's checksums, combined from each page's as
// the pages are written and punched, equal those of all memory taken at the
// end, in chunks of any size, the last one short; taking them reads no
// memory, so allocates no hole; and a write the receiver did not record
// shows as a difference.
func TestPageSums(t *testing.T) {
	const pages = 2050 // 8 MiB and two pages
	for _, chunk := range []int{DigestChunk, 16 * PageSize, PageSize} {
		fd, mem, held := memfdGuest(t, pages)
		s := newPageSums(mem)
		s.zeroed(0, pages) // the first round: all zero pages
		rng := uint64(1)
		next := func(n uint64) uint64 {
			rng = rng*6364136223846793005 + 1442695040888963407
			return (rng >> 33) % n
		}
		for round := range 40 {
			for range 50 {
				p := next(pages / 2) // the upper half stays holes
				mem[p*PageSize+next(PageSize)] = byte(round) | 1
				s.wrote(p)
			}
			if round%7 == 3 {
				p := next(pages/2 - 8)
				zeroPages(mem[p*PageSize : (p+8)*PageSize])
				s.zeroed(p, 8)
			}
		}
		before := held()
		got, ok := s.digest(uint32(chunk))
		if !ok {
			t.Fatalf("chunks of %d: no digest from the pages' sums", chunk)
		}
		if allocated := held() - before; allocated != 0 {
			t.Errorf("chunks of %d: the sums allocated %d bytes of holes", chunk, allocated)
		}
		if err := computeDigest(mem, chunk, fd).Compare(got); err != nil {
			t.Errorf("chunks of %d: %v", chunk, err)
		}
		mem[7*PageSize+100] ^= 0x40 // not recorded
		if err := computeDigest(mem, chunk, fd).Compare(got); err == nil {
			t.Errorf("chunks of %d: an unrecorded write does not show", chunk)
		}
	}
	s := newPageSums(make([]byte, 4*PageSize))
	s.zeroed(0, 3)
	if _, ok := s.digest(DigestChunk); ok {
		t.Error("a digest with a page that never arrived")
	}
	s.zeroed(3, 1)
	if _, ok := s.digest(PageSize + 1); ok {
		t.Error("a digest in chunks that are not whole pages")
	}
}

// TestCRCShift: crc(A‖B) = shift(crc(A)) ^ crc(B), for Go's CRC-32C.
func TestCRCShift(t *testing.T) {
	for _, n := range []int{1, 7, PageSize} {
		shift := newCRCShift(n)
		for seed := range 20 {
			a := make([]byte, 1+seed*37)
			b := make([]byte, n)
			for i := range a {
				a[i] = byte(i*seed + 3)
			}
			for i := range b {
				b[i] = byte(i ^ seed*11)
			}
			want := crc32.Checksum(append(append([]byte(nil), a...), b...), wireCastagnoli)
			got := shift.apply(crc32.Checksum(a, wireCastagnoli)) ^ crc32.Checksum(b, wireCastagnoli)
			if got != want {
				t.Fatalf("shift over %d bytes, seed %d: %08x, want %08x", n, seed, got, want)
			}
		}
	}
}
