package migrator

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"math/rand/v2"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/pagecast/pagecast/migrator/mecom"
)

// recTestPages is the limit the tests' readers set after the first record,
// as the fuzz target does.
const recTestPages = 256

// recTestMemory returns pages pages of memory with recognisable contents.
func recTestMemory(pages int) []byte {
	mem := make([]byte, pages*PageSize)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range mem {
		mem[i] = byte(rng.Uint32())
	}
	return mem
}

// recTestState returns n bytes of a guest state.
func recTestState(n int) []byte {
	st := make([]byte, n)
	for i := range st {
		st[i] = byte(i*7 + i>>8)
	}
	return st
}

// recTestHello is a valid hello.
func recTestHello() Hello {
	h := Hello{Version: ProtocolVersion, PageSize: PageSize, MemoryBytes: recTestPages * PageSize, VCPUs: 2, Mode: "predictive"}
	for i := range h.Image {
		h.Image[i] = byte(0xa0 + i)
	}
	return h
}

// recTestStream encodes one record of every type (pages twice, with a
// duplicate page in the second batch) and returns the stream, the records
// a Reader should give back and the offsets of the record boundaries.
func recTestStream(t testing.TB) ([]byte, []Record, []int) {
	t.Helper()
	mem := recTestMemory(recTestPages)
	state := recTestState(300)
	var out bytes.Buffer
	w := NewWriter(&out)
	var want []Record
	var bounds []int
	step := func(err error, r Record) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, r)
		bounds = append(bounds, int(w.Bytes()))
	}
	pages := func(gfns ...uint64) Record {
		r := Record{Type: RecPages, GFNs: gfns}
		for _, g := range gfns {
			r.Data = append(r.Data, mem[g*PageSize:(g+1)*PageSize]...)
		}
		return r
	}
	step(w.Hello(recTestHello()), Record{Type: RecHello, Hello: recTestHello()})
	step(w.Text(RecAccept, ""), Record{Type: RecAccept})
	step(w.Pages([]uint64{3}, mem), pages(3))
	step(w.Pages([]uint64{255, 0, 255}, mem), pages(255, 0, 255))
	step(w.Zero(4, 250), Record{Type: RecZero, First: 4, Count: 250})
	step(w.EndRound(1), Record{Type: RecEndRound, Round: 1})
	step(w.State(StateGuest, state), Record{Type: RecState, State: StateChunk{Kind: StateGuest, Total: 300, Data: state}})
	d := ComputeDigest(mem)
	step(w.Digest(d), Record{Type: RecDigest, Digest: d})
	step(w.Later([]uint64{7, 200, 8}), Record{Type: RecLater, GFNs: []uint64{7, 200, 8}})
	step(w.Text(RecEnd, ""), Record{Type: RecEnd})
	step(w.Verified(true, ""), Record{Type: RecVerified, OK: true})
	step(w.Stage3Verified(1234567890*time.Nanosecond), Record{Type: RecVerified, OK: true, Waited: 1234567890 * time.Nanosecond})
	step(w.Verified(false, "memory differs in 1 of 1 chunks of 1 MiB, first at 0x0-0xfffff"),
		Record{Type: RecVerified, Text: "memory differs in 1 of 1 chunks of 1 MiB, first at 0x0-0xfffff"})
	step(w.Commit(true), Record{Type: RecCommit, OK: true})
	step(w.Started(1700*time.Microsecond), Record{Type: RecStarted, Since: 1700 * time.Microsecond})
	step(w.Sync(), Record{Type: RecSync})
	step(w.Commit(false), Record{Type: RecCommit})
	step(w.Text(RecRefuse, "guest image differs"), Record{Type: RecRefuse, Text: "guest image differs"})
	step(w.Text(RecAbort, "cancelled — by the operator"), Record{Type: RecAbort, Text: "cancelled — by the operator"})
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if int(w.Bytes()) != out.Len() {
		t.Fatalf("Writer.Bytes = %d, wrote %d", w.Bytes(), out.Len())
	}
	return out.Bytes(), want, bounds
}

// recReadAll decodes data as the receiver would: limits set after the
// first record. The records are deep copies.
func recReadAll(data []byte) ([]Record, *Reader, error) {
	r := NewReader(bytes.NewReader(data))
	var got []Record
	for {
		rec, err := r.Next()
		if err != nil {
			return got, r, err
		}
		c := *rec
		c.GFNs = append([]uint64(nil), rec.GFNs...)
		c.Data = append([]byte(nil), rec.Data...)
		c.State.Data = append([]byte(nil), rec.State.Data...)
		got = append(got, c)
		if len(got) == 1 {
			r.SetLimits(recTestPages)
		}
	}
}

// recNormal makes empty and nil slices compare equal.
func recNormal(rs []Record) []Record {
	out := make([]Record, len(rs))
	for i, r := range rs {
		if len(r.GFNs) == 0 {
			r.GFNs = nil
		}
		if len(r.Data) == 0 {
			r.Data = nil
		}
		if len(r.State.Data) == 0 {
			r.State.Data = nil
		}
		out[i] = r
	}
	return out
}

