package migrator

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/pagecast/pagecast/internal/printable"
)

// The wire protocol. Both directions of the connection carry a stream of
// records, each a 12-byte header and a payload:
//
//	byte 0     record type
//	byte 1     flags, 0
//	bytes 2-3  reserved, 0
//	bytes 4-7  payload length, at most MaxPayload
//	bytes 8-11 CRC-32C (Castagnoli) of header bytes 0-7 and the payload
//
// All integers are little endian. The checksum covers the header too, so a
// damaged length or type is caught like damaged page contents; lengths are
// bounded before anything is read so that a hostile or garbled stream cannot
// make the reader allocate more than one batch of pages.
//
// Version 2 carries the guest's vCPU and device state as opaque bytes
// (RecState, from Guest.SaveState) where version 1 had pagecast's vCPU
// registers (RecVCPUs). Version 3 sends a dirty bitmap in chunks
// (RecBitmap's first word and count), so that TSMC and post-copy recovery
// work for guests over 32 GiB, whose bitmap is more than one record holds.
// Version 4 sends the memory checksums after the commit (the stop-and-
// copy's) or after stage 3's pages (TSMC's): the destination runs the
// guest once the pages and the state are in, checks the memory it started
// with against them and answers; if they differ it stops its guest and the
// source runs it on. Version 5 may send the state zstd-compressed
// (StateZstd). In version 6 a QEMU guest under KVM has an image of its
// own, which a destination under TCG refuses (qemuguest's identity): a
// destination of version 5 said "guest image differs" to a KVM source of
// version 6 of the same machine type and CPU model. In version 7 the commit
// says whether to run the guest or hold it paused: a guest its user paused
// on the source during the migration (QMP stop) stays paused at the
// destination, as QEMU's own migration leaves it, where version 6 ran it.
// In version 8 the verdict carries how long the destination's guest
// waited for missing pages in post-copy, which only the destination sees
// whole (a wait on a page already on its way was not counted at the
// source), and TSMC's stage 1 names the pages stage 3 will bring
// (RecLater), which the destination drops then, not in the pause. In
// version 9 the destination of a post-copy says when its guest runs
// (RecStarted): the source counts the downtime to then, and sums its
// memory only after it, leaving the destination's start the CPU. In
// version 10 a MODE+postcopy source that is to switch to post-copy names
// the pages still pending (RecLater) and waits for the destination's
// answer to a RecSync, which comes once it has dropped them: the guest
// runs on at the source meanwhile, and the pause drops only the pages
// written since (walk 139: 74–113 ms of the pause dropped 106–126
// thousand pages).
const (
	ProtocolVersion = 10
	PageSize        = 4096
	MaxBatch        = 256 // pages per RecPages or RecCompressed record
	// MaxPayload is the largest legal payload: a full RecPages batch, or a
	// RecCompressed batch whose pages all went raw with a small header
	// each; a header announcing more is malformed before the payload is
	// read.
	MaxPayload = 4 + MaxBatch*(8+PageSize+wireCodedHeader)
	// wireCodedHeader bounds the per-page overhead of compressed batches.
	wireCodedHeader = 8
	// MaxState bounds the guest state (Guest.SaveState) a migration
	// carries, in RecState chunks of at most MaxStateChunk bytes.
	MaxState      = 64 << 20
	MaxStateChunk = MaxPayload - wireStateHeader
	// wireStateHeader is a RecState payload's kind, total and offset.
	wireStateHeader = 1 + 4 + 4
)

// State kinds: what a RecState carries.
const (
	// StateGuest is the source guest's SaveState, for the destination's
	// Restore.
	StateGuest uint8 = 1
	// StateZstd, or'ed into a kind, says the state is one zstd frame
	// (PackState) that unpacks to at most MaxState bytes.
	StateZstd uint8 = 0x80
)

// RecordType says what a record carries.
type RecordType uint8

// Record types. The comments give each payload's layout.
const (
	RecHello    RecordType = 1  // source→destination: Hello
	RecAccept   RecordType = 2  // destination→source: empty payload
	RecRefuse   RecordType = 3  // destination→source: UTF-8 reason (≤ 4096 bytes)
	RecPages    RecordType = 4  // count uint32, then count × (gfn uint64, PageSize bytes); 1 ≤ count ≤ MaxBatch
	RecZero     RecordType = 5  // first uint64, count uint64: a run of all-zero pages; count ≥ 1
	RecEndRound RecordType = 6  // round uint32
	RecState    RecordType = 7  // kind uint8, total uint32 (≤ MaxState), offset uint32, then the state's bytes [offset, offset+n), 1 ≤ n (n = 0 only for an empty state); chunks in order
	RecDigest   RecordType = 8  // chunk bytes uint32, count uint32, count × uint32 CRC-32C
	RecEnd      RecordType = 9  // empty: the source has sent everything
	RecVerified RecordType = 10 // destination→source: ok byte (1/0), waited int64 (ns, ≥ 0), UTF-8 reason
	RecCommit   RecordType = 11 // source→destination: run byte (1: start the guest; 0: hold it paused, as the source had it)
	RecAbort    RecordType = 12 // either way: UTF-8 reason
	// TSMC (three-stage copy): the stage-2 dirty bitmap, and the
	// destination's requests for pages its guest touched before they came.
	RecBitmap  RecordType = 13 // first uint32, count uint32, count × uint64 bitmap words first… (page g is bit g%64 of word g/64); chunks in order cover ceil(pages/64) words
	RecRequest RecordType = 14 // destination→source: count uint32, count × gfn uint64; 1 ≤ count ≤ MaxBatch
	// MECOM: a batch of pages compressed by package mecom.
	RecCompressed RecordType = 15 // count uint32, count × gfn uint64, then the mecom batch (to the end)
	// TSMC's stage 1: pages sent and written again since, which stage 3
	// brings; the destination drops them as they are named, while the
	// guest runs on at the source, not in the pause.
	RecLater RecordType = 16 // count uint32, count × gfn uint64; 1 ≤ count ≤ MaxBatch
	// TSMC's stage 3: the destination's guest runs (or is held paused,
	// as the commit said), the pause's end, and how long after the
	// destination sent its verdict.
	RecStarted RecordType = 17 // destination→source: since int64 (ns, ≥ 0)
	// A barrier: the destination answers a source's RecSync with one of
	// its own once it has done what every record before it asked
	// (MODE+postcopy: dropped the pages RecLater named).
	RecSync RecordType = 18 // either way: empty
)

