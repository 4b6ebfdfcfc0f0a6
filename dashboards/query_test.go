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
