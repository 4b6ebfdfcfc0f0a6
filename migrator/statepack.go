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
	stateDecoder = sync.OnceValue(func() *zstd.Decoder {
		d, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(MaxState),
			zstd.WithDecoderMaxWindow(MaxState))
		if err != nil {
			panic(err)
		}
		return d
	})
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
func UnpackState(kind uint8, data []byte) ([]byte, error) {
	if kind&StateZstd == 0 {
		return data, nil
	}
	out, err := stateDecoder().DecodeAll(data, nil)
	switch {
	case errors.Is(err, zstd.ErrDecoderSizeExceeded), errors.Is(err, zstd.ErrWindowSizeExceeded), err == nil && len(out) > MaxState:
		return nil, fmt.Errorf("compressed state unpacks to more than the %s a migration carries: %w", wireSize(MaxState), ErrMalformed)
	case err != nil:
		return nil, fmt.Errorf("compressed state: %v: %w", err, ErrMalformed)
	}
	return out, nil
}
