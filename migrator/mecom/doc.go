// Package mecom is adaptive page compression for live migration after Jin
// et al., "Live virtual machine migration with adaptive memory
// compression" (MECOM, CLUSTER 2009): each page is classified by what its
// content looks like and coded with the codec that pays for itself at the
// current link bandwidth and CPU speed. The source's migrator encodes
// batches of pages with an Encoder; the destination restores them exactly
// with Decode.
//
// # Classes
//
// Classify sorts a page into one of four classes, cheapest test first:
//
//   - Zero: all zero bytes (IsZero).
//   - Repeat: a few 32-bit words in runs, as Words codes in at most a
//     sixteenth of a page: a word repeated, memory filled with a pattern,
//     such a page with a few words overwritten.
//   - LowEntropy: everything else whose byte histogram, over a 256-byte
//     sample, estimates at most 7 bits a byte: text, code, tables.
//   - HighEntropy: the rest, which looks random: compressed or encrypted
//     data, where compressors rarely win.
//
// # Codec choice
//
// Zero pages are sent as a marker, Repeat pages with Words. For the other
// two classes the Encoder chooses among S2, zstd at its fastest level and
// Raw: it measures the compressors on the pages it encodes — bytes out and
// CPU time per page, as running averages, each compressor not chosen
// sampled on one page in 64 — takes Raw's cost as known, and picks the
// codec with the least max(CPU time / workers, bytes / bandwidth):
// compressing and sending overlap, so the slower one sets the pace.
// Without a known bandwidth, the codec with the fewest bytes wins. A page
// a codec would not shrink goes Raw. choice.go holds the model and the
// reasons for its constants.
//
// # Format
//
// A batch is the pages in the order given to Encode, each a header and a
// payload, with nothing before, between or after them; the count of pages
// travels outside (the migrator's RecCompressed record carries the GFNs).
// The header's first byte holds the codec in its top three bits:
//
//	codec        header               payload
//	0 Raw        0x00                 the page, PageSize bytes
//	1 ZeroMarker 0x20                 none: the page is all zero
//	2 Words      0x40|L>>8, L&0xff    L bytes: runs of (uvarint count, 4-byte LE word)
//	3 S2         0x60|L>>8, L&0xff    L bytes: an S2 block (its own uvarint length first)
//	4 Zstd       0x80|L>>8, L&0xff    L bytes: one zstd frame, no checksum
//
// L, the payload length, is 1 to PageSize-2: a coding that would take as
// many bytes as a Raw page or more is sent Raw, so a batch of n pages never
// exceeds MaxEncodedLen(n) = n·(PageSize+1) bytes. Words' counts are in
// words, at least 1, and sum to PageSize/4. Every page must decode to
// exactly PageSize bytes and the batch must be consumed exactly; Decode
// rejects anything else with an error wrapping ErrCorrupt, without
// panicking and without allocating more than a page of its own.
package mecom
