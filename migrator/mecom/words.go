package mecom

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

// The Words codec: a page as runs of equal 32-bit little-endian words,
// each run a uvarint count of words (at least 1) followed by the word's
// four bytes, the counts summing to PageSize/4. A page of one repeated word
// takes 6 bytes; one with a few words, or a few words overwritten, a few
// dozen.

// runEnd returns the byte offset where the run of equal words that starts
// at byte offset start ends. Short runs, the rule on pages that are not
// Repeat, are followed eight bytes at a time (two words against the run's
// word doubled). Once a run is 64 bytes long it is extended by comparing
// the next stretch with the run so far, which is all that word, with
// bytes.Equal, doubling the stretch while it matches and halving it when
// it does not: a page-long run costs a dozen vector compares instead of
// 512 scalar ones.
func runEnd(page []byte, start int) int {
	w := binary.LittleEndian.Uint32(page[start:])
	pair := uint64(w)<<32 | uint64(w)
	i := start + 4
	for i+8 <= len(page) && i-start < 64 && binary.LittleEndian.Uint64(page[i:]) == pair {
		i += 8
	}
	for n := i - start; n >= 64 && i < len(page); {
		m := min(n, len(page)-i)
		if bytes.Equal(page[i:i+m], page[start:start+m]) {
			i += m
			n = i - start
		} else {
			n = n / 2 &^ 3 // whole words
		}
	}
	for i+8 <= len(page) && binary.LittleEndian.Uint64(page[i:]) == pair {
		i += 8
	}
	if i+4 <= len(page) && binary.LittleEndian.Uint32(page[i:]) == w {
		i += 4
	}
	return i
}

// uvarintLen is the length of v as a uvarint.
func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

// wordsSize returns how many bytes Words codes page in, or a number above
// limit as soon as it is sure to exceed limit, so pages that are not runs
// cost only the first few dozen words of scanning.
func wordsSize(page []byte, limit int) int {
	size := 0
	for i := 0; i < PageSize && size <= limit; {
		end := runEnd(page, i)
		size += uvarintLen(uint64(end-i)/4) + 4
		i = end
	}
	return size
}

// appendWords appends the Words coding of page to dst if it takes at most
// limit bytes; otherwise it returns dst unchanged and false.
func appendWords(dst, page []byte, limit int) ([]byte, bool) {
	start := len(dst)
	for i := 0; i < PageSize; {
		end := runEnd(page, i)
		dst = binary.AppendUvarint(dst, uint64(end-i)/4)
		dst = append(dst, page[i:i+4]...)
		if len(dst)-start > limit {
			return dst[:start], false
		}
		i = end
	}
	return dst, true
}

// decodeWords decodes a Words payload into page, which is PageSize bytes.
// The payload must fill the page exactly and be consumed exactly.
func decodeWords(page, src []byte) error {
	at := 0 // bytes of page filled
	for len(src) > 0 {
		count, n := binary.Uvarint(src)
		if n <= 0 {
			return fmt.Errorf("words: bad run length: %w", ErrCorrupt)
		}
		src = src[n:]
		if count == 0 {
			return fmt.Errorf("words: empty run at word %d: %w", at/4, ErrCorrupt)
		}
		if count > uint64(PageSize-at)/4 {
			return fmt.Errorf("words: run of %d words at word %d overflows the page: %w", count, at/4, ErrCorrupt)
		}
		if len(src) < 4 {
			return fmt.Errorf("words: run at word %d lacks its word: %w", at/4, ErrCorrupt)
		}
		end := at + int(count)*4
		fillWords(page[at:end], src[:4])
		src = src[4:]
		at = end
	}
	if at != PageSize {
		return fmt.Errorf("words: runs cover %d of %d bytes: %w", at, PageSize, ErrCorrupt)
	}
	return nil
}

// fillWords fills b, a multiple of four bytes, with the word w, doubling
// the filled prefix with copy so long runs go at memmove speed.
func fillWords(b, w []byte) {
	copy(b, w)
	for n := 4; n < len(b); n *= 2 {
		copy(b[n:], b[:n])
	}
}