func TestWireRoundTrip(t *testing.T) {
	data, want, _ := recTestStream(t)
	got, r, err := recReadAll(data)
	if err != io.EOF {
		t.Fatalf("stream ends with %v, want io.EOF", err)
	}
	if r.Bytes() != uint64(len(data)) {
		t.Errorf("Reader.Bytes = %d, want %d", r.Bytes(), len(data))
	}
	got, want = recNormal(got), recNormal(want)
	if len(got) != len(want) {
		t.Fatalf("read %d records, want %d", len(got), len(want))
	}
	for i := range want {
		if !reflect.DeepEqual(got[i], want[i]) {
			g, w := got[i], want[i]
			g.Data, w.Data = nil, nil // too long to print; compared above
			t.Errorf("record %d (%s) differs (%d and %d bytes of data):\n got %+v\nwant %+v",
				i, want[i].Type, len(got[i].Data), len(want[i].Data), g, w)
		}
	}
	// Every record type is covered.
	seen := map[RecordType]bool{}
	for _, r := range want {
		seen[r.Type] = true
	}
	for typ := RecHello; typ <= RecAbort; typ++ {
		if !seen[typ] {
			t.Errorf("the test stream has no %s record", typ)
		}
	}
}

func TestWireFullBatch(t *testing.T) {
	const pages = 4 * MaxBatch
	mem := recTestMemory(pages)
	gfns := make([]uint64, MaxBatch)
	for i := range gfns {
		gfns[i] = uint64(pages - 1 - 3*i)
	}
	var out bytes.Buffer
	w := NewWriter(&out)
	if err := w.Pages(gfns, mem); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if want := wireHeaderSize + 4 + MaxBatch*wirePageEntry; out.Len() != want {
		t.Fatalf("full batch is %d bytes, want %d", out.Len(), want)
	}
	r := NewReader(&out)
	r.SetLimits(pages)
	rec, err := r.Next()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(rec.GFNs, gfns) {
		t.Errorf("page numbers differ")
	}
	for i, g := range gfns {
		if !bytes.Equal(rec.Data[i*PageSize:(i+1)*PageSize], mem[g*PageSize:(g+1)*PageSize]) {
			t.Fatalf("page %d (entry %d) differs", g, i)
		}
	}
	if _, err := r.Next(); err != io.EOF {
		t.Errorf("after the batch: %v, want io.EOF", err)
	}
}

func TestWireRecordTypeString(t *testing.T) {
	for typ, want := range map[RecordType]string{
		RecHello: "hello", RecEndRound: "end-round", RecAbort: "abort", RecBitmap: "bitmap", RecCompressed: "compressed", RecLater: "later", RecStarted: "started", RecSync: "sync", 0: "record-type-0", 19: "record-type-19", 255: "record-type-255",
	} {
		if got := typ.String(); got != want {
			t.Errorf("RecordType(%d).String() = %q, want %q", uint8(typ), got, want)
		}
	}
}

func TestWireHelloCheck(t *testing.T) {
	local := recTestHello()
	other := func(f func(*Hello)) Hello {
		h := recTestHello()
		f(&h)
		return h
	}
	for _, tc := range []struct {
		name  string
		hello Hello
		want  string // "" for nil
	}{
		{"same", local, ""},
		{"mode ignored", other(func(h *Hello) { h.Mode = "precopy" }), ""},
		{"version", other(func(h *Hello) { h.Version = 1 }), fmt.Sprintf("protocol version 1 at the source, %d at the destination", ProtocolVersion)},
		{"page size", other(func(h *Hello) { h.PageSize = 8192 }), "page size 8192 bytes at the source, 4096 at the destination"},
		{"memory", other(func(h *Hello) { h.MemoryBytes = 128 << 20 }), "memory 128 MiB at the source, 1 MiB at the destination"},
		{"odd memory", other(func(h *Hello) { h.MemoryBytes = 12345 }), "memory 12345 bytes at the source, 1 MiB at the destination"},
		{"vcpus", other(func(h *Hello) { h.VCPUs = 4 }), "vCPUs: 4 at the source, 2 at the destination"},
		{"image", other(func(h *Hello) { h.Image[0] = 0xab; h.Image[1] = 0x12 }), "guest image differs (sha256 ab12a2a3… at the source, a0a1a2a3… at the destination: a QEMU VM goes to a QEMU destination, vm run --monitor qemu --incoming or pagecast receive, and a VM of pagecast's own monitor to one of its own; two QEMUs must have the same machine type and CPU model)"},
		{"all", other(func(h *Hello) { h.Version = 1; h.MemoryBytes = 128 << 20; h.Image[31] = 0 }),
			fmt.Sprintf("protocol version 1 at the source, %d at the destination; memory 128 MiB at the source, 1 MiB at the destination; guest image differs (sha256 a0a1a2a3… at the source, a0a1a2a3… at the destination: a QEMU VM goes to a QEMU destination, vm run --monitor qemu --incoming or pagecast receive, and a VM of pagecast's own monitor to one of its own; two QEMUs must have the same machine type and CPU model)", ProtocolVersion)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.hello.Check(local)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("Check = %v, want nil", err)
			case tc.want != "" && (err == nil || err.Error() != tc.want):
				t.Errorf("Check = %v, want %q", err, tc.want)
			}
		})
	}
}

// recFrame frames payload by hand, with a correct checksum, so that tests
// can build records the Writer refuses to.
func recFrame(typ RecordType, flags, reserved byte, payload []byte) []byte {
	b := make([]byte, wireHeaderSize, wireHeaderSize+len(payload))
	b[0], b[1], b[3] = byte(typ), flags, reserved
	binary.LittleEndian.PutUint32(b[4:], uint32(len(payload)))
	crc := crc32.Update(crc32.Update(0, wireCastagnoli, b[:8]), wireCastagnoli, payload)
	binary.LittleEndian.PutUint32(b[8:], crc)
	return append(b, payload...)
}