var recNames = [...]string{
	RecHello:      "hello",
	RecAccept:     "accept",
	RecRefuse:     "refuse",
	RecPages:      "pages",
	RecZero:       "zero",
	RecEndRound:   "end-round",
	RecState:      "state",
	RecDigest:     "digest",
	RecEnd:        "end",
	RecVerified:   "verified",
	RecCommit:     "commit",
	RecAbort:      "abort",
	RecBitmap:     "bitmap",
	RecRequest:    "request",
	RecCompressed: "compressed",
	RecLater:      "later",
	RecStarted:    "started",
	RecSync:       "sync",
}

func (t RecordType) String() string {
	if int(t) < len(recNames) && recNames[t] != "" {
		return recNames[t]
	}
	return fmt.Sprintf("record-type-%d", uint8(t))
}

// ErrMalformed is wrapped by every error that reports a stream which breaks
// the protocol (as opposed to one that ends early or fails to read).
var ErrMalformed = errors.New("malformed migration stream")

const (
	wireHeaderSize = 12
	wirePageEntry  = 8 + PageSize // gfn and contents of one page in a RecPages payload
	wireBufSize    = 64 << 10
	wireMaxText    = 4096    // reasons in RecRefuse, RecVerified, RecAbort
	wireMaxMode    = 64      // Hello.Mode
	wireMaxDigest  = 1 << 20 // sums in a RecDigest
	// magic, version, page size, memory bytes, vcpus, image, mode length
	wireHelloFixed = 8 + 2 + 4 + 8 + 4 + 32 + 1
)

var (
	wireMagic      = [8]byte{'P', 'C', 'M', 'I', 'G', 'R', 'A', 'T'}
	wireCastagnoli = crc32.MakeTable(crc32.Castagnoli)
)

// Hello is the source's handshake. On the wire: magic "PCMIGRAT", version
// uint16, page size uint32, memory bytes uint64, vcpus uint32, image
// [32]byte, mode length uint8 and the mode (UTF-8, at most 64 bytes).
type Hello struct {
	Version     uint16
	PageSize    uint32
	MemoryBytes uint64
	VCPUs       uint32
	Image       [32]byte // SHA-256 of the guest image
	Mode        string
}

// Check compares the source's hello h with the destination's own description
// local (Mode ignored: it only tells the destination how the source will
// send) and returns nil or an error whose text is the refusal reason, naming
// every mismatch, e.g. "protocol version 2 at the source, 1 at the destination; memory 128
// MiB at the source, 64 MiB at the destination; guest image differs (sha256 ab12cd34… at
// the source, 99aa8877… at the destination)". All of them are named so that the operator
// fixes the setup once rather than retrying for each.
func (h Hello) Check(local Hello) error {
	var why []string
	if h.Version != local.Version {
		why = append(why, fmt.Sprintf("protocol version %d at the source, %d at the destination", h.Version, local.Version))
	}
	if h.PageSize != local.PageSize {
		why = append(why, fmt.Sprintf("page size %d bytes at the source, %d at the destination", h.PageSize, local.PageSize))
	}
	if h.MemoryBytes != local.MemoryBytes {
		why = append(why, fmt.Sprintf("memory %s at the source, %s at the destination", wireSize(h.MemoryBytes), wireSize(local.MemoryBytes)))
	}
	if h.VCPUs != local.VCPUs {
		why = append(why, fmt.Sprintf("vCPUs: %d at the source, %d at the destination", h.VCPUs, local.VCPUs))
	}
	if h.Image != local.Image {
		why = append(why, fmt.Sprintf("guest image differs (sha256 %x… at the source, %x… at the destination: a QEMU VM goes to a QEMU destination, vm run --monitor qemu --incoming or pagecast receive, and a VM of pagecast's own monitor to one of its own; two QEMUs must have the same machine type and CPU model)",
			h.Image[:4], local.Image[:4]))
	}
	if len(why) == 0 {
		return nil
	}
	return errors.New(strings.Join(why, "; "))
}

// Writer encodes records onto w through a bufio.Writer (64 KiB). It refuses
// to encode anything a Reader would reject. Not safe for concurrent use.
type Writer struct {
	bw  *bufio.Writer
	n   uint64
	hdr [wireHeaderSize]byte
	buf []byte // payload under assembly, reused so that Pages does not allocate
	// weigh, when set, replaces the encoding: each record is checked as
	// it would be encoded, and its type and size on the wire go to weigh.
	weigh func(t RecordType, n int) error
}

// NewWriter returns a Writer that encodes onto w.
func NewWriter(w io.Writer) *Writer {
	return &Writer{bw: bufio.NewWriterSize(w, wireBufSize)}
}

// newWeigher returns a Writer that encodes nothing: it refuses what a
// Writer refuses and passes each record's type and size on the wire,
// header included, to weigh. The simulator's link is one: page contents
// are neither copied nor checksummed, yet every byte is counted as sent.
func newWeigher(weigh func(t RecordType, n int) error) *Writer {
	return &Writer{weigh: weigh}
}

