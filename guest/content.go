package guest

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"os"
	"strconv"
	"strings"
	"sync"
)

// A Mix is the share of each kind of page in the arena's initial content,
// in percent; the four sum to 100. The kinds are the classes adaptive
// compression tells apart:
//
//   - Zero: all zero bytes.
//   - Repeat: one random 32-bit word repeated, or (a quarter of them) two to
//     four words, each repeated over its part of the page.
//   - Text: English-like text, words with spaces, full stops and newlines.
//   - Random: random bytes, which do not compress.
type Mix struct {
	Zero, Repeat, Text, Random int
}

// DefaultMix is the content mix used unless another is asked for.
var DefaultMix = Mix{Zero: 35, Repeat: 25, Text: 20, Random: 20}

// ParseMix parses "zero=35,repeat=25,text=20,random=20"; kinds left out
// get 0.
func ParseMix(s string) (Mix, error) {
	var m Mix
	seen := map[string]bool{}
	for kv := range strings.SplitSeq(s, ",") {
		key, val, _ := strings.Cut(strings.TrimSpace(kv), "=")
		var dst *int
		switch key {
		case "zero":
			dst = &m.Zero
		case "repeat":
			dst = &m.Repeat
		case "text":
			dst = &m.Text
		case "random":
			dst = &m.Random
		default:
			return Mix{}, fmt.Errorf("content mix: unknown page kind %q (want zero, repeat, text, random)", key)
		}
		if seen[key] {
			return Mix{}, fmt.Errorf("content mix: %s given twice", key)
		}
		seen[key] = true
		n, err := strconv.Atoi(val)
		if err != nil {
			return Mix{}, fmt.Errorf("content mix: %s: want a percentage, got %q", key, val)
		}
		*dst = n
	}
	if err := m.Validate(); err != nil {
		return Mix{}, err
	}
	return m, nil
}

// Validate checks that every share is in [0, 100] and that they sum to 100.
func (m Mix) Validate() error {
	for _, n := range []int{m.Zero, m.Repeat, m.Text, m.Random} {
		if n < 0 || n > 100 {
			return fmt.Errorf("content mix %v: shares must be in [0, 100]", m)
		}
	}
	if sum := m.Zero + m.Repeat + m.Text + m.Random; sum != 100 {
		return fmt.Errorf("content mix %v: shares sum to %d, want 100", m, sum)
	}
	return nil
}

func (m Mix) String() string {
	return fmt.Sprintf("zero=%d,repeat=%d,text=%d,random=%d", m.Zero, m.Repeat, m.Text, m.Random)
}

// Page kinds, in the order of Mix's fields.
const (
	kindZero = iota
	kindRepeat
	kindText
	kindRandom
)

// kindBlock is the number of consecutive arena pages whose kinds are an
// exact shuffle of the mix, so the shares hold to the page over any 100.
const kindBlock = 100

// FillArena writes the initial content of the arena: the whole pages of
// mem[ArenaStart:], where mem is guest memory indexed by physical address.
// A page's content depends only on the mix, the seed and the page's
// address, so the same arguments always give the same bytes. It panics if
// the mix is not valid.
func FillArena(mem []byte, mix Mix, seed uint64) {
	if err := mix.Validate(); err != nil {
		panic(err)
	}
	if len(mem) <= ArenaStart {
		return
	}
	arena := mem[ArenaStart:]
	fillPages(arena[:len(arena)/PageSize*PageSize], 0, mix, seed)
}

// WriteRAMFile writes to path the memory of a guest of ramBytes bytes
// whose first lowBytes are below 4 GiB and visible to it: the arena
// content FillArena gives a guest of lowBytes, at its physical address,
// and zeros elsewhere (the file is sparse there). QEMU maps the file as
// the guest's RAM (-object memory-backend-file,mem-path=PATH,share=on),
// where file offset and physical address agree below lowBytes.
func WriteRAMFile(path string, ramBytes, lowBytes uint64, mix Mix, seed uint64) error {
	if err := mix.Validate(); err != nil {
		return fmt.Errorf("write guest memory file: %w", err)
	}
	if lowBytes < MinMemory || lowBytes%PageSize != 0 || lowBytes > ramBytes {
		return fmt.Errorf("write guest memory file: memory size %d below 4 GiB of %d: want a multiple of %d, at least %d",
			lowBytes, ramBytes, PageSize, MinMemory)
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("write guest memory file: %w", err)
	}
	if err := f.Truncate(int64(ramBytes)); err != nil {
		f.Close()
		return fmt.Errorf("write guest memory file: %w", err)
	}
	chunk := make([]byte, 1<<22)
	pages := (lowBytes - ArenaStart) / PageSize
	for first := uint64(0); first < pages; {
		n := min(pages-first, uint64(len(chunk)/PageSize))
		buf := chunk[:n*PageSize]
		fillPages(buf, first, mix, seed)
		// Zero pages are left as holes: they read as zeros and hold no
		// memory (on tmpfs, a written zero page holds a page), and the
		// migration engine sends them without reading them.
		for lo := 0; lo < len(buf); {
			for lo < len(buf) && allZero(buf[lo:lo+PageSize]) {
				lo += PageSize
			}
			hi := lo
			for hi < len(buf) && !allZero(buf[hi:hi+PageSize]) {
				hi += PageSize
			}
			if hi > lo {
				if _, err := f.WriteAt(buf[lo:hi], int64(ArenaStart+first*PageSize)+int64(lo)); err != nil {
					f.Close()
					return fmt.Errorf("write guest memory file: %w", err)
				}
			}
			lo = hi
		}
		first += n
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write guest memory file: %w", err)
	}
	return nil
}