// recLE concatenates little-endian encodings of its arguments.
func recLE(vs ...any) []byte {
	var b []byte
	for _, v := range vs {
		b, _ = binary.Append(b, binary.LittleEndian, v)
	}
	return b
}

func TestWireReaderMalformed(t *testing.T) {
	var hello bytes.Buffer
	w := NewWriter(&hello)
	if err := w.Hello(recTestHello()); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	helloPayload := hello.Bytes()[wireHeaderSize:]
	withHello := func(rec []byte) []byte { return append(append([]byte(nil), hello.Bytes()...), rec...) }
	page := make([]byte, PageSize)
	pagesPayload := func(count uint32, gfns ...uint64) []byte {
		b := recLE(count)
		for _, g := range gfns {
			b = append(append(b, recLE(g)...), page...)
		}
		return b
	}
	state := func(kind uint8, total, offset uint32, n int) []byte {
		return append(append([]byte{kind}, recLE(total, offset)...), recTestState(n)...)
	}
	corrupt := recFrame(RecEndRound, 0, 0, recLE(uint32(7)))
	corrupt[wireHeaderSize] ^= 0x10
	magic := append([]byte(nil), helloPayload...)
	magic[0] = 'X'
	longMode := append([]byte(nil), helloPayload...)
	longMode[58] = 65
	longMode = append(longMode, strings.Repeat("m", 65-len(recTestHello().Mode))...)
	next := append([]byte(nil), helloPayload...)
	next[8] = ProtocolVersion + 1
	next = append(next, 0)
	huge := make([]byte, wireHeaderSize)
	huge[0] = byte(RecPages)
	binary.LittleEndian.PutUint32(huge[4:], MaxPayload+1)

	for _, tc := range []struct {
		name   string
		stream []byte
		want   string // words the message must contain
	}{
		{"checksum", withHello(corrupt), "checksum"},
		{"unknown type", withHello(recFrame(200, 0, 0, nil)), "unknown record type 200"},
		{"flags", withHello(recFrame(RecEnd, 1, 0, nil)), "flags 0x01, want 0"},
		{"reserved", withHello(recFrame(RecEnd, 0, 4, nil)), "reserved bytes 0x00 0x04, want 0"},
		{"length", withHello(huge), fmt.Sprintf("payload of %d bytes exceeds the %d-byte limit", MaxPayload+1, MaxPayload)},
		{"garbage first", []byte("\x47\x00\x00\x00\xff\xff\xff\x7f\x00\x00\x00\x00"), "not a pagecast migration stream: payload of"},
		{"an HTTP request", []byte("GET / HTTP/1.1\r\n\r\n"), "an HTTP request, not a pagecast migration stream"},
		{"TLS", []byte("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\x00\x00"), "a TLS handshake, not pagecast's plain stream"},
		// QEMU_VM_FILE_MAGIC, QEMU_VM_FILE_VERSION 3, then QEMU_VM_CONFIGURATION.
		{"QEMU's stream", []byte("QEVM\x00\x00\x00\x03\x07\x00\x00\x00\x02pc"), "QEMU's own migration stream, not pagecast's"},
		{"accept with text", withHello(recFrame(RecAccept, 0, 0, []byte("x"))), "1-byte payload, want none"},
		{"end-round length", withHello(recFrame(RecEndRound, 0, 0, []byte{1, 2, 3})), "3-byte payload, want 4"},

		{"hello magic", recFrame(RecHello, 0, 0, magic), "not a pagecast migration stream (no magic)"},
		{"hello short", recFrame(RecHello, 0, 0, helloPayload[:20]), "20-byte payload, want at least 59"},
		{"hello mode too long", recFrame(RecHello, 0, 0, longMode), "mode of 65 bytes, more than 64"},
		{"hello length", recFrame(RecHello, 0, 0, append(append([]byte(nil), helloPayload...), 0)), "70-byte payload, want 69 for a 10-byte mode"},
		{"hello other version", recFrame(RecHello, 0, 0, next), fmt.Sprintf("(protocol version %d at the source, %d here)", ProtocolVersion+1, ProtocolVersion)},
		{"hello mode utf-8", recFrame(RecHello, 0, 0, append(append(append([]byte(nil), helloPayload[:58]...), 1), 0xff)), "not valid UTF-8"},

		{"pages before handshake", recFrame(RecPages, 0, 0, pagesPayload(1, 0)), "before the handshake"},
		{"zero before handshake", recFrame(RecZero, 0, 0, recLE(uint64(0), uint64(1))), "before the handshake"},
		{"state before handshake", recFrame(RecState, 0, 0, state(StateGuest, 4, 0, 4)), "before the handshake"},
		{"digest before handshake", recFrame(RecDigest, 0, 0, recLE(uint32(DigestChunk), uint32(1), uint32(0))), "before the handshake"},
		{"pages none", withHello(recFrame(RecPages, 0, 0, pagesPayload(0))), "0 pages in a batch, want 1 to 256"},
		{"pages too many", withHello(recFrame(RecPages, 0, 0, pagesPayload(257))), "257 pages in a batch, want 1 to 256"},
		{"pages short", withHello(recFrame(RecPages, 0, 0, []byte{1, 0})), "2-byte payload, too short for a page count"},
		{"pages length", withHello(recFrame(RecPages, 0, 0, pagesPayload(2, 0))), "4108-byte payload, want 8212 for 2 pages"},
		{"page beyond", withHello(recFrame(RecPages, 0, 0, pagesPayload(2, 1, 256))), "page 256 is beyond the 256 pages of guest memory"},
		{"page far beyond", withHello(recFrame(RecPages, 0, 0, pagesPayload(1, math.MaxUint64))), "page 18446744073709551615 is beyond"},
		{"zero empty", withHello(recFrame(RecZero, 0, 0, recLE(uint64(3), uint64(0)))), "empty run of zero pages at page 3"},
		{"zero beyond", withHello(recFrame(RecZero, 0, 0, recLE(uint64(250), uint64(7)))), "zero pages 250+7 are beyond the 256 pages"},
		{"zero overflow", withHello(recFrame(RecZero, 0, 0, recLE(uint64(math.MaxUint64), uint64(2)))), "are beyond the 256 pages"},
		{"zero length", withHello(recFrame(RecZero, 0, 0, recLE(uint64(1)))), "8-byte payload, want 16"},
		{"state short", withHello(recFrame(RecState, 0, 0, []byte{StateGuest, 0, 0, 0, 0, 0, 0, 0})), "8-byte payload, too short for a state chunk"},
		{"state kind", withHello(recFrame(RecState, 0, 0, state(9, 4, 0, 4))), "unknown state kind 9"},
		{"state too big", withHello(recFrame(RecState, 0, 0, state(StateGuest, MaxState+1, 0, 4))), "state of 67108865 bytes, more than the 64 MiB a migration carries"},
		{"state beyond", withHello(recFrame(RecState, 0, 0, state(StateGuest, 10, 8, 4))), "state bytes 8+4 are beyond its 10 bytes"},
		{"state offset overflow", withHello(recFrame(RecState, 0, 0, state(StateGuest, 10, math.MaxUint32, 4))), "are beyond its 10 bytes"},
		{"state empty chunk", withHello(recFrame(RecState, 0, 0, state(StateGuest, 10, 2, 0))), "empty chunk of a 10-byte state"},
		{"digest chunk zero", withHello(recFrame(RecDigest, 0, 0, recLE(uint32(0), uint32(0)))), "digest chunk of 0 bytes is not a whole number of pages"},
		{"digest chunk odd", withHello(recFrame(RecDigest, 0, 0, recLE(uint32(1000), uint32(1), uint32(0)))), "digest chunk of 1000 bytes"},
		{"digest too many", withHello(recFrame(RecDigest, 0, 0, recLE(uint32(PageSize), uint32(1<<20+1)))), "1048577 digest sums, more than 1048576"},
		{"digest length", withHello(recFrame(RecDigest, 0, 0, recLE(uint32(PageSize), uint32(3), uint32(0)))), "12-byte payload, want 20 for 3 sums"},
		{"digest count", withHello(recFrame(RecDigest, 0, 0, recLE(uint32(DigestChunk), uint32(2), uint32(0), uint32(0)))),
			"2 digest sums for 256 pages of guest memory in chunks of 1 MiB, want 1"},
		{"digest short", withHello(recFrame(RecDigest, 0, 0, recLE(uint32(PageSize)))), "4-byte payload, too short"},
		{"refuse too long", withHello(recFrame(RecRefuse, 0, 0, bytes.Repeat([]byte("x"), 4097))), "text of 4097 bytes, more than 4096"},
		{"abort not utf-8", withHello(recFrame(RecAbort, 0, 0, []byte{'a', 0xc3})), "text is not valid UTF-8"},
		{"verified empty", withHello(recFrame(RecVerified, 0, 0, nil)), "empty payload, want a verdict byte"},
		{"verified verdict", withHello(recFrame(RecVerified, 0, 0, []byte{2})), "verdict byte 2, want 0 or 1"},
		{"commit empty", withHello(recFrame(RecCommit, 0, 0, nil)), "0-byte payload, want the run byte"},
		{"commit run", withHello(recFrame(RecCommit, 0, 0, []byte{2})), "run byte 2, want 0 or 1"},
		{"verified short", withHello(recFrame(RecVerified, 0, 0, []byte{1, 0, 0, 0, 0, 0, 0, 0})), "8-byte payload, want a verdict byte and the guest's wait"},
		{"verified wait", withHello(recFrame(RecVerified, 0, 0, []byte{1, 0, 0, 0, 0, 0, 0, 0, 0x80})), "the guest's wait is 9223372036854775808 ns, beyond an int64"},
		{"verified reason", withHello(recFrame(RecVerified, 0, 0, []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff})), "text is not valid UTF-8"},
		{"started empty", withHello(recFrame(RecStarted, 0, 0, nil)), "0-byte payload, want the 8 bytes of the time since the verdict"},
		{"sync with a payload", withHello(recFrame(RecSync, 0, 0, []byte{1})), "1-byte payload, want none"},
		{"started since", withHello(recFrame(RecStarted, 0, 0, []byte{0, 0, 0, 0, 0, 0, 0, 0x80})), "the time since the verdict is 9223372036854775808 ns, beyond an int64"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, _, err := recReadAll(tc.stream)
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("after %d records: %v, want ErrMalformed", len(got), err)
			}
			// The message places the bad record: its index, type and offset.
			at := 0
			if len(got) == 1 {
				at = hello.Len()
			}
			where := fmt.Sprintf("record %d (%s) at byte %d: ", len(got), RecordType(tc.stream[at]), at)
			if !strings.HasPrefix(err.Error(), where) {
				t.Errorf("error %q does not start with %q", err, where)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not say %q", err, tc.want)
			}
			if !strings.HasSuffix(err.Error(), ": "+ErrMalformed.Error()) {
				t.Errorf("error %q does not end with %q", err, ErrMalformed)
			}
		})
	}
}

