package migrator

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// FuzzReader feeds the Reader arbitrary streams. It must never panic, end
// every stream with io.EOF or an error wrapping io.ErrUnexpectedEOF or
// ErrMalformed, and only ever return records that respect the limits.
func FuzzReader(f *testing.F) {
	data, _, bounds := recTestStream(f)
	f.Add(data)
	for i := range bounds {
		f.Add(data[bounds0(bounds, i):]) // streams starting with every record type
	}
	for _, i := range []int{3, 40, 100, len(data) / 2, len(data) - 1} {
		corrupt := bytes.Clone(data)
		corrupt[i] ^= 0x5a
		f.Add(corrupt)
		f.Add(data[:i])
	}
	f.Add(recFrame(RecPages, 0, 0, recLE(uint32(1), uint64(300))))
	f.Add(recFrame(RecZero, 0, 0, recLE(uint64(255), uint64(2))))
	f.Add(recFrame(RecDigest, 0, 0, recLE(uint32(PageSize), uint32(1<<20))))
	f.Add([]byte{})

	f.Fuzz(func(t *testing.T, stream []byte) {
		r := NewReader(bytes.NewReader(stream))
		for n := 0; ; n++ {
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
				r.SetLimits(recTestPages, recTestVCPUs)
			}
			if len(rec.Data) != len(rec.GFNs)*PageSize {
				t.Fatalf("record %d (%s): %d bytes of data for %d pages", n, rec.Type, len(rec.Data), len(rec.GFNs))
			}
			switch rec.Type {
			case RecPages:
				if len(rec.GFNs) < 1 || len(rec.GFNs) > MaxBatch {
					t.Fatalf("record %d: batch of %d pages", n, len(rec.GFNs))
				}
				for _, g := range rec.GFNs {
					if g >= recTestPages {
						t.Fatalf("record %d: page %d is beyond the limit", n, g)
					}
				}
			case RecZero:
				if rec.Count == 0 || rec.First+rec.Count < rec.First || rec.First+rec.Count > recTestPages {
					t.Fatalf("record %d: zero run %d+%d", n, rec.First, rec.Count)
				}
			case RecVCPUs:
				if len(rec.VCPUs) < 1 || len(rec.VCPUs) > recTestVCPUs {
					t.Fatalf("record %d: %d vcpu states", n, len(rec.VCPUs))
				}
			case RecDigest:
				if rec.Digest.ChunkBytes == 0 || rec.Digest.ChunkBytes%PageSize != 0 {
					t.Fatalf("record %d: digest chunk %d", n, rec.Digest.ChunkBytes)
				}
			case RecRefuse, RecAbort, RecVerified:
				if len(rec.Text) > 4096 {
					t.Fatalf("record %d: %d-byte text", n, len(rec.Text))
				}
			}
			if rec.Type != RecPages && len(rec.GFNs) != 0 {
				t.Fatalf("record %d (%s) has page numbers", n, rec.Type)
			}
		}
	})
}
