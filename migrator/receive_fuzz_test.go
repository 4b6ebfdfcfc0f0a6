package migrator

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// FuzzReceive plays a source sending an arbitrary stream (its checksums made
// right) to Receive into a fresh destination: no panic or hang; the guest
// starts only on success (post-copy aside); a Receive that says nothing
// began or nothing arrived leaves the guest untouched and waiting.
func FuzzReceive(f *testing.F) {
	cfg := memConfig{Memory: 64 * PageSize, Hot: 1, Rate: 10}
	src := newMemGuest(f, cfg, false)
	state, _ := src.SaveState()
	mem := recTestMemory(64)
	seed := func(mode string, recs ...func(w *Writer)) []byte {
		var out bytes.Buffer
		w := NewWriter(&out)
		w.Hello(Hello{Version: ProtocolVersion, PageSize: PageSize, MemoryBytes: cfg.Memory, VCPUs: 1, Image: src.Identity().Image, Mode: mode})
		for _, r := range recs {
			r(w)
		}
		w.Flush()
		return out.Bytes()
	}
	zero := func(w *Writer) { w.Zero(0, 64) }
	pages := func(w *Writer) { w.Pages([]uint64{3, 9}, mem) }
	round := func(w *Writer) { w.EndRound(1) }
	st := func(w *Writer) { w.State(StateGuest, state) }
	end := func(w *Writer) { w.Text(RecEnd, "") }
	commit := func(w *Writer) { w.Commit(true) }
	f.Add(seed("", zero, pages, round, st, end, commit))
	f.Add(seed(ModePrecopy, pages, zero, st, end))
	f.Add(seed(ModeTSMC, zero, func(w *Writer) { w.Bitmap([]uint64{6}) }, st, end))
	f.Add(seed("", pages, func(w *Writer) { w.Text(RecAbort, "bye") }))
	f.Add(seed("", func(w *Writer) { w.Compressed([]uint64{1, 2}, []byte{0x20, 0x20}) }, func(w *Writer) { w.Digest(ComputeDigest(mem)) }))
	f.Fuzz(func(t *testing.T, stream []byte) {
		stream = recReseal(stream)
		dst := newMemGuest(t, cfg, false)
		here, there := net.Pipe()
		go io.Copy(io.Discard, here)
		go func() { here.Write(stream); time.Sleep(time.Millisecond); here.Close() }()
		// A hang, not a time: Receive ends on the idle timeout or the
		// stream's end, long before the context does.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, err := Receive(ctx, there, dst, ReceiveConfig{IdleTimeout: time.Second})
		here.Close()
		if ctx.Err() != nil {
			t.Fatalf("Receive on a %d-byte stream ran until its context ended: %v", len(stream), err)
		}
		if err == nil {
			return
		}
		running, _ := dst.Running()
		if running && !bytes.Contains(stream, []byte(ModeTSMC)) {
			t.Fatalf("the guest runs after a failed receive: %v", err)
		}
		if errors.Is(err, ErrNoHandshake) || errors.Is(err, ErrNothingReceived) {
			if waiting, st := dst.Waiting(); !waiting {
				t.Fatalf("%v, but the guest is %s", err, st)
			}
			if i := bytes.IndexFunc(dst.Memory(), func(r rune) bool { return r != 0 }); i >= 0 {
				t.Fatalf("%v, but memory at %#x was written", err, i)
			}
		}
	})
}