// The message names the record precisely enough to find it in a capture.
func TestWireReaderMessage(t *testing.T) {
	const pages = 16384
	var out bytes.Buffer
	w := NewWriter(&out)
	mem := make([]byte, pages*PageSize)
	if err := w.Hello(recTestHello()); err != nil {
		t.Fatal(err)
	}
	for g := uint64(0); g < 16; g++ {
		if err := w.Pages([]uint64{g}, mem); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	at := out.Len()
	payload := recLE(uint32(1), uint64(99999))
	out.Write(recFrame(RecPages, 0, 0, append(payload, make([]byte, PageSize)...)))

	r := NewReader(&out)
	for range 17 {
		if _, err := r.Next(); err != nil {
			t.Fatal(err)
		}
		r.SetLimits(pages)
	}
	_, err := r.Next()
	want := fmt.Sprintf("record 17 (pages) at byte %d: page 99999 is beyond the 16384 pages of guest memory: malformed migration stream", at)
	if err == nil || err.Error() != want {
		t.Fatalf("got %v, want %q", err, want)
	}
	if _, again := r.Next(); again != err {
		t.Errorf("after an error, Next = %v, want the same error", again)
	}
}

// Cutting the stream anywhere gives io.EOF at a record boundary and
// io.ErrUnexpectedEOF inside a record, after exactly the records before.
func TestWireReaderTruncated(t *testing.T) {
	data, want, bounds := recTestStream(t)
	boundary := map[int]int{0: 0} // offset → records before it
	for i, b := range bounds {
		boundary[b] = i + 1
	}
	complete := 0
	for cut := 0; cut <= len(data); cut++ {
		if n, ok := boundary[cut]; ok {
			complete = n
		}
		got, r, err := recReadAll(data[:cut])
		if n, ok := boundary[cut]; ok {
			if err != io.EOF || len(got) != n {
				t.Fatalf("cut at boundary %d: %d records, then %v; want %d, then io.EOF", cut, len(got), err, n)
			}
			continue
		}
		if !errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, ErrMalformed) || len(got) != complete {
			t.Fatalf("cut at %d: %d records, then %v; want %d, then unexpected EOF", cut, len(got), err, complete)
		}
		if r.Bytes() != uint64(cut) {
			t.Fatalf("cut at %d: Reader.Bytes = %d", cut, r.Bytes())
		}
		if prefix := fmt.Sprintf("record %d (%s) at byte %d: ", complete, want[complete].Type, bounds0(bounds, complete)); !strings.HasPrefix(err.Error(), prefix) {
			t.Fatalf("cut at %d: %q does not start with %q", cut, err, prefix)
		}
	}
}

