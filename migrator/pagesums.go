package migrator

import (
	"hash/crc32"
	"sync"

	"github.com/pagecast/pagecast/bitmap"
)

// pageSums keeps the checksum of each page of the destination's memory,
// taken from memory just after the receiver writes the page (so a page
// written to the wrong place is caught), or known without reading for a
// run of zero pages. At the switch-over a chunk's checksum is combined
// from its pages' (CRC-32C of a concatenation is a linear function of the
// parts'), so the destination's check reads no memory while the source's
// guest is paused. Summing chunks again instead, those written since a
// background pass, took 371–434 ms of a 1 s pause for a 3 GiB guest whose
// scattered writes reach most chunks in the last rounds. It costs 4 bytes
// a page (0.1% of memory), and a checksum of every page received, in
// cache. Only the receiver writes a destination's memory while it waits.
type pageSums struct {
	mem  []byte
	sums []uint32
	have *bitmap.Bitmap
}

func newPageSums(mem []byte) *pageSums {
	pages := uint64(len(mem)) / PageSize
	return &pageSums{mem: mem, sums: make([]uint32, pages), have: bitmap.New(pages)}
}

// wrote takes page gfn's checksum; the page has just been written.
func (s *pageSums) wrote(gfn uint64) {
	s.sums[gfn] = crc32.Checksum(s.mem[gfn*PageSize:(gfn+1)*PageSize], wireCastagnoli)
	s.have.Set(gfn)
}

// zeroed records pages [first, first+count) as zero pages.
func (s *pageSums) zeroed(first, count uint64) {
	z := zeroPageSum()
	for gfn := first; gfn < first+count; gfn++ {
		s.sums[gfn] = z
		s.have.Set(gfn)
	}
}

// digest returns the checksums of all memory in chunks of chunkBytes,
// combined from the pages', or false if some page has none (it never
// arrived) or the chunks are not whole pages.
func (s *pageSums) digest(chunkBytes uint32) (Digest, bool) {
	pages := uint64(len(s.sums))
	if chunkBytes == 0 || chunkBytes%PageSize != 0 || s.have.Count() != pages {
		return Digest{}, false
	}
	per := uint64(chunkBytes / PageSize)
	d := Digest{ChunkBytes: chunkBytes, Sums: make([]uint32, (pages+per-1)/per)}
	onCores(len(d.Sums), func(c int) {
		d.Sums[c] = s.combine(uint64(c)*per, min(uint64(c+1)*per, pages))
	})
	return d, true
}

// combine is the checksum of pages [lo, hi), from theirs.
func (s *pageSums) combine(lo, hi uint64) uint32 {
	shift := pageShift()
	crc := s.sums[lo]
	for _, p := range s.sums[lo+1 : hi] {
		crc = shift.apply(crc) ^ p
	}
	return crc
}

// crcShift is the linear map that advances a CRC-32C register over a run
// of zero bytes, as four tables by the register's bytes. Then, for
// Go's (pre- and post-inverted) checksums, crc(A‖B) = shift(crc(A)) ^
// crc(B) with the shift over len(B) bytes.
type crcShift [4][256]uint32

func (t *crcShift) apply(crc uint32) uint32 {
	return t[0][crc&0xff] ^ t[1][crc>>8&0xff] ^ t[2][crc>>16&0xff] ^ t[3][crc>>24]
}

// newCRCShift is the shift over n zero bytes.
func newCRCShift(n int) *crcShift {
	zeros := make([]byte, n)
	// The register's raw advance: crc32.Update inverts before and after.
	var basis [32]uint32
	for i := range basis {
		basis[i] = ^crc32.Update(^uint32(1<<i), wireCastagnoli, zeros)
	}
	t := new(crcShift)
	for k := range t {
		for b := range 256 {
			var v uint32
			for i := range 8 {
				if b&(1<<i) != 0 {
					v ^= basis[8*k+i]
				}
			}
			t[k][b] = v
		}
	}
	return t
}

var (
	pageShift   = sync.OnceValue(func() *crcShift { return newCRCShift(PageSize) })
	zeroPageSum = sync.OnceValue(func() uint32 { return updateZeros(0, PageSize) })
)
