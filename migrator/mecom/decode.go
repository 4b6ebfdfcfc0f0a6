package mecom

import (
	"errors"
	"fmt"
	"sync"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
)

// ErrCorrupt is wrapped by every error Decode returns for input that is
// not a batch Encode could have produced.
var ErrCorrupt = errors.New("corrupt compressed pages")

// zstdDecoder is shared by all Decode calls; DecodeAll is safe for
// concurrent use. It refuses to produce more than a page, so a hostile
// frame cannot make it allocate or write more.
var zstdDecoder = sync.OnceValues(func() (*zstd.Decoder, error) {
	return zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(0), // one block decoder per GOMAXPROCS
		zstd.WithDecoderMaxMemory(PageSize),
		zstd.WithDecodeAllCapLimit(true),
	)
})

// Decode decodes a batch produced by Encode for n pages, calling
// page(i, data) with each restored page in order. data is exactly PageSize
// bytes and valid only during the call. Input that is not such a batch —
// truncated, with trailing bytes, a page that does not decode to exactly
// PageSize bytes — returns an error wrapping ErrCorrupt, after page has
// been called for the pages before the bad one. Decode allocates one page
// whatever n says.
func Decode(src []byte, n int, page func(i int, data []byte)) error {
	if n < 0 {
		return fmt.Errorf("decode %d pages: negative count", n)
	}
	// Every page takes at least a byte, so a short blob is found out
	// before any work.
	if len(src) < n {
		return fmt.Errorf("decode %d pages from %d bytes: too short: %w", n, len(src), ErrCorrupt)
	}
	buf := make([]byte, PageSize)
	size := len(src)
	for i := range n {
		data, rest, err := decodePage(buf, src)
		if err != nil {
			return fmt.Errorf("decode page %d of %d at byte %d: %w", i, n, size-len(src), err)
		}
		page(i, data)
		src = rest
	}
	if len(src) != 0 {
		return fmt.Errorf("decode %d pages: %d bytes left over: %w", n, len(src), ErrCorrupt)
	}
	return nil
}

// decodePage decodes the page at the start of src, using buf (PageSize
// bytes) when it has to restore it, and returns the page and the rest of
// src.
func decodePage(buf, src []byte) (data, rest []byte, err error) {
	if len(src) == 0 {
		return nil, nil, fmt.Errorf("truncated header: %w", ErrCorrupt)
	}
	codec := Codec(src[0] >> codecShift)
	low := int(src[0] & lenHighMax)
	if codec >= numCodecs {
		return nil, nil, fmt.Errorf("unknown codec %d: %w", uint8(codec), ErrCorrupt)
	}
	if !codec.hasLength() {
		if low != 0 {
			return nil, nil, fmt.Errorf("%v header with length bits %#x: %w", codec, low, ErrCorrupt)
		}
		switch codec {
		case Raw:
			if len(src) < 1+PageSize {
				return nil, nil, fmt.Errorf("raw page truncated to %d bytes: %w", len(src)-1, ErrCorrupt)
			}
			// The page is passed in place; the full slice expression
			// stops an append by the callee from running into the next.
			return src[1 : 1+PageSize : 1+PageSize], src[1+PageSize:], nil
		default: // ZeroMarker
			// Cleared each time: the callee may have written to buf.
			clear(buf)
			return buf, src[1:], nil
		}
	}

	if len(src) < 2 {
		return nil, nil, fmt.Errorf("truncated %v header: %w", codec, ErrCorrupt)
	}
	size := low<<8 | int(src[1])
	if size == 0 || size > maxPayload {
		return nil, nil, fmt.Errorf("%v payload of %d bytes, want 1 to %d: %w", codec, size, maxPayload, ErrCorrupt)
	}
	if len(src) < 2+size {
		return nil, nil, fmt.Errorf("%v payload of %d bytes truncated to %d: %w", codec, size, len(src)-2, ErrCorrupt)
	}
	payload := src[2 : 2+size]
	rest = src[2+size:]

	switch codec {
	case Words:
		if err := decodeWords(buf, payload); err != nil {
			return nil, nil, err
		}
		return buf, rest, nil
	case S2:
		// The length is checked before decoding so s2 never allocates.
		n, err := s2.DecodedLen(payload)
		if err != nil {
			return nil, nil, fmt.Errorf("s2 length: %w: %w", err, ErrCorrupt)
		}
		if n != PageSize {
			return nil, nil, fmt.Errorf("s2 block of %d bytes, want %d: %w", n, PageSize, ErrCorrupt)
		}
		out, err := s2.Decode(buf, payload)
		if err != nil {
			return nil, nil, fmt.Errorf("s2: %w: %w", err, ErrCorrupt)
		}
		return out, rest, nil
	default: // Zstd
		dec, err := zstdDecoder()
		if err != nil {
			return nil, nil, fmt.Errorf("zstd decoder: %w", err)
		}
		// DecodeAll appends at most cap(buf) bytes to buf[:0]; one byte
		// short of a page is as wrong as one over.
		out, err := dec.DecodeAll(payload, buf[:0])
		if err != nil {
			return nil, nil, fmt.Errorf("zstd: %w: %w", err, ErrCorrupt)
		}
		if len(out) != PageSize {
			return nil, nil, fmt.Errorf("zstd frame of %d bytes, want %d: %w", len(out), PageSize, ErrCorrupt)
		}
		return out, rest, nil
	}
}