func bounds0(bounds []int, i int) int {
	if i == 0 {
		return 0
	}
	return bounds[i-1]
}

// A single flipped bit anywhere stops the Reader at the record that holds
// it, never later and never silently.
func TestWireReaderBitFlip(t *testing.T) {
	data, _, bounds := recTestStream(t)
	flipped := make([]byte, len(data))
	rec, start := 0, 0
	for i := range data {
		for i >= bounds[rec] {
			start = bounds[rec]
			rec++
		}
		// Every bit of headers and small payloads; page contents, which
		// only the checksum protects, at a stride to keep the test quick.
		if i-start >= 32 && i%13 != 0 {
			continue
		}
		for bit := range 8 {
			copy(flipped, data)
			flipped[i] ^= 1 << bit
			got, _, err := recReadAll(flipped)
			if len(got) != rec || !(errors.Is(err, ErrMalformed) || errors.Is(err, io.ErrUnexpectedEOF)) {
				t.Fatalf("bit %d of byte %d (record %d): %d records, then %v", bit, i, rec, len(got), err)
			}
		}
	}
}

// recHeaderOnly yields a header and fails the test if read further.
type recHeaderOnly struct {
	t      *testing.T
	header []byte
}

func (h *recHeaderOnly) Read(p []byte) (int, error) {
	if len(h.header) == 0 {
		h.t.Error("the reader read past the header of an oversized record")
		return 0, io.EOF
	}
	n := copy(p, h.header)
	h.header = h.header[n:]
	return n, nil
}

func TestWireReaderHugeLength(t *testing.T) {
	for _, size := range []uint32{MaxPayload + 1, 1 << 30, math.MaxUint32} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			h := make([]byte, wireHeaderSize)
			h[0] = byte(RecPages)
			binary.LittleEndian.PutUint32(h[4:], size)
			r := NewReader(&recHeaderOnly{t: t, header: h})
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			_, err := r.Next()
			runtime.ReadMemStats(&after)
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("got %v, want ErrMalformed", err)
			}
			if n := after.TotalAlloc - before.TotalAlloc; n > 64<<10 {
				t.Errorf("rejecting the header allocated %d bytes", n)
			}
		})
	}
}

