package migrator

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// The guest's state crosses the wire in the switch-over's pause. QEMU's
// device state compresses well (option ROMs, the BIOS, zero video memory:
// measured 319 KB → 134 KB without default devices, 923 KB → 361 KB with
// them), and on a link of some tens of MiB/s the bytes saved are
// milliseconds of pause; on a fast link unpacking costs more than it
// saves.

// packBelow is the link rate below which the state is sent compressed.
// Unpacking QEMU's 923 KB of default devices' state (to 361 KB) took 3.7
// ms here: that pays where sending the 562 KB saved takes longer, below
// some 150 MiB/s.
const packBelow = 128 << 20

var (
	stateEncoder = sync.OnceValue(func() *zstd.Encoder {
		e, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
		if err != nil {
			panic(err) // only for bad options
		}
		return e
	})
	// stateDecoders unpack states as streams, one each at a time.
	stateDecoders = sync.Pool{New: func() any {
		d, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1),
			zstd.WithDecoderMaxMemory(MaxState), zstd.WithDecoderMaxWindow(MaxState))
		if err != nil {
			panic(err) // only for bad options
		}
		return d
	}}
)

// PackState returns state and its kind as they go on the wire: kind
// StateGuest|StateZstd and one zstd frame where that is smaller, else
// StateGuest and state itself.
func PackState(state []byte) (uint8, []byte) {
	packed := stateEncoder().EncodeAll(state, make([]byte, 0, len(state)/2))
	if len(packed) >= len(state) {
		return StateGuest, state
	}
	return StateGuest | StateZstd, packed
}

// UnpackState returns the state a RecState of kind carried: data itself,
// or what its zstd frame unpacks to, never more than MaxState bytes
// whatever the frame claims; an error wraps ErrMalformed.
//
// It unpacks as a stream, in pieces of unpackPiece bytes, and makes the
// whole only once it has ended within MaxState: unpacked whole (DecodeAll),
// a 41 KB frame of 200 MiB of zeros, with no size in its header, took 366
// MiB of allocations before it was refused (walk 107 measured the
// destination's peak at 286 MB); so, at most MaxState and a piece.
func UnpackState(kind uint8, data []byte) ([]byte, error) {
	if kind&StateZstd == 0 {
		return data, nil
	}
	d := stateDecoders.Get().(*zstd.Decoder)
	defer stateDecoders.Put(d)
	if err := d.Reset(bytes.NewReader(data)); err != nil {
		return nil, fmt.Errorf("compressed state: %v: %w", err, ErrMalformed)
	}
	defer d.Reset(nil) // lets data go
	var pieces [][]byte
	total := 0
	for {
		piece := make([]byte, min(unpackPiece, MaxState+1-total))
		n, err := readPiece(d, piece)
		pieces, total = append(pieces, piece[:n]), total+n
		switch {
		case total > MaxState, errors.Is(err, zstd.ErrDecoderSizeExceeded), errors.Is(err, zstd.ErrWindowSizeExceeded):
			return nil, fmt.Errorf("compressed state unpacks to more than the %s a migration carries: %w", wireSize(MaxState), ErrMalformed)
		case err == io.EOF: // the frame's own end (a cut one is io.ErrUnexpectedEOF)
			if len(pieces) == 1 {
				return pieces[0], nil
			}
			out := make([]byte, 0, total)
			for _, p := range pieces {
				out = append(out, p...)
			}
			return out, nil
		case err != nil:
			return nil, fmt.Errorf("compressed state: %v: %w", err, ErrMalformed)
		}
	}
}

// readPiece fills p from r, or reads up to r's end or error: io.EOF where
// r ended cleanly, as io.ReadFull does not tell.
func readPiece(r io.Reader, p []byte) (int, error) {
	n := 0
	for n < len(p) {
		m, err := r.Read(p[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// unpackPiece is how much UnpackState unpacks at a time.
const unpackPiece = 1 << 20
