package dashboards

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestEndlessReply: a "Prometheus" whose reply never ends is read up to
// MaxReply and refused (report grew to 2 GB and ran out of memory).
func TestEndlessReply(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[`)
		chunk := []byte(strings.Repeat(`[1,"1"],`, 8192))
		for r.Context().Err() == nil {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	}))
	defer srv.Close()
	now := time.Now()
	s, err := NewSource(srv.URL, now.Add(-time.Hour), now, time.Minute, 15*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := s.Range(ctx, "up"); err == nil || !strings.Contains(err.Error(), "a reply over 64 MiB") {
		t.Errorf("endless reply: %v, want it refused past 64 MiB", err)
	}
}

// TestReplyOfMaxReply: a body of exactly MaxReply bytes is read whole, one
// a byte longer refused, whatever sizes the reads come in (one that ended
// at MaxReply was refused; found by a review walk).
func TestReplyOfMaxReply(t *testing.T) {
	for _, tc := range []struct {
		size int64
		ok   bool
	}{{MaxReply - 1, true}, {MaxReply, true}, {MaxReply + 1, false}} {
		for _, chunk := range []int{4096, 1 << 20, 3 << 20} {
			b := &limitedBody{ReadCloser: io.NopCloser(io.LimitReader(zeros{}, tc.size)), left: MaxReply}
			buf := make([]byte, chunk)
			var n int64
			var err error
			for {
				var k int
				k, err = b.Read(buf)
				n += int64(k)
				if err != nil {
					break
				}
			}
			if ok := err == io.EOF; ok != tc.ok || (ok && n != tc.size) {
				t.Errorf("a body of %d bytes read %d at a time: %d read, %v", tc.size, chunk, n, err)
			}
		}
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// TestSlowReply: a "Prometheus" whose reply trickles on for ever (a byte
// at a time) is given up on after ReplyTimeout, saying so; it held report
// for good (found by a walk).
func TestSlowReply(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"sta`)
		for r.Context().Err() == nil {
			w.(http.Flusher).Flush()
			io.WriteString(w, " ")
			time.Sleep(20 * time.Millisecond)
		}
	}))
	defer srv.Close()
	timeout := ReplyTimeout
	ReplyTimeout = 300 * time.Millisecond
	defer func() { ReplyTimeout = timeout }()
	now := time.Now()
	s, err := NewSource(srv.URL, now.Add(-time.Hour), now, time.Minute, 15*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	_, err = s.Range(ctx, "up")
	if err == nil || !strings.Contains(err.Error(), "no whole reply in 300ms") || ctx.Err() != nil {
		t.Errorf("a reply that trickles on: %v after %v, want it given up on after 300ms", err, time.Since(start))
	}
}