// Bytes returns the bytes encoded so far (headers included), flushed or not.
func (w *Writer) Bytes() uint64 { return w.n }

// Flush writes any buffered records to the underlying writer.
func (w *Writer) Flush() error {
	if w.weigh != nil {
		return w.weigh(recFlush, 0)
	}
	if err := w.bw.Flush(); err != nil {
		return fmt.Errorf("flush migration stream: %w", err)
	}
	return nil
}

// Hello encodes the handshake.
func (w *Writer) Hello(h Hello) error {
	if len(h.Mode) > wireMaxMode || !utf8.ValidString(h.Mode) {
		return fmt.Errorf("hello record: mode %q is not UTF-8 of at most %d bytes", h.Mode, wireMaxMode)
	}
	p := append(w.buf[:0], wireMagic[:]...)
	p = binary.LittleEndian.AppendUint16(p, h.Version)
	p = binary.LittleEndian.AppendUint32(p, h.PageSize)
	p = binary.LittleEndian.AppendUint64(p, h.MemoryBytes)
	p = binary.LittleEndian.AppendUint32(p, h.VCPUs)
	p = append(p, h.Image[:]...)
	p = append(p, byte(len(h.Mode)))
	p = append(p, h.Mode...)
	return w.record(RecHello, p)
}

// Pages encodes the pages gfns (1 to MaxBatch of them) of guest memory mem,
// copying page g from mem[g*PageSize:]. A page outside mem is an error.
func (w *Writer) Pages(gfns []uint64, mem []byte) error {
	if len(gfns) < 1 || len(gfns) > MaxBatch {
		return fmt.Errorf("pages record: %d pages, want 1 to %d", len(gfns), MaxBatch)
	}
	pages := uint64(len(mem)) / PageSize
	n := 4 + len(gfns)*wirePageEntry
	if w.weigh != nil {
		// mem may be nil: a simulated guest's pages are not mapped.
		return w.weighed(RecPages, n)
	}
	if cap(w.buf) < n {
		// Once, at the size of a full batch: every later batch fits.
		w.buf = make([]byte, 0, MaxPayload)
	}
	p := w.buf[:n]
	binary.LittleEndian.PutUint32(p, uint32(len(gfns)))
	e := p[4:]
	for i, g := range gfns {
		if g >= pages {
			return fmt.Errorf("pages record: page %d (entry %d) is beyond the %d pages of memory", g, i, pages)
		}
		binary.LittleEndian.PutUint64(e, g)
		copy(e[8:wirePageEntry], mem[g*PageSize:(g+1)*PageSize])
		e = e[wirePageEntry:]
	}
	return w.record(RecPages, p)
}

// maxBitmapWords is the most bitmap words one RecBitmap record carries:
// 32 GiB of guest memory.
const maxBitmapWords = (MaxPayload - 8) / 8

// Bitmap encodes a whole dirty bitmap (words of bitmap.Bitmap.Words), in
// as many RecBitmap records as it takes, in order.
func (w *Writer) Bitmap(words []uint64) error {
	if uint64(len(words)) > math.MaxUint32 {
		return fmt.Errorf("bitmap record: %d words", len(words))
	}
	for first := 0; first == 0 || first < len(words); first += maxBitmapWords {
		chunk := words[first:min(len(words), first+maxBitmapWords)]
		p := binary.LittleEndian.AppendUint32(w.buf[:0], uint32(first))
		p = binary.LittleEndian.AppendUint32(p, uint32(len(chunk)))
		if w.weigh != nil {
			if err := w.weighed(RecBitmap, len(p)+8*len(chunk)); err != nil {
				return err
			}
			continue
		}
		for _, v := range chunk {
			p = binary.LittleEndian.AppendUint64(p, v)
		}
		if err := w.record(RecBitmap, p); err != nil {
			return err
		}
	}
	return nil
}

// Request encodes the destination's request for pages gfns (1 to
// MaxBatch).
func (w *Writer) Request(gfns []uint64) error { return w.gfnRecord(RecRequest, gfns) }

// Later encodes TSMC's stage-1 news of pages (1 to MaxBatch) that stage 3
// will bring.
func (w *Writer) Later(gfns []uint64) error { return w.gfnRecord(RecLater, gfns) }

func (w *Writer) gfnRecord(t RecordType, gfns []uint64) error {
	if len(gfns) < 1 || len(gfns) > MaxBatch {
		return fmt.Errorf("%s record: %d pages, want 1 to %d", t, len(gfns), MaxBatch)
	}
	p := binary.LittleEndian.AppendUint32(w.buf[:0], uint32(len(gfns)))
	for _, g := range gfns {
		p = binary.LittleEndian.AppendUint64(p, g)
	}
	return w.record(t, p)
}

// Compressed encodes a batch of pages gfns (1 to MaxBatch) whose contents
// coded is, as package mecom encodes them.
func (w *Writer) Compressed(gfns []uint64, coded []byte) error {
	if len(gfns) < 1 || len(gfns) > MaxBatch {
		return fmt.Errorf("compressed record: %d pages, want 1 to %d", len(gfns), MaxBatch)
	}
	if n := 4 + 8*len(gfns) + len(coded); n > MaxPayload {
		return fmt.Errorf("compressed record: %d bytes do not fit in a record", n)
	} else if w.weigh != nil {
		return w.weighed(RecCompressed, n)
	}
	p := binary.LittleEndian.AppendUint32(w.buf[:0], uint32(len(gfns)))
	for _, g := range gfns {
		p = binary.LittleEndian.AppendUint64(p, g)
	}
	p = append(p, coded...)
	return w.record(RecCompressed, p)
}

