package migrator

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A Relay carries a connection both ways, the bytes intact, and the
// source-to-destination direction no faster than its rate: what a relay
// at 4 MiB/s lets through in 1 MiB takes at least a quarter second, bar
// the first burst (the machine's load can only make it slower).
func TestRelay(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	got := make(chan []byte, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			got <- nil
			return
		}
		defer c.Close()
		b, _ := io.ReadAll(c)
		c.Write([]byte("ack")) // the way back
		got <- b
	}()
	const rate, size = 4 << 20, 1 << 20
	r, err := NewRelay("tcp:"+l.Addr().String(), rate)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	addr, _ := ParseURI(r.URI())
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	want := make([]byte, size)
	for i := range want {
		want[i] = byte(rand.Uint32())
	}
	start := time.Now()
	if _, err := c.Write(want); err != nil {
		t.Fatal(err)
	}
	c.(*net.TCPConn).CloseWrite()
	ack, err := io.ReadAll(c)
	if err != nil || string(ack) != "ack" {
		t.Errorf("the way back: %q, %v", ack, err)
	}
	elapsed := time.Since(start)
	if b := <-got; !bytes.Equal(b, want) {
		t.Errorf("the destination got %d bytes, not the %d sent", len(b), len(want))
	}
	if least := time.Duration((size - NewLimiter(rate).burst()) / rate * float64(time.Second)); elapsed < least {
		t.Errorf("%d bytes through a relay of %d bytes/s in %v, under %v", size, rate, elapsed, least)
	}

	if _, err := NewRelay("unix:/tmp/x", rate); err == nil {
		t.Error("a relay to a unix: URI started")
	}
}

// TestLinkHint: a connection's failure says what it means for the
// migration, once.
func TestLinkHint(t *testing.T) {
	wrap := func(err error) error {
		return fmt.Errorf("send pages: write pages record: %w", &net.OpError{Op: "write", Net: "tcp", Err: err})
	}
	for _, tt := range []struct {
		err  error
		want string
	}{
		{wrap(syscall.EPIPE), "the destination went away"},
		{wrap(syscall.ECONNRESET), "the destination went away"},
		{fmt.Errorf("read verdict: %w", io.EOF), "the destination went away"},
		{wrap(os.ErrDeadlineExceeded), "nothing moved on the link for 10s"},
		{errors.New("the destination refused: memory 16 MiB, not 32 MiB"), ""},
		{fmt.Errorf("read the destination's answer to the handshake: %w (the destination hung up: …)", io.EOF), ""},
	} {
		got := linkHint(tt.err, 10*time.Second)
		if !errors.Is(got, tt.err) && got != tt.err {
			t.Errorf("linkHint(%v) = %v, which does not wrap it", tt.err, got)
		}
		switch {
		case tt.want == "" && got.Error() != tt.err.Error():
			t.Errorf("linkHint(%v) = %v, want it unchanged", tt.err, got)
		case tt.want != "" && !strings.Contains(got.Error(), tt.want):
			t.Errorf("linkHint(%v) = %v, want %q", tt.err, got, tt.want)
		}
	}
	if linkHint(nil, time.Second) != nil {
		t.Error("linkHint(nil) is not nil")
	}
}

// sizedGuest is a memGuest whose device state has a size.
type sizedGuest struct{ *memGuest }

func (sizedGuest) StateBytes() uint64 { return 64 << 10 }

// TestCapLifted: a cap lifted mid-migration (migrate-set-parameters
// max-bandwidth 0, no cap) lets the migration go at the link's pace and
// stop once what is pending fits, as a cap raised does. The engine took
// the cap it started with as still in force and min'ed its measure with
// the limiter's rate, now 0: nothing fitted, the migration ran to its
// round cap, and query-migrate's expected-downtime read -9223372036854775808.
func TestCapLifted(t *testing.T) {
	for _, tc := range []struct {
		name string
		to   uint64
	}{{"raised", 1 << 40}, {"lifted", 0}} {
		t.Run(tc.name, func(t *testing.T) {
			load := memConfig{Memory: 16 << 20, Hot: 256, P: 0.9, Rate: 200000}
			src := newMemGuest(t, load, true)
			dst := newMemGuest(t, load, false)
			d := listenDestination(t, dst, ReceiveConfig{})
			m, err := Outgoing(sizedGuest{src}, d.uri, Config{MaxBandwidth: 4 << 20, DowntimeLimit: 100 * time.Millisecond, MaxRounds: 6})
			if err != nil {
				t.Fatal(err)
			}
			time.Sleep(300 * time.Millisecond)
			m.SetBandwidth(tc.to)
			least := int64(0)
			for done := false; !done; {
				select {
				case <-m.Done():
					done = true
				case <-time.After(20 * time.Millisecond):
					least = min(least, m.Info().ExpectedDowntime)
				}
			}
			info, err := m.Wait()
			<-d.done
			if err != nil {
				t.Fatal(err)
			}
			if least < 0 {
				t.Errorf("query-migrate's expected-downtime read %d ms", least)
			}
			if !strings.Contains(info.Pagecast.StopReason, "fit the downtime limit") {
				t.Errorf("stopped because %q in rounds %v, want what was pending fitting", info.Pagecast.StopReason, info.Pagecast.RoundPages)
			}
		})
	}
}

