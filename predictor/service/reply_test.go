package service

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestArrayReply: a reply written a chunk at a time is the JSON of the
// whole, for an empty array, one chunk and many, its & not escaped as the
// service's other replies do not escape it.
func TestArrayReply(t *testing.T) {
	for _, n := range []int{0, 1, replyChunk, 3*replyChunk + 7} {
		items := make([]float32, n)
		for i := range items {
			items[i] = float32(i) / float32(n+1) / 1e6
		}
		rec := httptest.NewRecorder()
		writeArrayReply(rec, map[string]any{"vm": "a\"b&c", "count": n}, "probabilities", n, func(lo, hi int) any { return items[lo:hi] })
		var got struct {
			VM            string
			Count         int
			Probabilities []float32
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
			t.Fatalf("%d items: %v in %.200q", n, err, rec.Body.String())
		}
		if got.VM != "a\"b&c" || !strings.Contains(rec.Body.String(), `"a\"b&c"`) || got.Count != n || len(got.Probabilities) != n || !slices.Equal(got.Probabilities, items) {
			t.Errorf("%d items: read back %q, %d, %d items", n, got.VM, got.Count, len(got.Probabilities))
		}
		if n == 0 && !strings.Contains(rec.Body.String(), `"probabilities":[]`) {
			t.Errorf("no items: %s", rec.Body.String())
		}
	}
}

// TestStalledClients: clients that ask for the largest reply and read
// nothing hold a bounded share of it each (each reply was encoded whole,
// about 0.9 MB, and 4000 such clients held 3.7 GB); past the replies'
// budget a large reply waits, then is refused with a 503, and a small one
// is answered at once.
func TestStalledClients(t *testing.T) {
	svc := New(nil)
	vm, err := svc.AddVM("vm1", 1<<20, 4096, 100*time.Millisecond, "test")
	if err != nil {
		t.Fatal(err)
	}
	for e := range 10 {
		vm.Observe([]uint64{uint64(e), 1000, 2000})
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// Small socket buffers at both ends, so that the replies wait in
	// the server and not in the kernel.
	srv := &http.Server{Handler: svc.Handler(), WriteTimeout: time.Minute}
	go srv.Serve(smallBuffers{l})
	t.Cleanup(func() { srv.Close() })
	addr := l.Addr().String()

	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	const stalled = 400
	for range stalled {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.(*net.TCPConn).SetReadBuffer(4096)
		fmt.Fprintf(c, "GET /v1/vms/vm1/probabilities?start=0&count=65536 HTTP/1.1\r\nHost: x\r\n\r\n")
	}
	time.Sleep(time.Second) // the replies fill the socket buffers
	runtime.GC()
	var with runtime.MemStats
	runtime.ReadMemStats(&with)
	grew := int64(with.HeapInuse) - int64(before.HeapInuse)
	t.Logf("heap in use grew by %d MB with %d stalled clients", grew>>20, stalled)
	if grew > replyBudget+stalled*128<<10 {
		t.Errorf("heap grew by %d MB with %d stalled clients", grew>>20, stalled)
	}

	small, err := http.Get("http://" + addr + "/v1/vms/vm1/probabilities?start=0&count=100")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, small.Body)
	small.Body.Close()
	if small.StatusCode != http.StatusOK {
		t.Errorf("a small reply beside them: %s", small.Status)
	}
	start := time.Now()
	large, err := http.Get("http://" + addr + "/v1/vms/vm1/probabilities?start=0&count=65536")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(large.Body)
	large.Body.Close()
	if large.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "busy") || time.Since(start) > 2*replyWait {
		t.Errorf("a large reply past the budget: %s after %v: %.100s", large.Status, time.Since(start), body)
	}
}

// smallBuffers gives each connection a 4 KiB send buffer.
type smallBuffers struct{ net.Listener }

func (l smallBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		c.(*net.TCPConn).SetWriteBuffer(4096)
	}
	return c, err
}

// TestIDNotUTF8: a VM whose id (a trace's file name) is not UTF-8 is
// served under the id mended, and /metrics still answers for every VM
// (Prometheus refused the label, and the scrape with it: a 500).
func TestIDNotUTF8(t *testing.T) {
	svc := New(nil)
	for _, id := range []string{"good", "bad\xff"} {
		vm, err := svc.AddVM(id, 64, 4096, 100*time.Millisecond, "test")
		if err != nil {
			t.Fatal(err)
		}
		vm.Observe([]uint64{1, 2})
	}
	srv := httptest.NewServer(svc.Handler())
	defer srv.Close()
	for _, path := range []string{"/metrics", "/v1/vms/bad%EF%BF%BD"} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || path == "/metrics" && !strings.Contains(string(b), `vm="good"`) {
			t.Errorf("GET %s: %s %.200s", path, resp.Status, b)
		}
	}
}