// Zero encodes a run of count all-zero pages starting at page first.
func (w *Writer) Zero(first, count uint64) error {
	if count == 0 || first+count < first {
		return fmt.Errorf("zero record: run of %d pages at page %d", count, first)
	}
	p := binary.LittleEndian.AppendUint64(w.buf[:0], first)
	p = binary.LittleEndian.AppendUint64(p, count)
	return w.record(RecZero, p)
}

// EndRound marks the end of pre-copy round round.
func (w *Writer) EndRound(round uint32) error {
	return w.record(RecEndRound, binary.LittleEndian.AppendUint32(w.buf[:0], round))
}

// State encodes a guest state of kind (StateGuest), at most MaxState
// bytes, as RecState records of at most MaxStateChunk bytes each.
func (w *Writer) State(kind uint8, state []byte) error {
	if kind&^StateZstd != StateGuest {
		return fmt.Errorf("state record: unknown state kind %d", kind)
	}
	if len(state) > MaxState {
		return fmt.Errorf("state record: %s of state, more than the %s a migration carries", wireSize(uint64(len(state))), wireSize(MaxState))
	}
	off := 0
	for {
		n := min(len(state)-off, MaxStateChunk)
		if err := w.stateChunk(kind, uint32(len(state)), uint32(off), state[off:off+n]); err != nil {
			return err
		}
		if off += n; off == len(state) {
			return nil
		}
	}
}

// stateChunk encodes one RecState record.
func (w *Writer) stateChunk(kind uint8, total, offset uint32, data []byte) error {
	p := append(w.buf[:0], kind)
	p = binary.LittleEndian.AppendUint32(p, total)
	p = binary.LittleEndian.AppendUint32(p, offset)
	p = append(p, data...)
	return w.record(RecState, p)
}

// Digest encodes a memory digest.
func (w *Writer) Digest(d Digest) error {
	if d.ChunkBytes == 0 || d.ChunkBytes%PageSize != 0 {
		return fmt.Errorf("digest record: chunk of %d bytes is not a whole number of pages", d.ChunkBytes)
	}
	if len(d.Sums) > wireMaxDigest || 8+4*len(d.Sums) > MaxPayload {
		return fmt.Errorf("digest record: %d sums do not fit in a record", len(d.Sums))
	}
	p := binary.LittleEndian.AppendUint32(w.buf[:0], d.ChunkBytes)
	p = binary.LittleEndian.AppendUint32(p, uint32(len(d.Sums)))
	for _, s := range d.Sums {
		p = binary.LittleEndian.AppendUint32(p, s)
	}
	return w.record(RecDigest, p)
}

// Verified encodes the destination's verdict on its memory. A reason that
// is not valid UTF-8 or longer than 4096 bytes is repaired and cut rather
// than refused: it is for people, and failing to send it would lose the
// verdict itself.
func (w *Writer) Verified(ok bool, reason string) error {
	return w.verdict(ok, 0, reason)
}

// Stage3Verified encodes a post-copy destination's verdict that its memory
// is whole, with the time its guest's vCPUs waited for missing pages.
func (w *Writer) Stage3Verified(waited time.Duration) error {
	return w.verdict(true, max(waited, 0), "")
}

func (w *Writer) verdict(ok bool, waited time.Duration, reason string) error {
	p := append(w.buf[:0], 0)
	if ok {
		p[0] = 1
	}
	p = binary.LittleEndian.AppendUint64(p, uint64(waited))
	p = append(p, wireText(reason)...)
	return w.record(RecVerified, p)
}

// Commit encodes the source's commit: the destination takes the guest,
// and runs it if run, or holds it paused (its user paused it on the source
// before the switch-over).
func (w *Writer) Commit(run bool) error {
	p := append(w.buf[:0], 0)
	if run {
		p[0] = 1
	}
	return w.record(RecCommit, p)
}

// Started encodes the destination's word that its guest runs, since
// after it sent its verdict.
func (w *Writer) Started(since time.Duration) error {
	return w.record(RecStarted, binary.LittleEndian.AppendUint64(w.buf[:0], uint64(max(since, 0))))
}

// Sync encodes a RecSync, the barrier (empty).
func (w *Writer) Sync() error { return w.record(RecSync, nil) }

// Text encodes a record whose payload is a reason or nothing: RecAccept
// and RecEnd (text must be ""), RecRefuse and RecAbort (text is repaired
// and cut to 4096 bytes like Verified's reason).
func (w *Writer) Text(t RecordType, text string) error {
	switch t {
	case RecAccept, RecEnd:
		if text != "" {
			return fmt.Errorf("%s record: carries no text, got %q", t, text)
		}
		return w.record(t, w.buf[:0])
	case RecRefuse, RecAbort:
		return w.record(t, append(w.buf[:0], wireText(text)...))
	default:
		return fmt.Errorf("%s record: not a text record", t)
	}
}

// wireText makes s valid UTF-8 of at most wireMaxText bytes, cutting at a
// character boundary.
func wireText(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= wireMaxText {
		return s
	}
	cut := wireMaxText
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}

// recordCRC is a record's checksum: CRC-32C of its header's first 8
// bytes, then its payload.
func recordCRC(header, payload []byte) uint32 {
	return crc32.Update(crc32.Update(0, wireCastagnoli, header[:8]), wireCastagnoli, payload)
}

// record frames payload p as a record of type t.
func (w *Writer) record(t RecordType, p []byte) error {
	w.buf = p[:0] // keep whatever capacity the payload grew to
	if w.weigh != nil {
		return w.weighed(t, len(p))
	}
	h := w.hdr[:]
	h[0], h[1], h[2], h[3] = byte(t), 0, 0, 0
	binary.LittleEndian.PutUint32(h[4:], uint32(len(p)))
	crc := recordCRC(h, p)
	binary.LittleEndian.PutUint32(h[8:], crc)
	if _, err := w.bw.Write(h); err != nil {
		return fmt.Errorf("write %s record: %w", t, err)
	}
	if _, err := w.bw.Write(p); err != nil {
		return fmt.Errorf("write %s record: %w", t, err)
	}
	w.n += uint64(wireHeaderSize + len(p))
	return nil
}