// TestDowntimeLimitRaised: a downtime limit raised mid-migration
// (migrate-set-parameters downtime-limit, virsh migrate-setmaxdowntime)
// is the one the next check of what is pending takes, as QEMU's is: a
// migration that could not stop within 1 ms stops once what is pending
// fits 10 s, at the next harvest, not at the end of the round or at its
// round cap.
func TestDowntimeLimitRaised(t *testing.T) {
	load := memConfig{Memory: 16 << 20, Hot: 256, P: 0.9, Rate: 200000}
	src := newMemGuest(t, load, true)
	dst := newMemGuest(t, load, false)
	d := listenDestination(t, dst, ReceiveConfig{})
	m, err := Outgoing(sizedGuest{src}, d.uri, Config{MaxBandwidth: 4 << 20, DowntimeLimit: time.Millisecond, MaxRounds: 6})
	if err != nil {
		t.Fatal(err)
	}
	if got := m.DowntimeLimit(); got != time.Millisecond {
		t.Errorf("DowntimeLimit() = %v at the start, want 1ms", got)
	}
	time.Sleep(300 * time.Millisecond)
	m.SetDowntimeLimit(10 * time.Second)
	m.SetDowntimeLimit(0) // refused: a limit stays positive
	if got := m.DowntimeLimit(); got != 10*time.Second {
		t.Errorf("DowntimeLimit() = %v after the change, want 10s", got)
	}
	info, err := m.Wait()
	<-d.done
	if err != nil {
		t.Fatal(err)
	}
	// At the next harvest, in round 1 (16 MiB at 4 MiB/s: 4 s), not at
	// its end (walk 101: some 8 s later at 4 MiB/s).
	if !strings.Contains(info.Pagecast.StopReason, "fit the downtime limit at a dirty log harvest in round 1") {
		t.Errorf("stopped because %q in rounds %v, want what was pending fitting the raised limit at a harvest in round 1", info.Pagecast.StopReason, info.Pagecast.RoundPages)
	}
}

// TestControllerDowntimeLimitMidway: migrate-set-parameters downtime-limit
// sent to pagecast's monitor during a migration changes that migration's
// limit, as QEMU's does (it changed only the next migration's), and
// query-migrate-parameters reads it back.
func TestControllerDowntimeLimitMidway(t *testing.T) {
	ctx := context.Background()
	load := memConfig{Memory: 16 << 20, Hot: 256, P: 0.9, Rate: 200000}
	src := newMemGuest(t, load, true)
	dst := newMemGuest(t, load, false)
	d := listenDestination(t, dst, ReceiveConfig{})
	c := NewController(sizedGuest{src}, slog.New(slog.DiscardHandler), nil)
	if _, err := c.setParameters(ctx, json.RawMessage(`{"max-bandwidth":4194304,"downtime-limit":1,"x-pagecast-max-rounds":6}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.migrate(ctx, json.RawMessage(`{"uri":"`+d.uri+`"}`)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if _, err := c.setParameters(ctx, json.RawMessage(`{"downtime-limit":10000}`)); err != nil {
		t.Fatal(err)
	}
	got, err := c.queryParameters(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if dl := got.(parameters).DowntimeLimit; dl == nil || *dl != 10000 {
		t.Errorf("query-migrate-parameters' downtime-limit: %v, want 10000", dl)
	}
	info, err := c.Current().Wait()
	<-d.done
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(info.Pagecast.StopReason, "fit the downtime limit at a dirty log harvest in round 1") {
		t.Errorf("stopped because %q in rounds %v, want what was pending fitting the raised limit at a harvest in round 1", info.Pagecast.StopReason, info.Pagecast.RoundPages)
	}
}

// TestLimiterRate: Rate reads back the rate as set, whatever a float64
// holds of it (2^64-1, QEMU's largest max-bandwidth, came back as 2^63).
func TestLimiterRate(t *testing.T) {
	for _, r := range []uint64{0, 1, 32 << 20, 1<<53 + 1, 1<<64 - 1} {
		if got := NewLimiter(r).Rate(); got != r {
			t.Errorf("NewLimiter(%d).Rate() = %d", r, got)
		}
	}
}
