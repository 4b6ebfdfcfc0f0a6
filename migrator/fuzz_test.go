package migrator

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"
	"unicode"
)

// FuzzReader feeds the Reader arbitrary streams. It must never panic, end
// every stream with io.EOF or an error wrapping io.ErrUnexpectedEOF or
// ErrMalformed, and only ever return records that respect the limits.
// Each input is read twice: as it is, and with every record's checksum
// made right, since almost no mutation gets past the checksum on its own
// and the field checks behind it need fuzzing most.
func FuzzReader(f *testing.F) {
	// Seeds are short streams (the fuzzer minimises slowly on long ones):
	// a hello followed by each kind of record, one whole exchange, and
	// damaged and cut copies of it.
	mem := recTestMemory(recTestPages)
	seed := func(records ...func(w *Writer) error) []byte {
		var out bytes.Buffer
		w := NewWriter(&out)
		for _, rec := range append([]func(*Writer) error{func(w *Writer) error { return w.Hello(recTestHello()) }}, records...) {
			if err := rec(w); err != nil {
				f.Fatal(err)
			}
		}
		if err := w.Flush(); err != nil {
			f.Fatal(err)
		}
		return out.Bytes()
	}
	var (
		pages    = func(w *Writer) error { return w.Pages([]uint64{7, 255}, mem) }
		zero     = func(w *Writer) error { return w.Zero(0, 7) }
		state    = func(w *Writer) error { return w.State(StateGuest, recTestState(40)) }
		chunked  = func(w *Writer) error { return w.stateChunk(StateGuest, 100, 60, recTestState(40)) }
		digest   = func(w *Writer) error { return w.Digest(ComputeDigest(mem)) }
		end      = func(w *Writer) error { return w.Text(RecEnd, "") }
		round    = func(w *Writer) error { return w.EndRound(3) }
		verified = func(w *Writer) error { return w.Verified(false, "memory differs") }
		abort    = func(w *Writer) error { return w.Text(RecAbort, "cancelled") }
		bitmap   = func(w *Writer) error { return w.Bitmap([]uint64{1, 0, 1 << 63, 5}) }
		request  = func(w *Writer) error { return w.Request([]uint64{5, 255}) }
		coded    = func(w *Writer) error { return w.Compressed([]uint64{3, 4}, []byte{0x20, 0x20}) }
	)
	whole := seed(pages, zero, round, state, digest, end)
	f.Add(whole)
	for _, rec := range []func(*Writer) error{pages, zero, state, chunked, digest, end, round, verified, abort, bitmap, request, coded} {
		f.Add(seed(rec))
	}
	for _, i := range []int{3, 40, 100, len(whole) / 2, len(whole) - 1} {
		corrupt := bytes.Clone(whole)
		corrupt[i] ^= 0x5a
		f.Add(corrupt)
		f.Add(whole[:i])
	}
	f.Add(recFrame(RecPages, 0, 0, recLE(uint32(1), uint64(300))))
	f.Add(recFrame(RecZero, 0, 0, recLE(uint64(255), uint64(2))))
	f.Add(recFrame(RecDigest, 0, 0, recLE(uint32(PageSize), uint32(1<<20))))
	f.Add([]byte{})

	f.Fuzz(func(t *testing.T, stream []byte) {
		recFuzzRead(t, stream)
		recFuzzRead(t, recReseal(stream))
	})
}

// recReseal returns a copy of stream with the checksum of every record
// whose header and payload are there recomputed.
func recReseal(stream []byte) []byte {
	out := bytes.Clone(stream)
	for b := out; len(b) >= wireHeaderSize; {
		size := binary.LittleEndian.Uint32(b[4:])
		if size > MaxPayload || len(b)-wireHeaderSize < int(size) {
			break
		}
		binary.LittleEndian.PutUint32(b[8:], recordCRC(b, b[wireHeaderSize:wireHeaderSize+size]))
		b = b[wireHeaderSize+size:]
	}
	return out
}

