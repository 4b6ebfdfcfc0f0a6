package dashboards

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
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

// TestRangeBounded: a reply of more series than MaxSeries is refused, saying
// so, having decoded no more of it (a million one-sample series, 45 MB,
// took report past 2 GB; found by a hostile-input walk); Prometheus's own
// error is quoted; a reply of a few series decodes, NaN and Inf dropped.
func TestRangeBounded(t *testing.T) {
	reply := ""
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if strings.Contains(reply, `"error"`) {
			w.WriteHeader(http.StatusBadRequest)
		}
		io.WriteString(w, reply)
	}))
	defer srv.Close()
	now := time.Now()
	s, err := NewSource(srv.URL, now.Add(-time.Hour), now, time.Minute, 15*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	b.WriteString(`{"status":"success","data":{"resultType":"matrix","result":[`)
	for i := range MaxSeries + 1 {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `{"metric":{"vm":"v%d"},"values":[[1700000000,"1"]]}`, i)
	}
	b.WriteString(`]}}`)
	reply = b.String()
	if _, err := s.Range(context.Background(), "up"); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("more than %d series", MaxSeries)) {
		t.Errorf("%d series: %v", MaxSeries+1, err)
	}
	// One series of more samples than MaxSamples: refused as it is read
	// (decoded whole, 8 M samples took 1 GB before they were counted).
	defer func(n int) { MaxSamples = n }(MaxSamples)
	MaxSamples = 1000
	b.Reset()
	b.WriteString(`{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"vm":"a"},"values":[`)
	for i := range MaxSamples + 1 {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `[%d,"1"]`, 1700000000+i)
	}
	b.WriteString(`]}]}}`)
	reply = b.String()
	if _, err := s.Range(context.Background(), "up"); err == nil || !strings.Contains(err.Error(), "more than 1000 samples") {
		t.Errorf("one series of %d samples: %v", MaxSamples+1, err)
	}
	reply = `{"status":"error","errorType":"bad_data","error":"parse error at char 3"}`
	if _, err := s.Range(context.Background(), "up("); err == nil || !strings.Contains(err.Error(), "bad_data: parse error at char 3") {
		t.Errorf("Prometheus's error: %v", err)
	}
	reply = `{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"vm":"a"},"values":[[1700000000,"1.5"],[1700000015.5,"NaN"],[1700000030,"+Inf"],[1700000045,"2"]]},{"metric":{"vm":"b"},"values":[[1700000000,"NaN"]]}]},"warnings":["x"]}`
	got, err := s.Range(context.Background(), "up")
	if err != nil || len(got) != 1 || got[0].Labels["vm"] != "a" || !slices.Equal(got[0].Values, []float64{1.5, 2}) || !got[0].Times[1].Equal(time.Unix(1700000045, 0)) {
		t.Errorf("a small reply: %+v, %v", got, err)
	}
}

// TestVariableWithData: of a variable's values, the one drawn where none
// is given is the first with samples in the range: Prometheus's label
// values also name series of the last two hours with none there (walk
// 156: a vm gone for minutes was drawn, six panels empty). Where the
// series cannot be asked for, the first value is.
func TestVariableWithData(t *testing.T) {
	series := true
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.URL.Path == "/api/v1/label/vm/values":
			io.WriteString(w, `{"status":"success","data":["gone","web1"]}`)
		case r.URL.Path == "/api/v1/series" && series:
			io.WriteString(w, `{"status":"success","data":[{"__name__":"pagecast_predictor_pages","vm":"web1"}]}`)
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	now := time.Now()
	s, err := NewSource(srv.URL, now.Add(-3*time.Minute), now, time.Second, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	d := Dashboard{Title: "t", Templating: Templating{List: []Variable{{Type: "query", Name: "vm", Query: "label_values(pagecast_predictor_pages, vm)"}}}}
	vars, values, err := s.Variables(context.Background(), d, nil)
	if err != nil || vars["vm"] != "web1" || len(values["vm"]) != 2 {
		t.Errorf("vars %v, values %v, %v: want vm=web1, the one with data, of 2", vars, values, err)
	}
	series = false
	if vars, _, err := s.Variables(context.Background(), d, nil); err != nil || vars["vm"] != "gone" {
		t.Errorf("without the series endpoint: vars %v, %v: want the first, gone", vars, err)
	}
}
