package guest

import (
	"bytes"
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestParseMix(t *testing.T) {
	tests := []struct {
		s       string
		want    Mix
		wantErr string
	}{
		{s: "zero=35,repeat=25,text=20,random=20", want: DefaultMix},
		{s: "random=100", want: Mix{Random: 100}},
		{s: " text=50, zero=50 ", want: Mix{Zero: 50, Text: 50}},
		{s: DefaultMix.String(), want: DefaultMix},
		{s: "zero=50", wantErr: "content mix zero=50,repeat=0,text=0,random=0: shares sum to 50, want 100"},
		{s: "zero=150,random=-50", wantErr: "shares must be in [0, 100]"},
		{s: "ones=100", wantErr: `content mix: unknown page kind "ones"`},
		{s: "zero=x", wantErr: `content mix: zero: want a percentage, got "x"`},
		{s: "zero=50,zero=50", wantErr: "content mix: zero given twice"},
		{s: "", wantErr: `content mix: unknown page kind ""`},
	}
	for _, tt := range tests {
		t.Run(tt.s, func(t *testing.T) {
			got, err := ParseMix(tt.s)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseMix(%q) error = %v, want %q", tt.s, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseMix(%q) = %v, %v; want %v", tt.s, got, err, tt.want)
			}
		})
	}
}

// classify tells which kind of page p looks like.
func classify(p []byte) int {
	if bytes.Count(p, []byte{0}) == len(p) {
		return kindZero
	}
	words := map[uint32]bool{}
	for i := 0; i < len(p) && len(words) <= 4; i += 4 {
		words[binary.LittleEndian.Uint32(p[i:])] = true
	}
	if len(words) <= 4 {
		return kindRepeat
	}
	for _, c := range p {
		if c != '\n' && (c < ' ' || c > '~') {
			return kindRandom
		}
	}
	return kindText
}

func TestFillArena(t *testing.T) {
	const memBytes = 64 << 20
	for _, mix := range []Mix{DefaultMix, {Zero: 10, Repeat: 40, Text: 40, Random: 10}, {Text: 100}} {
		t.Run(mix.String(), func(t *testing.T) {
			mem := make([]byte, memBytes)
			for i := range mem {
				mem[i] = 0xAA // zero pages must be zeroed, not left alone
			}
			FillArena(mem, mix, 42)
			if bytes.Count(mem[:ArenaStart], []byte{0xAA}) != ArenaStart {
				t.Error("FillArena wrote below the arena")
			}
			var counts [4]int
			pages := (memBytes - ArenaStart) / PageSize
			for i := range pages {
				counts[classify(mem[ArenaStart+i*PageSize:][:PageSize])]++
			}
			for kind, want := range []int{mix.Zero, mix.Repeat, mix.Text, mix.Random} {
				got := 100 * float64(counts[kind]) / float64(pages)
				if math.Abs(got-float64(want)) > 1 {
					t.Errorf("kind %d: %.2f%% of pages, want %d%% ± 1", kind, got, want)
				}
			}

			again := make([]byte, memBytes)
			FillArena(again, mix, 42)
			if !bytes.Equal(mem[ArenaStart:], again[ArenaStart:]) {
				t.Error("FillArena with the same seed gave different content")
			}
			FillArena(again, mix, 43)
			if bytes.Equal(mem[ArenaStart:], again[ArenaStart:]) {
				t.Error("FillArena with another seed gave the same content")
			}
		})
	}
}

// The guest memory file holds FillArena's arena below lowBytes and zeros
// above it, and bad sizes or mixes are refused.
func TestWriteRAMFile(t *testing.T) {
	const ramBytes, lowBytes = 24 << 20, 16 << 20
	path := filepath.Join(t.TempDir(), "ram")
	if err := WriteRAMFile(path, ramBytes, lowBytes, DefaultMix, 7); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := make([]byte, ramBytes)
	FillArena(want[:lowBytes], DefaultMix, 7)
	if !bytes.Equal(got, want) {
		t.Error("the guest memory file differs from FillArena's content below 4 GiB and zeros above")
	}
	if bytes.Equal(want[ArenaStart:lowBytes], make([]byte, lowBytes-ArenaStart)) {
		t.Fatal("FillArena wrote only zeros: the test says nothing")
	}
	// Zero pages are holes: the file holds only the others.
	nonZero := 0
	for off := 0; off < len(want); off += PageSize {
		if !bytes.Equal(want[off:off+PageSize], make([]byte, PageSize)) {
			nonZero++
		}
	}
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	if held := st.Blocks * 512; held > int64(nonZero+16)*PageSize {
		t.Errorf("the file holds %d bytes for %d non-zero pages (%d bytes)", held, nonZero, nonZero*PageSize)
	}

	for _, c := range []struct {
		ram, low uint64
		mix      Mix
	}{
		{ramBytes, MinMemory + 1, DefaultMix}, // not whole pages
		{ramBytes, MinMemory - PageSize, DefaultMix},
		{lowBytes, ramBytes, DefaultMix}, // more below 4 GiB than in all
		{ramBytes, lowBytes, Mix{Zero: 1}},
	} {
		if err := WriteRAMFile(path, c.ram, c.low, c.mix, 7); err == nil {
			t.Errorf("WriteRAMFile(%d, %d, %+v): no error", c.ram, c.low, c.mix)
		}
	}
}

func BenchmarkFillArena(b *testing.B) {
	mem := make([]byte, 128<<20)
	arena := len(mem) - ArenaStart
	b.SetBytes(int64(arena))
	for b.Loop() {
		FillArena(mem, DefaultMix, 1)
	}
	b.ReportMetric(float64(b.N*arena/PageSize)/b.Elapsed().Seconds(), "pages/s")
}