// recFuzzRead reads stream to its end, as a receiver would, checking the
// errors and the records.
func recFuzzRead(t *testing.T, stream []byte) {
	r := NewReader(bytes.NewReader(stream))
	for n := 0; ; n++ {
		at := r.Bytes()
		rec, err := r.Next()
		if err != nil {
			if err != io.EOF && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, ErrMalformed) {
				t.Fatalf("record %d: error %v is neither EOF nor malformed", n, err)
			}
			if r.Bytes() > uint64(len(stream)) {
				t.Fatalf("Reader.Bytes = %d for a %d-byte stream", r.Bytes(), len(stream))
			}
			return
		}
		if n == 0 {
			r.SetLimits(recTestPages)
		}
		switch rec.Type {
		case RecPages, RecRequest, RecCompressed:
			if rec.Type == RecPages && len(rec.Data) != len(rec.GFNs)*PageSize {
				t.Fatalf("record %d (%s): %d bytes of data for %d pages", n, rec.Type, len(rec.Data), len(rec.GFNs))
			}
			if len(rec.GFNs) < 1 || len(rec.GFNs) > MaxBatch {
				t.Fatalf("record %d (%s): batch of %d pages", n, rec.Type, len(rec.GFNs))
			}
			for _, g := range rec.GFNs {
				if g >= recTestPages {
					t.Fatalf("record %d: page %d is beyond the limit", n, g)
				}
			}
		case RecBitmap:
			if len(rec.Bitmap) == 0 || rec.BitmapFirst+uint64(len(rec.Bitmap)) > (recTestPages+63)/64 {
				t.Fatalf("record %d: bitmap of %d words", n, len(rec.Bitmap))
			}
		case RecZero:
			if rec.Count == 0 || rec.First+rec.Count < rec.First || rec.First+rec.Count > recTestPages {
				t.Fatalf("record %d: zero run %d+%d", n, rec.First, rec.Count)
			}
		case RecState:
			c := rec.State
			if c.Kind != StateGuest || c.Total > MaxState || uint64(c.Offset)+uint64(len(c.Data)) > uint64(c.Total) ||
				(len(c.Data) == 0 && c.Total != 0) {
				t.Fatalf("record %d: state chunk of kind %d, %d+%d of %d bytes", n, c.Kind, c.Offset, len(c.Data), c.Total)
			}
		case RecDigest:
			if rec.Digest.ChunkBytes == 0 || rec.Digest.ChunkBytes%PageSize != 0 {
				t.Fatalf("record %d: digest chunk %d", n, rec.Digest.ChunkBytes)
			}
			if chunkPages := rec.Digest.ChunkBytes / PageSize; len(rec.Digest.Sums) != int((recTestPages+chunkPages-1)/chunkPages) {
				t.Fatalf("record %d: %d digest sums of %d bytes", n, len(rec.Digest.Sums), rec.Digest.ChunkBytes)
			}
		case RecRefuse, RecAbort, RecVerified:
			if len(rec.Text) > 4*wireMaxText { // an escape (\x1b) is 4 bytes for 1
				t.Fatalf("record %d: %d-byte text", n, len(rec.Text))
			}
			if strings.ContainsFunc(rec.Text, unicode.IsControl) {
				t.Fatalf("record %d: a peer's text with control characters: %q", n, rec.Text)
			}
		}
		if carries := rec.Type == RecPages || rec.Type == RecRequest || rec.Type == RecLater || rec.Type == RecCompressed; !carries && len(rec.GFNs) != 0 {
			t.Fatalf("record %d (%s) has page numbers", n, rec.Type)
		}
		if rec.Type != RecPages && len(rec.Data) != 0 {
			t.Fatalf("record %d (%s) has page data", n, rec.Type)
		}
		if rec.Type != RecState && (rec.State.Kind != 0 || len(rec.State.Data) != 0) {
			t.Fatalf("record %d (%s) has a state chunk", n, rec.Type)
		}
		// A record has one encoding: what was accepted is what the Writer
		// makes of the decoded record. But a peer's text is made safe to
		// print as it is read (control characters escaped): what
		// is read again from its encoding is then the same text.
		again := recEncode(t, rec)
		if rec.Type == RecRefuse || rec.Type == RecAbort || rec.Type == RecVerified {
			rec2, err := NewReader(bytes.NewReader(again)).Next()
			if err != nil || rec2.Text != wireText(rec.Text) || rec2.OK != rec.OK || rec2.Waited != rec.Waited { // the Writer cuts at 4096 bytes
				t.Fatalf("record %d (%s): its text %q re-encoded reads %v, %v", n, rec.Type, rec.Text, rec2, err)
			}
			text := stream[at+wireHeaderSize : r.Bytes()]
			if rec.Type == RecVerified {
				text = text[9:] // the verdict byte and the guest's wait
			}
			if !strings.ContainsFunc(string(text), unicode.IsControl) && !bytes.Equal(again, stream[at:r.Bytes()]) {
				t.Fatalf("record %d (%s) re-encodes differently:\n%x\n%x", n, rec.Type, stream[at:r.Bytes()], again)
			}
			continue
		}
		if !bytes.Equal(again, stream[at:r.Bytes()]) {
			t.Fatalf("record %d (%s) re-encodes differently:\n%x\n%x", n, rec.Type, stream[at:r.Bytes()], again)
		}
	}
}

// recEncode encodes rec again.
func recEncode(t *testing.T, rec *Record) []byte {
	if rec.Type == RecPages {
		// Writer.Pages reads pages from guest memory, where a page named
		// twice in a batch has one content only; frame the batch by hand.
		p := recLE(uint32(len(rec.GFNs)))
		for i, g := range rec.GFNs {
			p = append(append(p, recLE(g)...), rec.Data[i*PageSize:(i+1)*PageSize]...)
		}
		return recFrame(RecPages, 0, 0, p)
	}
	var out bytes.Buffer
	w := NewWriter(&out)
	var err error
	switch rec.Type {
	case RecHello:
		err = w.Hello(rec.Hello)
	case RecZero:
		err = w.Zero(rec.First, rec.Count)
	case RecEndRound:
		err = w.EndRound(rec.Round)
	case RecState:
		err = w.stateChunk(rec.State.Kind, rec.State.Total, rec.State.Offset, rec.State.Data)
	case RecDigest:
		err = w.Digest(rec.Digest)
	case RecVerified:
		err = w.verdict(rec.OK, rec.Waited, rec.Text)
	case RecCommit:
		err = w.Commit(rec.OK)
	case RecBitmap:
		err = w.Bitmap(rec.Bitmap)
	case RecRequest:
		err = w.Request(rec.GFNs)
	case RecLater:
		err = w.Later(rec.GFNs)
	case RecCompressed:
		err = w.Compressed(rec.GFNs, rec.Coded)
	default:
		err = w.Text(rec.Type, rec.Text)
	}
	if err == nil {
		err = w.Flush()
	}
	if err != nil {
		t.Fatalf("re-encode %s record: %v", rec.Type, err)
	}
	return out.Bytes()
}