func TestWireWriterRefuses(t *testing.T) {
	mem := make([]byte, 4*PageSize)
	for _, tc := range []struct {
		name  string
		write func(w *Writer) error
	}{
		{"no pages", func(w *Writer) error { return w.Pages(nil, mem) }},
		{"too many pages", func(w *Writer) error { return w.Pages(make([]uint64, MaxBatch+1), mem) }},
		{"page beyond", func(w *Writer) error { return w.Pages([]uint64{0, 4}, mem) }},
		{"page far beyond", func(w *Writer) error { return w.Pages([]uint64{math.MaxUint64 / PageSize}, mem) }},
		{"empty zero run", func(w *Writer) error { return w.Zero(1, 0) }},
		{"zero run overflow", func(w *Writer) error { return w.Zero(math.MaxUint64, 2) }},
		{"state of unknown kind", func(w *Writer) error { return w.State(0, []byte{1}) }},
		{"state too big", func(w *Writer) error { return w.State(StateGuest, make([]byte, MaxState+1)) }},
		{"digest chunk", func(w *Writer) error { return w.Digest(Digest{ChunkBytes: 1000}) }},
		{"digest too big", func(w *Writer) error {
			return w.Digest(Digest{ChunkBytes: PageSize, Sums: make([]uint32, MaxPayload/4)})
		}},
		{"long mode", func(w *Writer) error { return w.Hello(Hello{Mode: strings.Repeat("m", 65)}) }},
		{"accept with text", func(w *Writer) error { return w.Text(RecAccept, "yes") }},
		{"text of pages", func(w *Writer) error { return w.Text(RecPages, "") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			w := NewWriter(&out)
			if err := tc.write(w); err == nil {
				t.Fatal("no error")
			}
			if err := w.Flush(); err != nil {
				t.Fatal(err)
			}
			if out.Len() != 0 || w.Bytes() != 0 {
				t.Errorf("a refused record left %d bytes (Bytes = %d)", out.Len(), w.Bytes())
			}
		})
	}
}

// Reasons are for people: the Writer repairs and cuts them rather than
// lose the record they explain.
func TestWireWriterText(t *testing.T) {
	long := strings.Repeat("é", 3000) // 6000 bytes
	var out bytes.Buffer
	w := NewWriter(&out)
	if err := w.Text(RecAbort, long); err != nil {
		t.Fatal(err)
	}
	if err := w.Verified(false, "bad \xff byte"); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	r := NewReader(&out)
	rec, err := r.Next()
	if err != nil {
		t.Fatal(err)
	}
	if rec.Text != long[:4096] {
		t.Errorf("long reason cut to %d bytes, want 4096", len(rec.Text))
	}
	if rec, err = r.Next(); err != nil {
		t.Fatal(err)
	}
	if rec.OK || rec.Text != "bad \uFFFD byte" {
		t.Errorf("got ok=%v %q", rec.OK, rec.Text)
	}
}