// recFlush is no record: a weighing Writer passes it when flushed.
const recFlush RecordType = 0

// weighed counts a record of type t with an n-byte payload, weighed
// rather than written.
func (w *Writer) weighed(t RecordType, n int) error {
	if err := w.weigh(t, wireHeaderSize+n); err != nil {
		return fmt.Errorf("write %s record: %w", t, err)
	}
	w.n += uint64(wireHeaderSize + n)
	return nil
}

// Record is one decoded record; only the fields of its Type are set.
//
// The Reader reuses the Record, and the GFNs and Data slices, on the next
// call to Next: copy the pages out before asking for another record; so is
// State.Data. Digest.Sums and Text are allocated afresh for each record and may
// be kept.
type Record struct {
	Type         RecordType
	Hello        Hello         // RecHello
	GFNs         []uint64      // RecPages: page numbers, parallel to Data
	Data         []byte        // RecPages: len(GFNs)*PageSize bytes, page i at Data[i*PageSize:]
	First, Count uint64        // RecZero
	Round        uint32        // RecEndRound
	Digest       Digest        // RecDigest
	OK           bool          // RecVerified; RecCommit: run the guest (false: hold it paused)
	Waited       time.Duration // RecVerified: the destination's guest's wait for missing pages (post-copy)
	Since        time.Duration // RecStarted: from the destination's verdict to its guest's start
	Text         string        // RecRefuse, RecAbort, RecVerified reason
	Bitmap       []uint64      // RecBitmap: words BitmapFirst… of the bitmap (allocated afresh)
	BitmapFirst  uint64        // RecBitmap
	Coded        []byte        // RecCompressed: the mecom batch for GFNs (reused like Data)
	State        StateChunk    // RecState
}

// StateChunk is one RecState record: bytes [Offset, Offset+len(Data)) of a
// state of Total bytes.
type StateChunk struct {
	Kind          uint8
	Total, Offset uint32
	Data          []byte // reused like Record.Data
}

// Reader decodes records. Limits bound what page numbers are legal. Not safe
// for concurrent use.
type Reader struct {
	br      *bufio.Reader
	n       uint64 // bytes consumed
	records uint64 // records decoded
	pages   uint64
	limited bool  // SetLimits was called: the handshake is done
	err     error // the first error; the stream cannot be resynchronised after it
	hdr     [wireHeaderSize]byte
	buf     []byte // payload; RecPages data is rearranged within it
	rec     Record

	// The record being decoded, for error messages.
	at  uint64
	typ RecordType
}

// NewReader returns a Reader that decodes r.
func NewReader(r io.Reader) *Reader {
	return &Reader{br: bufio.NewReaderSize(r, wireBufSize)}
}

// SetLimits tells the Reader the guest the handshake agreed on: pages of
// memory. Until it is called, records that describe guest state (RecPages,
// RecZero, RecState, RecDigest, …) are malformed.
func (r *Reader) SetLimits(pages uint64) {
	r.pages, r.limited = pages, true
}

// Bytes returns the bytes consumed so far.
func (r *Reader) Bytes() uint64 { return r.n }

// Next decodes the next record. It returns io.EOF only when the stream ends
// cleanly between records; a stream ending inside a record gives an error
// wrapping io.ErrUnexpectedEOF, and a stream that breaks the protocol one
// wrapping ErrMalformed that names the record's index, type and offset. A
// RecPages batch may name a page twice; the later copy wins. After an error,
// Next returns the same error again.
func (r *Reader) Next() (*Record, error) {
	if r.err != nil {
		return nil, r.err
	}
	rec, err := r.next()
	if err != nil {
		r.err = err
		return nil, err
	}
	r.records++
	return rec, nil
}

func (r *Reader) next() (*Record, error) {
	r.at, r.typ = r.n, 0
	h := r.hdr[:]
	n, err := io.ReadFull(r.br, h)
	r.n += uint64(n)
	if n > 0 {
		r.typ = RecordType(h[0])
	}
	switch {
	case err == nil:
	case n == 0 && errors.Is(err, io.EOF):
		return nil, io.EOF
	case errors.Is(err, io.ErrUnexpectedEOF):
		return nil, r.fail(io.ErrUnexpectedEOF, "stream ends %d bytes into the %d-byte header", n, wireHeaderSize)
	default:
		return nil, r.fail(err, "read header")
	}

	if r.records == 0 && string(h[:4]) == qemuStreamMagic {
		return nil, r.malformed("QEMU's own migration stream, not pagecast's: the source runs QEMU's migration (pagecast migrate --engine qemu, or QMP migrate on a QEMU) into pagecast's receiver; start the destination with --engine qemu for that, or migrate with pagecast's engine")
	}
	if r.records == 0 && h[0] == tlsHandshakeRecord && h[1] == 3 {
		return nil, r.malformed("a TLS handshake, not pagecast's plain stream: the source was given --tls-cert, --tls-key and --tls-ca, and this end was not; give both ends the same, or neither")
	}
	if r.records == 0 && httpRequest(h[:]) {
		return nil, r.malformed("an HTTP request, not a pagecast migration stream: this port takes migrations only")
	}
	size := binary.LittleEndian.Uint32(h[4:])
	if size > MaxPayload {
		return nil, r.malformed("%spayload of %d bytes exceeds the %d-byte limit", r.stranger(), size, MaxPayload)
	}
	p := r.payload(int(size))
	n, err = io.ReadFull(r.br, p)
	r.n += uint64(n)
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, r.fail(io.ErrUnexpectedEOF, "stream ends %d bytes into the %d-byte record", wireHeaderSize+n, wireHeaderSize+int(size))
		}
		return nil, r.fail(err, "read payload")
	}
	want := binary.LittleEndian.Uint32(h[8:])
	if got := recordCRC(h, p); got != want {
		return nil, r.malformed("%schecksum %08x, header says %08x", r.stranger(), got, want)
	}
	if h[1] != 0 {
		return nil, r.malformed("flags %#02x, want 0", h[1])
	}
	if h[2] != 0 || h[3] != 0 {
		return nil, r.malformed("reserved bytes %#02x %#02x, want 0", h[2], h[3])
	}
	return r.decode(p)
}

