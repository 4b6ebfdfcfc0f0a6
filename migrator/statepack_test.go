package migrator

import (
	"bytes"
	"errors"
	"log/slog"
	"runtime"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
)

func TestPackState(t *testing.T) {
	text := bytes.Repeat([]byte("QEVM device state: option ROM, BIOS, zero video memory. "), 8000)
	kind, packed := PackState(text)
	if kind != StateGuest|StateZstd || len(packed) >= len(text)/4 {
		t.Fatalf("a %d-byte repetitive state packed to kind %#x, %d bytes", len(text), kind, len(packed))
	}
	got, err := UnpackState(kind, packed)
	if err != nil || !bytes.Equal(got, text) {
		t.Fatalf("unpacked %d bytes (%v), want the %d packed", len(got), err, len(text))
	}
	// What does not shrink goes as it is.
	small := []byte("MEMGUEST\x01")
	if kind, b := PackState(small); kind != StateGuest || !bytes.Equal(b, small) {
		t.Errorf("a 9-byte state: kind %#x, %q; want it unpacked", kind, b)
	}
	if got, err := UnpackState(StateGuest, small); err != nil || !bytes.Equal(got, small) {
		t.Errorf("an unpacked state: %q, %v", got, err)
	}
}

// TestUnpackStateHostile: a frame that unpacks to more than MaxState (a
// bomb: 100 MiB of zeros in some KiB), that does not say its size (a
// stream frame), that says less than it holds, or is not zstd, is
// malformed, and refusing it allocates no more than MaxState: a stream
// frame unpacked as it went took 366 MiB, and 129 MiB with a window of 64
// MiB (review 112).
func TestUnpackStateHostile(t *testing.T) {
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	bomb := enc.EncodeAll(make([]byte, 100<<20), nil)
	stream := func(window int) []byte { // 200 MiB of zeros, no size said
		var buf bytes.Buffer
		w, err := zstd.NewWriter(&buf, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithWindowSize(window))
		if err != nil {
			t.Fatal(err)
		}
		zero := make([]byte, 1<<20)
		for range 200 {
			w.Write(zero)
		}
		w.Close()
		return buf.Bytes()
	}
	// A frame saying 1 MiB that holds 2: its size field rewritten.
	liar := enc.EncodeAll(make([]byte, 2<<20), nil)
	var h zstd.Header
	if err := h.Decode(liar); err != nil || !h.HasFCS || h.FrameContentSize != 2<<20 {
		t.Fatalf("header %+v, %v", h, err)
	}
	fcs := bytes.Index(liar[4:12], []byte{0, 0, 0x20, 0}) // 2 MiB, 4 bytes little endian
	if fcs < 0 {
		t.Fatalf("no 4-byte size in %x", liar[:12])
	}
	liar = bytes.Clone(liar)
	liar[4+fcs+2] = 0x10
	// The decoder is made on its first use, which is not a frame's cost:
	// run alone, this test counted it in the first case to unpack.
	if _, err := UnpackState(PackState(bytes.Repeat([]byte("QEVM device state: option ROM, BIOS, zero video memory. "), 8000))); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, want string
		data       []byte
	}{
		{"bomb", "more than the 64 MiB", bomb},
		{"garbage", "", []byte("not a zstd frame at all")},
		{"truncated", "more than the 64 MiB", bomb[:len(bomb)/2]},
		{"stream, 1 MiB window", "does not say how much", stream(1 << 20)},
		{"stream, 64 MiB window", "does not say how much", stream(64 << 20)},
		{"says less than it holds", "more than the 1048576 bytes its frame says", liar},
		{"two frames", "more than the 1048576 bytes", append(enc.EncodeAll(make([]byte, 1<<20), nil), enc.EncodeAll(make([]byte, 1<<20), nil)...)},
	} {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		out, err := UnpackState(StateGuest|StateZstd, c.data)
		runtime.ReadMemStats(&after)
		took := after.TotalAlloc - before.TotalAlloc
		t.Logf("%s (%d bytes): %v; %.1f MiB allocated", c.name, len(c.data), err, float64(took)/(1<<20))
		if !errors.Is(err, ErrMalformed) || out != nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %d bytes, %v; want ErrMalformed saying %q", c.name, len(out), err, c.want)
		}
		if took > MaxState+8<<20 || len(c.data) < 1000 && took > 1<<20+1<<18 {
			t.Errorf("%s: %.1f MiB allocated to refuse it, want no more than its frame says (at most the %d MiB limit) and a block", c.name, float64(took)/(1<<20), MaxState>>20)
		}
	}
}

// bigState is a test guest whose state carries pad, a QEMU-like
// compressible tail; its destination checks the tail arrived whole.
type bigState struct {
	*memGuest
	pad []byte
	got []byte // what Restore found after the test guest's own state
}

func (g *bigState) SaveState() ([]byte, error) {
	st, err := g.memGuest.SaveState()
	return append(st, g.pad...), err
}

func (g *bigState) Restore(state []byte) error {
	n := len(state) - len(g.pad)
	if n < 0 {
		return errors.New("state shorter than its tail")
	}
	g.got = bytes.Clone(state[n:])
	return g.memGuest.Restore(state[:n])
}

// TestStatePacked: over a link of tens of MiB/s the state goes packed and
// arrives as it was saved.
func TestStatePacked(t *testing.T) {
	load := lightLoad
	load.Memory = 4 << 20
	pad := bytes.Repeat([]byte("device state "), 40000)
	src := &bigState{memGuest: newMemGuest(t, load, true), pad: pad}
	dst := &bigState{memGuest: newMemGuest(t, load, false), pad: pad}
	d := listenDestination(t, dst, ReceiveConfig{})
	var log bytes.Buffer
	migrateTo(t, src, d, Config{MaxBandwidth: 32 << 20, DowntimeLimit: testDowntime,
		Log: slog.New(slog.NewTextHandler(&log, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if !bytes.Equal(dst.got, pad) {
		t.Errorf("the state's tail arrived as %d bytes, want the %d saved", len(dst.got), len(pad))
	}
	if !strings.Contains(log.String(), "state packed") {
		t.Errorf("the state did not go packed:\n%s", log.String())
	}
}

// FuzzUnpackState: whatever a packed state record holds, unpacking ends
// with the state (never over MaxState) or an error wrapping ErrMalformed.
func FuzzUnpackState(f *testing.F) {
	_, packed := PackState(bytes.Repeat([]byte("device state "), 1000))
	f.Add(packed)
	f.Add([]byte("not zstd"))
	f.Fuzz(func(t *testing.T, data []byte) {
		out, err := UnpackState(StateGuest|StateZstd, data)
		if err != nil && !errors.Is(err, ErrMalformed) {
			t.Fatalf("error %v does not wrap ErrMalformed", err)
		}
		if len(out) > MaxState {
			t.Fatalf("%d bytes unpacked, more than MaxState", len(out))
		}
	})
}
