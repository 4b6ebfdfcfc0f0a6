// Package trace is pagecast's dirty-trace file format: for each epoch
// (100 ms by default, the profiler's) the set of guest pages (guest page frame numbers) a
// virtual machine dirtied. The profiler writes traces; the predictor and
// the simulator read them; `pagecast trace` inspects, exports (CSV,
// Parquet) and imports (CSV) them.
//
// A trace is a header followed by epoch records appended one at a time.
// It is built to survive being cut off or damaged at any point: every
// record is written with a single Write, carries its own CRC and opens with
// a sync marker, so a reader returns every complete, intact epoch, skips
// what is not (a torn tail, flipped bytes, junk), and reports each skipped
// stretch as a Damage.
//
// # Header
//
// Integers are little-endian; uvarint is encoding/binary's unsigned
// varint (LEB128), varint its zig-zag signed one, both in their shortest
// form: an overlong encoding is refused, so an epoch has exactly one
// encoding. CRC32C is CRC-32 with the Castagnoli polynomial.
//
//	offset  size  field
//	0       8     magic "PCTRACE\x00"
//	8       2     major version, u16 (1); readers refuse a major they do not know
//	10      2     minor version, u16 (0); minor versions only add metadata fields
//	12      4     metadata length M, u32, at most 1 MiB
//	16      M     metadata: fields, each uvarint tag, uvarint length L, L bytes
//	16+M    4     CRC32C of bytes 0 .. 16+M, u32
//
// Metadata fields, in any order; readers skip tags they do not know:
//
//	tag  value                                                   Meta field
//	1    uvarint guest memory size in bytes (required)          MemoryBytes
//	2    uvarint page size in bytes, a power of two (required)  PageSize
//	3    uvarint epoch length in ns (required, at most an hour) Epoch
//	4    UTF-8 hook, e.g. "tp_btf/kvm_dirty_ring_push"          Hook
//	5    UTF-8 source, e.g. "pagecast vm pid 1234"              Source
//	6    varint start time, Unix ns                             Start
//	7    uvarint key length K, K bytes key, rest value; repeats Extra
//
// Extra keys pagecast profile writes: guest-memory-bytes (the guest's RAM,
// where MemoryBytes also counts a hole below 4 GiB), dirty-mode (ring,
// bitmap or tcg) and, where it knows the guest, guest (ExtraGuest:
// "pagecast" for pagecast's own, which the simulator throttles as such).
//
// A header that is short, has a bad CRC or impossible metadata is an
// error: nothing after it can be trusted. A file not starting with the
// magic is ErrNotTrace.
//
// # Epoch records
//
//	offset  size  field
//	0       4     sync marker 00 50 43 52 ("\x00PCR")
//	4       4     body length B, u32: 3 .. 31 + pages (three uvarints of at most 10 bytes, then deltas of at most pages+1 bytes), at most 2 GiB
//	8       B     body:
//	                uvarint epoch index, increasing through the file
//	                uvarint epoch start, ns from Meta.Start
//	                uvarint page count N (at most the memory's pages)
//	                payload, the rest of the body (B less the three uvarints):
//	                N uvarints, the first page number, then the
//	                difference from the previous page (at least 1)
//	8+B     4     CRC32C of bytes 0 .. 8+B (marker and length included), u32
//
// An empty epoch is a record with N = 0 and no payload (about 20 bytes),
// so "nothing dirtied" differs from "record lost". Delta coding costs one
// byte per page in runs of nearby pages (a sweep of consecutive pages, a
// dense hot set) and two or three for pages scattered over gigabytes.
//
// # Damage and resynchronisation
//
// A record is bad if its marker is missing, its length is out of range or
// runs past the end of the file, its CRC does not match, or its body does
// not parse (page numbers not increasing or beyond the memory size, page
// count not matching the payload, epoch index not above the previous
// one's). The reader then scans forward, byte by byte, for the next marker
// whose record is good, and reports the bytes it skipped as one Damage
// (offset, length, the first bad record's reason). A truncated tail is
// damage running to the end of the file. The reader reads a stream (no
// seeking), allocates in proportion to the bytes it has actually read,
// whatever a length field claims, and always moves forward.
package trace