// payload returns a buffer of n bytes (n ≤ MaxPayload), growing the one it
// keeps by doubling, never beyond MaxPayload.
func (r *Reader) payload(n int) []byte {
	if cap(r.buf) < n {
		r.buf = make([]byte, max(n, min(2*cap(r.buf), MaxPayload)))
	}
	return r.buf[:n]
}

// decode interprets the checksummed payload p of a record of type r.typ.
func (r *Reader) decode(p []byte) (*Record, error) {
	rec := &r.rec
	*rec = Record{Type: r.typ, GFNs: rec.GFNs[:0]}
	var err error
	switch r.typ {
	case RecHello:
		rec.Hello, err = r.decodeHello(p)
	case RecStarted:
		switch {
		case len(p) != 8:
			err = r.malformed("%d-byte payload, want the 8 bytes of the time since the verdict", len(p))
		case binary.LittleEndian.Uint64(p) > math.MaxInt64:
			err = r.malformed("the time since the verdict is %d ns, beyond an int64", binary.LittleEndian.Uint64(p))
		default:
			rec.Since = time.Duration(binary.LittleEndian.Uint64(p))
		}
	case RecAccept, RecEnd, RecSync:
		if len(p) != 0 {
			err = r.malformed("%d-byte payload, want none", len(p))
		}
	case RecCommit:
		switch {
		case len(p) != 1:
			err = r.malformed("%d-byte payload, want the run byte", len(p))
		case p[0] > 1:
			err = r.malformed("run byte %d, want 0 or 1", p[0])
		default:
			rec.OK = p[0] == 1
		}
	case RecRefuse, RecAbort:
		rec.Text, err = r.decodeText(p)
	case RecVerified:
		switch {
		case len(p) < 1:
			err = r.malformed("empty payload, want a verdict byte")
		case p[0] > 1:
			err = r.malformed("verdict byte %d, want 0 or 1", p[0])
		case len(p) < 9:
			err = r.malformed("%d-byte payload, want a verdict byte and the guest's wait (9 bytes or more)", len(p))
		case binary.LittleEndian.Uint64(p[1:]) > math.MaxInt64:
			err = r.malformed("the guest's wait is %d ns, beyond an int64", binary.LittleEndian.Uint64(p[1:]))
		default:
			rec.OK = p[0] == 1
			rec.Waited = time.Duration(binary.LittleEndian.Uint64(p[1:]))
			rec.Text, err = r.decodeText(p[9:])
		}
	case RecPages:
		err = r.decodePages(rec, p)
	case RecZero:
		rec.First, rec.Count, err = r.decodeZero(p)
	case RecEndRound:
		if len(p) != 4 {
			err = r.malformed("%d-byte payload, want 4", len(p))
		} else {
			rec.Round = binary.LittleEndian.Uint32(p)
		}
	case RecState:
		rec.State, err = r.decodeState(p)
	case RecDigest:
		rec.Digest, err = r.decodeDigest(p)
	case RecBitmap:
		rec.BitmapFirst, rec.Bitmap, err = r.decodeBitmap(p)
	case RecRequest, RecLater:
		rec.GFNs, _, err = r.decodeGFNs(rec.GFNs, p, false)
	case RecCompressed:
		rec.GFNs, rec.Coded, err = r.decodeGFNs(rec.GFNs, p, true)
	default:
		err = r.malformed("%sunknown record type %d", r.stranger(), uint8(r.typ))
	}
	if err != nil {
		return nil, err
	}
	return rec, nil
}

func (r *Reader) decodeHello(p []byte) (Hello, error) {
	if len(p) < len(wireMagic) || !bytes.Equal(p[:len(wireMagic)], wireMagic[:]) {
		return Hello{}, r.malformed("not a pagecast migration stream (no magic)")
	}
	if len(p) < wireHelloFixed {
		return Hello{}, r.malformed("%d-byte payload, want at least %d", len(p), wireHelloFixed)
	}
	h := Hello{
		Version:     binary.LittleEndian.Uint16(p[8:]),
		PageSize:    binary.LittleEndian.Uint32(p[10:]),
		MemoryBytes: binary.LittleEndian.Uint64(p[14:]),
		VCPUs:       binary.LittleEndian.Uint32(p[22:]),
	}
	copy(h.Image[:], p[26:58])
	modeLen := int(p[58])
	if modeLen > wireMaxMode {
		return Hello{}, r.malformed("mode of %d bytes, more than %d", modeLen, wireMaxMode)
	}
	if len(p) != wireHelloFixed+modeLen {
		// A different version may lay the hello out differently; say so,
		// since that, not damage, is the likely cause.
		var v string
		if h.Version != ProtocolVersion {
			v = fmt.Sprintf(" (protocol version %d at the source, %d here)", h.Version, ProtocolVersion)
		}
		return Hello{}, r.malformed("%d-byte payload, want %d for a %d-byte mode%s", len(p), wireHelloFixed+modeLen, modeLen, v)
	}
	mode := p[wireHelloFixed:]
	if !utf8.Valid(mode) {
		return Hello{}, r.malformed("mode %q is not valid UTF-8", mode)
	}
	h.Mode = string(mode)
	return h, nil
}