func TestWireWriterPagesNoAlloc(t *testing.T) {
	mem := recTestMemory(1024)
	gfns := make([]uint64, MaxBatch)
	for i := range gfns {
		gfns[i] = uint64(i * 4)
	}
	w := NewWriter(io.Discard)
	if n := testing.AllocsPerRun(20, func() {
		if err := w.Pages(gfns, mem); err != nil {
			t.Fatal(err)
		}
		if err := w.Pages(gfns[:7], mem); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("Pages allocates %.1f times a call", n/2)
	}
}

func TestWireReaderPagesNoAlloc(t *testing.T) {
	mem := recTestMemory(1024)
	gfns := make([]uint64, MaxBatch)
	for i := range gfns {
		gfns[i] = uint64(i * 4)
	}
	var out bytes.Buffer
	w := NewWriter(&out)
	for range 30 {
		if err := w.Pages(gfns, mem); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	r := NewReader(&out)
	r.SetLimits(1024)
	if n := testing.AllocsPerRun(20, func() {
		if _, err := r.Next(); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("Next allocates %.1f times a pages record", n)
	}
}

// recBenchBatches returns batches of MaxBatch scattered pages of a 64 MiB
// guest, as a pre-copy round sends them.
func recBenchBatches() ([]byte, [][]uint64) {
	mem := recTestMemory((64 << 20) / PageSize)
	pages := len(mem) / PageSize
	perm := rand.New(rand.NewPCG(3, 4)).Perm(pages)
	var batches [][]uint64
	for i := 0; i+MaxBatch <= pages; i += MaxBatch {
		b := make([]uint64, MaxBatch)
		for j := range b {
			b[j] = uint64(perm[i+j])
		}
		batches = append(batches, b)
	}
	return mem, batches
}

func BenchmarkWriterPages(b *testing.B) {
	mem, batches := recBenchBatches()
	w := NewWriter(io.Discard)
	b.SetBytes(MaxBatch * PageSize)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if err := w.Pages(batches[i%len(batches)], mem); err != nil {
			b.Fatal(err)
		}
		i++
	}
	b.ReportMetric(float64(i*MaxBatch)/b.Elapsed().Seconds(), "pages/s")
}

func BenchmarkReaderPages(b *testing.B) {
	mem, batches := recBenchBatches()
	var out bytes.Buffer
	w := NewWriter(&out)
	for _, batch := range batches[:64] {
		if err := w.Pages(batch, mem); err != nil {
			b.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		b.Fatal(err)
	}
	stream := out.Bytes()
	src := bytes.NewReader(stream)
	r := NewReader(src)
	r.SetLimits(uint64(len(mem) / PageSize))
	b.SetBytes(MaxBatch * PageSize)
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		if _, err := r.Next(); err == io.EOF {
			// Start over on the same Reader's buffers.
			src.Reset(stream)
			r.br.Reset(src)
			r.err = nil
			if _, err := r.Next(); err != nil {
				b.Fatal(err)
			}
		} else if err != nil {
			b.Fatal(err)
		}
		n++
	}
	b.ReportMetric(float64(n*MaxBatch)/b.Elapsed().Seconds(), "pages/s")
}

func TestDigestCompare(t *testing.T) {
	mem := recTestMemory((8 << 20) / PageSize)
	d := ComputeDigest(mem)
	if len(d.Sums) != 8 || d.ChunkBytes != DigestChunk {
		t.Fatalf("digest of 8 MiB: %d sums of %d bytes", len(d.Sums), d.ChunkBytes)
	}
	if err := d.Compare(ComputeDigest(bytes.Clone(mem))); err != nil {
		t.Errorf("equal memories: %v", err)
	}
	for _, tc := range []struct {
		name    string
		changes []int // offsets of changed bytes
		want    string
	}{
		{"one byte", []int{0x4a1234}, "memory differs in 1 of 8 chunks of 1 MiB, first at 0x400000-0x4fffff"},
		{"first byte", []int{0}, "memory differs in 1 of 8 chunks of 1 MiB, first at 0x0-0xfffff"},
		{"last byte", []int{8<<20 - 1}, "memory differs in 1 of 8 chunks of 1 MiB, first at 0x700000-0x7fffff"},
		{"three chunks", []int{0x7fff00, 0x200000, 0x2fffff, 0x5fffff}, "memory differs in 3 of 8 chunks of 1 MiB, first at 0x200000-0x2fffff"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			other := bytes.Clone(mem)
			for _, off := range tc.changes {
				other[off] ^= 1
			}
			err := d.Compare(ComputeDigest(other))
			if err == nil || err.Error() != tc.want {
				t.Errorf("Compare = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestDigestShortChunk(t *testing.T) {
	mem := recTestMemory((3<<20)/PageSize + 5)
	d := ComputeDigest(mem)
	if len(d.Sums) != 4 {
		t.Fatalf("%d sums, want 4", len(d.Sums))
	}
	for i, s := range d.Sums {
		chunk := mem[i*DigestChunk : min((i+1)*DigestChunk, len(mem))]
		if want := crc32.Checksum(chunk, wireCastagnoli); s != want {
			t.Errorf("chunk %d: sum %08x, want %08x", i, s, want)
		}
	}
	if d := ComputeDigest(nil); len(d.Sums) != 0 || d.ChunkBytes != DigestChunk {
		t.Errorf("digest of no memory: %+v", d)
	}
}

func TestDigestIncomparable(t *testing.T) {
	a := Digest{ChunkBytes: DigestChunk, Sums: make([]uint32, 4)}
	for _, tc := range []struct {
		name string
		b    Digest
		want string
	}{
		{"chunk size", Digest{ChunkBytes: 2 * DigestChunk, Sums: make([]uint32, 4)}, "memory digests are not comparable: chunks of 1 MiB and 2 MiB"},
		{"length", Digest{ChunkBytes: DigestChunk, Sums: make([]uint32, 5)}, "memory digests are not comparable: 4 and 5 chunks of 1 MiB"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := a.Compare(tc.b); err == nil || err.Error() != tc.want {
				t.Errorf("Compare = %v, want %q", err, tc.want)
			}
		})
	}
}

func BenchmarkComputeDigest(b *testing.B) {
	mem := recTestMemory((64 << 20) / PageSize)
	b.SetBytes(int64(len(mem)))
	for b.Loop() {
		ComputeDigest(mem)
	}
	b.ReportMetric(float64(runtime.GOMAXPROCS(0)), "workers")
}

// A compressed batch of MaxBatch pages fits a record whatever mecom makes
// of them: the payload limit must follow mecom's own bound.
func TestWireCompressedBatchFits(t *testing.T) {
	if n := 4 + 8*MaxBatch + mecom.MaxEncodedLen(MaxBatch); n > MaxPayload {
		t.Fatalf("a compressed batch can take %d bytes, over the %d-byte payload limit", n, MaxPayload)
	}
}

func TestWireTSMCAndCompressedRecords(t *testing.T) {
	const pages = 130 // two full bitmap words and a part
	var out bytes.Buffer
	w := NewWriter(&out)
	words := []uint64{1, 1 << 63, 0b11}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(w.Bitmap(words))
	must(w.Request([]uint64{5, 129}))
	must(w.Compressed([]uint64{7, 8}, []byte("coded bytes")))
	must(w.Bitmap([]uint64{0, 0, 1 << 2})) // page 130: beyond memory
	must(w.Request([]uint64{130}))         // beyond memory
	must(w.Flush())
	r := NewReader(bytes.NewReader(out.Bytes()))
	r.SetLimits(pages)
	rec, err := r.Next()
	must(err)
	if !reflect.DeepEqual(rec.Bitmap, words) {
		t.Errorf("bitmap %v", rec.Bitmap)
	}
	rec, err = r.Next()
	must(err)
	if rec.Type != RecRequest || !reflect.DeepEqual(rec.GFNs, []uint64{5, 129}) {
		t.Errorf("request %v %v", rec.Type, rec.GFNs)
	}
	rec, err = r.Next()
	must(err)
	if rec.Type != RecCompressed || !reflect.DeepEqual(rec.GFNs, []uint64{7, 8}) || string(rec.Coded) != "coded bytes" {
		t.Errorf("compressed %v %v %q", rec.Type, rec.GFNs, rec.Coded)
	}
	if _, err := r.Next(); !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "beyond") {
		t.Errorf("bitmap beyond memory: %v", err)
	}
	r = NewReader(bytes.NewReader(out.Bytes()))
	r.SetLimits(pages)
	for range 4 {
		r.Next()
	}
	if _, err := r.Next(); err == nil {
		t.Error("a reader went on after an error")
	}
}

// A state bigger than a record goes in chunks that the receiver's buffer
// puts back together; chunks out of order, of another state or beyond a
// complete one are malformed.
func TestWireStateChunks(t *testing.T) {
	for _, n := range []int{0, 1, MaxStateChunk, 2*MaxStateChunk + 5} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			state := recTestState(n)
			var out bytes.Buffer
			w := NewWriter(&out)
			if err := w.State(StateGuest, state); err != nil {
				t.Fatal(err)
			}
			if err := w.Flush(); err != nil {
				t.Fatal(err)
			}
			r := NewReader(&out)
			r.SetLimits(recTestPages)
			var b stateBuffer
			records := 0
			for !b.done() {
				rec, err := r.Next()
				if err != nil {
					t.Fatalf("after %d records: %v", records, err)
				}
				records++
				if rec.Type != RecState || len(rec.State.Data) > MaxStateChunk {
					t.Fatalf("record %d: %s of %d bytes", records, rec.Type, len(rec.State.Data))
				}
				if err := b.add(rec.State); err != nil {
					t.Fatal(err)
				}
			}
			if !bytes.Equal(b.data, state) {
				t.Fatal("the state differs after chunking")
			}
			if want := max(1, (n+MaxStateChunk-1)/MaxStateChunk); records != want {
				t.Errorf("%d records for %d bytes, want %d", records, n, want)
			}
			if _, err := r.Next(); err != io.EOF {
				t.Errorf("after the state: %v", err)
			}
		})
	}

	chunk := func(total, offset uint32, n int) StateChunk {
		return StateChunk{Kind: StateGuest, Total: total, Offset: offset, Data: recTestState(n)}
	}
	for _, tc := range []struct {
		name   string
		chunks []StateChunk
		want   string
	}{
		{"gap", []StateChunk{chunk(10, 0, 4), chunk(10, 6, 4)}, "state chunk at byte 6 where byte 4 is due"},
		{"late start", []StateChunk{chunk(10, 2, 4)}, "state chunk at byte 2 where byte 0 is due"},
		{"repeat", []StateChunk{chunk(10, 0, 4), chunk(10, 0, 4)}, "at byte 0 where byte 4 is due"},
		{"other total", []StateChunk{chunk(10, 0, 4), chunk(12, 4, 4)}, "within a state of kind 1, 10 bytes"},
		{"after the end", []StateChunk{chunk(4, 0, 4), chunk(4, 4, 0)}, "after the whole 4-byte state arrived"},
		{"second state", []StateChunk{chunk(0, 0, 0), chunk(0, 0, 0)}, "after the whole 0-byte state arrived"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b stateBuffer
			var err error
			for _, c := range tc.chunks {
				if err = b.add(c); err != nil {
					break
				}
			}
			if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want a malformed stream: %q", err, tc.want)
			}
		})
	}
}