// allZero reports whether p holds only zero bytes.
func allZero(p []byte) bool {
	for _, b := range p {
		if b != 0 {
			return false
		}
	}
	return true
}

// fillPages fills buf, whole pages starting at arena page first.
func fillPages(buf []byte, first uint64, mix Mix, seed uint64) {
	var kinds [kindBlock]uint8
	block := ^uint64(0)
	for off := 0; off < len(buf); off += PageSize {
		page := first + uint64(off/PageSize)
		if page/kindBlock != block {
			block = page / kindBlock
			blockKinds(&kinds, mix, seed, block)
		}
		r := rng(splitmix(seed ^ splitmix(ArenaStart/PageSize+page)))
		fillPage(buf[off:off+PageSize], kinds[page%kindBlock], &r)
	}
}

// blockKinds deals the kinds of one block of pages: the mix's exact counts,
// shuffled.
func blockKinds(kinds *[kindBlock]uint8, mix Mix, seed, block uint64) {
	i := 0
	for kind, n := range []int{mix.Zero, mix.Repeat, mix.Text, mix.Random} {
		for range n {
			kinds[i] = uint8(kind)
			i++
		}
	}
	r := rng(splitmix(seed ^ splitmix(^block)))
	for i := kindBlock - 1; i > 0; i-- { // Fisher-Yates
		j := r.below(uint64(i + 1))
		kinds[i], kinds[j] = kinds[j], kinds[i]
	}
}

func fillPage(p []byte, kind uint8, r *rng) {
	switch kind {
	case kindZero:
		clear(p)
	case kindRepeat:
		words := 1
		if v := r.next(); v%4 == 0 {
			words = 2 + int(v>>32)%3
		}
		part := len(p) / words &^ 7
		for i := range words {
			end := (i + 1) * part
			if i == words-1 {
				end = len(p)
			}
			fillWord(p[i*part:end], uint32(r.next())|1) // |1: never a zero page
		}
	case kindText:
		text := englishText()
		off := r.below(uint64(len(text) - len(p)))
		copy(p, text[off:])
	case kindRandom:
		for i := 0; i < len(p); i += 8 {
			binary.LittleEndian.PutUint64(p[i:], r.next())
		}
	}
}

// fillWord fills b (a multiple of 8 bytes long) with w repeated.
func fillWord(b []byte, w uint32) {
	binary.LittleEndian.PutUint64(b, uint64(w)<<32|uint64(w))
	for n := 8; n < len(b); n *= 2 {
		copy(b[n:], b[:n])
	}
}

// rng is wyrand: one multiply per 64 random bits.
type rng uint64

func (r *rng) next() uint64 {
	*r += 0xa0761d6478bd642f
	hi, lo := bits.Mul64(uint64(*r), uint64(*r)^0xe7037ed1a0b428db)
	return hi ^ lo
}

// below returns a number in [0, n).
func (r *rng) below(n uint64) uint64 {
	hi, _ := bits.Mul64(r.next(), n)
	return hi
}

// splitmix is SplitMix64's finaliser, to turn seeds and indexes into
// independent generator states.
func splitmix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}

// textSize is the length of the text pages are cut from.
const textSize = 64 << 10

// englishText is textSize bytes of English-like text, the same every time.
var englishText = sync.OnceValue(func() []byte {
	words := strings.Fields(`the of and to a in is it you that he was for on are with as I his they
		be at one have this from or had by hot word but what some we can out other were all there
		when up use your how said an each she which do their time if will way about many then them
		write would like so these her long make thing see him two has look more day could go come
		did number sound no most people my over know water than call first who may down side been
		now find any new work part take get place made live where after back little only round man
		year came show every good me give our under name very through just form sentence great think
		say help low line differ turn cause much mean before move right boy old too same tell does
		set three want air well also play small end put home read hand port large spell add even
		land here must big high such follow act why ask men change went light kind off need house
		picture try us again animal point mother world near build self earth father memory page
		migration machine virtual network copy round dirty`)
	r := rng(1)
	var b strings.Builder
	line := 0
	for b.Len() < textSize {
		n := 4 + int(r.below(14)) // words in the sentence
		for i := range n {
			w := words[r.below(uint64(len(words)))]
			if i == 0 {
				w = strings.ToUpper(w[:1]) + w[1:]
			}
			if i == n-1 {
				w += "."
			}
			if line+len(w) > 72 {
				b.WriteByte('\n')
				line = 0
			} else if line > 0 {
				b.WriteByte(' ')
				line++
			}
			b.WriteString(w)
			line += len(w)
		}
	}
	return []byte(b.String()[:textSize])
})