func (r *Reader) decodeText(p []byte) (string, error) {
	if len(p) > wireMaxText {
		return "", r.malformed("text of %d bytes, more than %d", len(p), wireMaxText)
	}
	if !utf8.Valid(p) {
		return "", r.malformed("text is not valid UTF-8")
	}
	// Safe to print wherever it goes (a terminal, a log,
	// query-migrate's error-desc): a hostile peer cannot clear or
	// rewrite the user's screen.
	return printable.Line(string(p)), nil
}

func (r *Reader) decodePages(rec *Record, p []byte) error {
	if err := r.afterHandshake(); err != nil {
		return err
	}
	if len(p) < 4 {
		return r.malformed("%d-byte payload, too short for a page count", len(p))
	}
	count := int(binary.LittleEndian.Uint32(p))
	if count < 1 || count > MaxBatch {
		return r.malformed("%d pages in a batch, want 1 to %d", count, MaxBatch)
	}
	if want := 4 + count*wirePageEntry; len(p) != want {
		return r.malformed("%d-byte payload, want %d for %d pages", len(p), want, count)
	}
	gfns := slices.Grow(rec.GFNs[:0], count)
	for i := range count {
		g := binary.LittleEndian.Uint64(p[4+i*wirePageEntry:])
		if g >= r.pages {
			return r.malformed("page %d is beyond the %d pages of guest memory", g, r.pages)
		}
		gfns = append(gfns, g)
	}
	// Close up the page contents in place, over the page numbers already
	// read, rather than copy them to a second buffer: page i moves down by
	// 12+8i bytes, never onto page i+1 before that one has moved.
	for i := range count {
		src := 4 + i*wirePageEntry + 8
		copy(p[i*PageSize:(i+1)*PageSize], p[src:src+PageSize])
	}
	rec.GFNs, rec.Data = gfns, p[:count*PageSize]
	return nil
}

func (r *Reader) decodeZero(p []byte) (first, count uint64, err error) {
	if err := r.afterHandshake(); err != nil {
		return 0, 0, err
	}
	if len(p) != 16 {
		return 0, 0, r.malformed("%d-byte payload, want 16", len(p))
	}
	first, count = binary.LittleEndian.Uint64(p), binary.LittleEndian.Uint64(p[8:])
	switch {
	case count == 0:
		return 0, 0, r.malformed("empty run of zero pages at page %d", first)
	case first+count < first || first+count > r.pages:
		return 0, 0, r.malformed("zero pages %d+%d are beyond the %d pages of guest memory", first, count, r.pages)
	}
	return first, count, nil
}

func (r *Reader) decodeState(p []byte) (StateChunk, error) {
	if err := r.afterHandshake(); err != nil {
		return StateChunk{}, err
	}
	if len(p) < wireStateHeader {
		return StateChunk{}, r.malformed("%d-byte payload, too short for a state chunk's kind, total and offset", len(p))
	}
	c := StateChunk{Kind: p[0], Total: binary.LittleEndian.Uint32(p[1:]), Offset: binary.LittleEndian.Uint32(p[5:]),
		Data: p[wireStateHeader:]}
	n := uint64(len(c.Data))
	switch {
	case c.Kind&^StateZstd != StateGuest:
		return StateChunk{}, r.malformed("unknown state kind %d", c.Kind)
	case c.Total > MaxState:
		return StateChunk{}, r.malformed("state of %s, more than the %s a migration carries", wireSize(uint64(c.Total)), wireSize(MaxState))
	case uint64(c.Offset)+n > uint64(c.Total):
		return StateChunk{}, r.malformed("state bytes %d+%d are beyond its %d bytes", c.Offset, n, c.Total)
	case n == 0 && c.Total != 0:
		return StateChunk{}, r.malformed("empty chunk of a %d-byte state", c.Total)
	}
	return c, nil
}

// stateBuffer puts a state back together from its RecState chunks, which
// must come in order. It grows with the bytes that arrive, never by what
// a chunk announces.
type stateBuffer struct {
	kind  uint8
	total uint32
	data  []byte
	begun bool
}

// add appends chunk c; it is an error wrapping ErrMalformed for a chunk
// out of order, of another state, or after the state was complete.
func (b *stateBuffer) add(c StateChunk) error {
	switch {
	case b.begun && b.done():
		return fmt.Errorf("state chunk after the whole %d-byte state arrived: %w", b.total, ErrMalformed)
	case b.begun && (c.Kind != b.kind || c.Total != b.total):
		return fmt.Errorf("state chunk of kind %d, %d bytes, within a state of kind %d, %d bytes: %w", c.Kind, c.Total, b.kind, b.total, ErrMalformed)
	case uint64(c.Offset) != uint64(len(b.data)):
		return fmt.Errorf("state chunk at byte %d where byte %d is due: %w", c.Offset, len(b.data), ErrMalformed)
	}
	b.kind, b.total, b.begun = c.Kind, c.Total, true
	b.data = append(b.data, c.Data...)
	return nil
}

// done reports whether the whole state has arrived.
func (b *stateBuffer) done() bool { return b.begun && uint64(len(b.data)) == uint64(b.total) }

