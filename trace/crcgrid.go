package trace

import "hash/crc32"

// While the reader scans damage, every false record marker it meets claims
// a body, and checking a claim costs the body's length: a file with a
// false marker every few bytes, each claiming a long body, would cost the
// square of its size. crcGrid makes each check cost a constant instead:
// it keeps the CRC of the file from an anchor to every gridStep-th byte,
// so the CRC of any stretch is the CRC of its unaligned head and tail
// (under gridStep bytes each) combined with the aligned middle's, which
// two grid points give. CRC-32C is linear over GF(2), which is what makes
// the combining work (as zlib's crc32_combine).

// gridStep is the distance between grid points; checks of stretches
// shorter than 2·gridStep compute the CRC directly.
const gridStep = 64

// castagnoliPoly is the reflected CRC-32C polynomial.
const castagnoliPoly = 0x82f63b78

// mulModP multiplies a and b, polynomials over GF(2) in reflected bit
// order, modulo the CRC-32C polynomial.
func mulModP(a, b uint32) uint32 {
	// Branch-free: a's bits are as good as random, and mispredicted
	// branches would cost more than the arithmetic.
	var p uint32
	for range 32 {
		p ^= b & -(a >> 31)
		a <<= 1
		b = b>>1 ^ castagnoliPoly&-(b&1)
	}
	return p
}

// shiftTab[n] is x^(8n) mod P for n < gridStep: what appending n bytes
// does to a CRC that came before them.
var shiftTab = func() (t [gridStep]uint32) {
	const x8 = 1 << 23 // x^8, reflected
	t[0] = 1 << 31     // x^0
	for n := 1; n < gridStep; n++ {
		t[n] = mulModP(t[n-1], x8)
	}
	return t
}()

// combine returns the CRC of A followed by B from crcA, crcB and len(B),
// where shift is x^(8·len(B)) mod P.
func combine(crcA, crcB, shift uint32) uint32 { return mulModP(shift, crcA) ^ crcB }

// crcGrid is the CRC of a stretch of the file from an anchor offset to
// each grid point after it.
type crcGrid struct {
	anchor int64    // file offset of points[0]
	points []uint32 // points[j]: CRC of the file from anchor to anchor+j·gridStep
	shifts []uint32 // shifts[m]: x^(8·m·gridStep) mod P
}

func (g *crcGrid) reset() { g.points = g.points[:0] }

// shift returns x^(8·m·gridStep) mod P.
func (g *crcGrid) shift(m int) uint32 {
	if len(g.shifts) == 0 {
		g.shifts = append(g.shifts, 1<<31, mulModP(shiftTab[gridStep-1], shiftTab[1]))
	}
	for len(g.shifts) <= m {
		g.shifts = append(g.shifts, mulModP(g.shifts[len(g.shifts)-1], g.shifts[1]))
	}
	return g.shifts[m]
}

// checksum returns the CRC-32C of r.buf[from:to]. It extends the grid,
// from bytes still in the buffer, as far as to.
func (g *crcGrid) checksum(r *Reader, from, to int) uint32 {
	if to-from < 2*gridStep {
		r.summed += int64(to - from)
		return crc32.Checksum(r.buf[from:to], castagnoli)
	}
	start := r.base + int64(from)
	last := g.anchor + int64(len(g.points)-1)*gridStep
	if len(g.points) == 0 || start < g.anchor || last < r.base {
		g.anchor, g.points = start, append(g.points[:0], 0)
		last = start
	}
	end := r.base + int64(to)
	for last+gridStep <= end {
		i := int(last - r.base)
		g.points = append(g.points, crc32.Update(g.points[len(g.points)-1], castagnoli, r.buf[i:i+gridStep]))
		last += gridStep
		r.summed += gridStep
	}
	j1 := int((start - g.anchor + gridStep - 1) / gridStep)
	j2 := int((end - g.anchor) / gridStep)
	g1 := int(g.anchor + int64(j1)*gridStep - r.base) // buffer positions
	g2 := int(g.anchor + int64(j2)*gridStep - r.base)
	r.summed += int64(g1 - from + to - g2)
	head := crc32.Checksum(r.buf[from:g1], castagnoli)
	sh := g.shift(j2 - j1)
	mid := g.points[j2] ^ mulModP(sh, g.points[j1])
	c := combine(head, mid, sh)
	return combine(c, crc32.Checksum(r.buf[g2:to], castagnoli), shiftTab[to-g2])
}
