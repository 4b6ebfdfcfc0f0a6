package mecom

import "fmt"

// PageSize is the size of a guest page, the unit Encode and Decode work on.
const PageSize = 4096

// Codec is how one page is coded on the wire.
type Codec uint8

// The codecs, numbered as they appear on the wire (see the package comment).
const (
	Raw        Codec = iota // the page's bytes as they are
	ZeroMarker              // nothing: the page is all zero
	Words                   // runs of 32-bit words, for pages of few distinct words
	S2                      // an S2 block (klauspost/compress/s2)
	Zstd                    // a zstd frame at SpeedFastest (klauspost/compress/zstd)

	numCodecs = iota
)

var codecNames = [numCodecs]string{
	Raw:        "raw",
	ZeroMarker: "zero-marker",
	Words:      "words",
	S2:         "s2",
	Zstd:       "zstd",
}

func (c Codec) String() string {
	if int(c) < len(codecNames) {
		return codecNames[c]
	}
	return fmt.Sprintf("codec(%d)", uint8(c))
}

// The per-page header. Its first byte holds the codec in the top three
// bits; codecs that carry a payload of variable length put the length's
// high five bits in the low five bits of that byte and its low eight bits
// in a second byte. Thirteen bits reach 8191, more than any payload the
// encoder sends (it sends Raw instead of anything ≥ PageSize-1 bytes), and
// a header of at most two bytes keeps the cost of a zero page at one byte.
const (
	codecShift = 5
	lenHighMax = 1<<codecShift - 1

	// maxPayload is the longest payload worth sending: with its two-byte
	// header it is a byte shorter than a Raw page (1+PageSize bytes).
	// A longer coding goes Raw instead.
	maxPayload = PageSize - 2
)

// hasLength reports whether pages coded with c carry a length in their
// header. Raw pages are always PageSize bytes and zero pages carry
// nothing, so only the compressing codecs need one.
func (c Codec) hasLength() bool {
	return c == Words || c == S2 || c == Zstd
}

// appendHeader appends the header of a page coded with c whose payload is
// n bytes long; n must be 0 unless c.hasLength().
func appendHeader(dst []byte, c Codec, n int) []byte {
	if !c.hasLength() {
		return append(dst, byte(c)<<codecShift)
	}
	return append(dst, byte(c)<<codecShift|byte(n>>8), byte(n))
}

// MaxEncodedLen is the most bytes Encode can append for n pages: every
// page Raw, one header byte each. A page coded by a compressing codec takes
// less (two header bytes, at most PageSize-2 payload bytes).
func MaxEncodedLen(n int) int {
	if n <= 0 {
		return 0
	}
	return n * (1 + PageSize)
}