// TestBitmapChunks: a bitmap larger than a record goes in chunks, in
// order, that the reader checks and bitmapChunks puts back together; a
// chunk out of order is refused.
func TestBitmapChunks(t *testing.T) {
	words := make([]uint64, 2*maxBitmapWords+5)
	for i := range words {
		words[i] = uint64(i)*0x9E3779B97F4A7C15 + 1
	}
	pages := uint64(len(words))*64 - 3
	words[len(words)-1] &= 1<<61 - 1 // the last 3 bits would be beyond memory
	var out bytes.Buffer
	w := NewWriter(&out)
	if err := w.Bitmap(words); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	r := NewReader(bytes.NewReader(out.Bytes()))
	r.SetLimits(pages)
	got := make([]uint64, len(words))
	var recs []Record
	var b bitmapChunks
	for b.have < uint64(len(words)) {
		rec, err := r.Next()
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, *rec)
		if err := b.add(got, rec); err != nil {
			t.Fatal(err)
		}
	}
	if len(recs) != 3 || !reflect.DeepEqual(got, words) {
		t.Fatalf("%d records; bitmap equal: %v", len(recs), reflect.DeepEqual(got, words))
	}
	var again bitmapChunks
	if err := again.add(make([]uint64, len(words)), &recs[1]); !errors.Is(err, ErrMalformed) {
		t.Fatalf("a chunk out of order: %v", err)
	}
}

// TestWirePeerText: a peer's text arrives safe to print: its control
// characters escaped, its line breaks made "; ", so that a hostile
// destination's refusal cannot clear or rewrite the user's terminal.
func TestWirePeerText(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	if err := w.Text(RecRefuse, "\x1b[2J\x1b[31mpwned\x07\r\nFAKE: migration completed \u0085é"); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	rec, err := NewReader(&buf).Next()
	if err != nil {
		t.Fatal(err)
	}
	if want := `\x1b[2J\x1b[31mpwned\x07\x0d; FAKE: migration completed \x85é`; rec.Text != want {
		t.Errorf("text %q, want %q", rec.Text, want)
	}
}
