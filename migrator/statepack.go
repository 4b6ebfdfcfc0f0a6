package migrator

import (
	"errors"
	"fmt"
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
	// stateDecoder unpacks into the buffer it is given and no further
	// (DecodeAll is safe for concurrent use).
	stateDecoder = sync.OnceValue(func() *zstd.Decoder {
		d, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecodeAllCapLimit(true),
			zstd.WithDecoderMaxMemory(MaxState), zstd.WithDecoderMaxWindow(MaxState))
		if err != nil {
			panic(err) // only for bad options
		}
		return d
	})
)

// maxBlock is the most a zstd block unpacks to, and some bytes the
// decoder may write past it.
const maxBlock = 128<<10 + 64

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
// PackState's frames say how much they unpack to, and UnpackState takes
// only such a frame, of MaxState at most, and unpacks it into a buffer of
// that size that it cannot outgrow. A frame that does not say was
// unpacked as it went: one of 41 KB holding 200 MiB of zeros took 366 MiB
// of allocations before it was refused (walk 107 measured the
// destination's peak at 286 MB), and streamed with a window of 64 MiB, 129
// MiB (review 112).
func UnpackState(kind uint8, data []byte) ([]byte, error) {
	if kind&StateZstd == 0 {
		return data, nil
	}
	var h zstd.Header
	if err := h.Decode(data); err != nil {
		return nil, fmt.Errorf("compressed state: %v: %w", err, ErrMalformed)
	}
	switch {
	case !h.HasFCS:
		return nil, fmt.Errorf("compressed state: its zstd frame does not say how much it unpacks to (pagecast's always do): %w", ErrMalformed)
	case h.FrameContentSize > MaxState:
		return nil, fmt.Errorf("compressed state unpacks to %d bytes, more than the %s a migration carries: %w", h.FrameContentSize, wireSize(MaxState), ErrMalformed)
	}
	// Room for one block past the size said, so that a frame that
	// holds more is caught there, not after append has doubled the
	// buffer (a frame saying 1 MiB and holding 2 took 2.3 MiB).
	out, err := stateDecoder().DecodeAll(data, make([]byte, 0, h.FrameContentSize+maxBlock))
	switch {
	case errors.Is(err, zstd.ErrDecoderSizeExceeded), errors.Is(err, zstd.ErrFrameSizeExceeded), errors.Is(err, zstd.ErrWindowSizeExceeded):
		return nil, fmt.Errorf("compressed state unpacks to more than the %d bytes its frame says: %w", h.FrameContentSize, ErrMalformed)
	case err != nil:
		return nil, fmt.Errorf("compressed state: %v: %w", err, ErrMalformed)
	}
	return out, nil
}