func (r *Reader) decodeDigest(p []byte) (Digest, error) {
	if err := r.afterHandshake(); err != nil {
		return Digest{}, err
	}
	if len(p) < 8 {
		return Digest{}, r.malformed("%d-byte payload, too short for chunk size and count", len(p))
	}
	chunk, count := binary.LittleEndian.Uint32(p), binary.LittleEndian.Uint32(p[4:])
	if chunk == 0 || chunk%PageSize != 0 {
		return Digest{}, r.malformed("digest chunk of %d bytes is not a whole number of pages", chunk)
	}
	if count > wireMaxDigest {
		return Digest{}, r.malformed("%d digest sums, more than %d", count, wireMaxDigest)
	}
	if want := 8 + 4*int(count); len(p) != want {
		return Digest{}, r.malformed("%d-byte payload, want %d for %d sums", len(p), want, count)
	}
	chunkPages := uint64(chunk / PageSize)
	want := r.pages / chunkPages
	if r.pages%chunkPages != 0 {
		want++
	}
	if uint64(count) != want {
		return Digest{}, r.malformed("%d digest sums for %d pages of guest memory in chunks of %s, want %d",
			count, r.pages, wireSize(uint64(chunk)), want)
	}
	d := Digest{ChunkBytes: chunk, Sums: make([]uint32, count)}
	for i := range d.Sums {
		d.Sums[i] = binary.LittleEndian.Uint32(p[8+4*i:])
	}
	return d, nil
}

func (r *Reader) decodeBitmap(p []byte) (uint64, []uint64, error) {
	if err := r.afterHandshake(); err != nil {
		return 0, nil, err
	}
	want := (r.pages + 63) / 64
	if len(p) < 8 {
		return 0, nil, r.malformed("%d-byte payload, too short for first word and count", len(p))
	}
	first, count := uint64(binary.LittleEndian.Uint32(p)), uint64(binary.LittleEndian.Uint32(p[4:]))
	if count == 0 || first+count > want || uint64(len(p)) != 8+8*count {
		return 0, nil, r.malformed("%d-byte payload of words %d…+%d, want a whole chunk of the %d words for %d pages", len(p), first, count, want, r.pages)
	}
	words := make([]uint64, count)
	for i := range words {
		words[i] = binary.LittleEndian.Uint64(p[8+8*i:])
	}
	if extra := r.pages % 64; extra != 0 && first+count == want && words[count-1]>>extra != 0 {
		return 0, nil, r.malformed("bitmap marks pages beyond the %d pages of guest memory", r.pages)
	}
	return first, words, nil
}

// bitmapChunks assembles a bitmap sent in RecBitmap records, which come
// in order.
type bitmapChunks struct {
	have uint64 // words received
}

// add copies rec's words into words.
func (b *bitmapChunks) add(words []uint64, rec *Record) error {
	if rec.BitmapFirst != b.have || rec.BitmapFirst+uint64(len(rec.Bitmap)) > uint64(len(words)) {
		return fmt.Errorf("bitmap chunk of words %d…+%d after %d of %d words: %w", rec.BitmapFirst, len(rec.Bitmap), b.have, len(words), ErrMalformed)
	}
	copy(words[rec.BitmapFirst:], rec.Bitmap)
	b.have += uint64(len(rec.Bitmap))
	return nil
}

// decodeGFNs reads a count and that many page numbers; with rest, the
// bytes after them are returned too (a compressed batch), else there must
// be none.
func (r *Reader) decodeGFNs(gfns []uint64, p []byte, rest bool) ([]uint64, []byte, error) {
	if err := r.afterHandshake(); err != nil {
		return nil, nil, err
	}
	if len(p) < 4 {
		return nil, nil, r.malformed("%d-byte payload, too short for a page count", len(p))
	}
	count := int(binary.LittleEndian.Uint32(p))
	if count < 1 || count > MaxBatch {
		return nil, nil, r.malformed("%d pages, want 1 to %d", count, MaxBatch)
	}
	end := 4 + 8*count
	if len(p) < end || (!rest && len(p) != end) {
		return nil, nil, r.malformed("%d-byte payload for %d pages", len(p), count)
	}
	gfns = gfns[:0]
	for i := range count {
		g := binary.LittleEndian.Uint64(p[4+8*i:])
		if g >= r.pages {
			return nil, nil, r.malformed("page %d is beyond the %d pages of guest memory", g, r.pages)
		}
		gfns = append(gfns, g)
	}
	return gfns, p[end:], nil
}

func (r *Reader) afterHandshake() error {
	if !r.limited {
		return r.malformed("before the handshake")
	}
	return nil
}

// qemuStreamMagic begins QEMU's migration stream (QEMU_VM_FILE_MAGIC).
const qemuStreamMagic = "QEVM"

// tlsHandshakeRecord is the first byte of a TLS stream (a handshake
// record, version 3.x next): a TLS source dialling a plain destination
// was said as "record-type-22 … payload of 83886506 bytes" (found by a
// security walk).
const tlsHandshakeRecord = 0x16

// httpRequest reports whether hdr starts as an HTTP request does.
func httpRequest(hdr []byte) bool {
	for _, m := range []string{"GET ", "HEAD", "POST", "PUT ", "DELE", "OPTI", "PATC", "CONN", "TRAC"} {
		if bytes.HasPrefix(hdr, []byte(m)) {
			return true
		}
	}
	return false
}

// stranger prefixes a header-level complaint about the very first record:
// there the likely cause is a peer that does not speak the protocol at all.
func (r *Reader) stranger() string {
	if r.records == 0 {
		return "not a pagecast migration stream: "
	}
	return ""
}

// malformed reports a protocol violation in the record being decoded.
func (r *Reader) malformed(format string, args ...any) error {
	return r.fail(ErrMalformed, format, args...)
}

// fail reports cause, placed at the record being decoded.
func (r *Reader) fail(cause error, format string, args ...any) error {
	where := fmt.Sprintf("record %d at byte %d", r.records, r.at)
	if r.n > r.at { // the type byte was read
		where = fmt.Sprintf("record %d (%s) at byte %d", r.records, r.typ, r.at)
	}
	return fmt.Errorf("%s: %s: %w", where, fmt.Sprintf(format, args...), cause)
}
