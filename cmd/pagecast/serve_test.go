package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pagecast/pagecast/predictor/service"
	"github.com/pagecast/pagecast/trace"
)

// rssBytes is this process's resident set size.
func rssBytes(t *testing.T) uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skip("no /proc/self/status")
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseUint(f[1], 10, 64)
			return kb << 10
		}
	}
	t.Skip("no VmRSS")
	return 0
}

// TestServeHostileClients (issue 16): 100 clients that ask for the largest
// reply and never read it and 2000 connections that send nothing cost
// predict serve neither its memory nor other clients' answers.
func TestServeHostileClients(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 2100 connections")
	}
	svc := service.New(nil)
	const pages = 1 << 20
	vm, err := svc.AddVM("vm1", pages, 4096, 100*time.Millisecond, "test")
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
	srv := newHTTPServer(svc.Handler())
	go serveLimited(srv, l, 4096)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		srv.Shutdown(ctx)
		srv.Close()
	})
	addr := l.Addr().String()
	runtime.GC()
	rss0 := rssBytes(t)

	var conns []net.Conn
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	for range 100 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.(*net.TCPConn).SetReadBuffer(4096)
		conns = append(conns, c)
		fmt.Fprintf(c, "GET /v1/vms/vm1/probabilities?start=0&count=65536 HTTP/1.1\r\nHost: x\r\n\r\n")
	}
	for range 2000 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	time.Sleep(500 * time.Millisecond) // the replies fill the socket buffers

	client := &http.Client{Timeout: 5 * time.Second}
	var worst time.Duration
	for i := range 30 {
		start := time.Now()
		resp, err := client.Get(fmt.Sprintf("http://%s/v1/vms/vm1/probabilities?start=%d&count=100", addr, i*100))
		if err != nil {
			t.Fatal(err)
		}
		var body struct{ Probabilities []float32 }
		err = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if err != nil || len(body.Probabilities) != 100 {
			t.Fatalf("reply: %d probabilities, %v", len(body.Probabilities), err)
		}
		worst = max(worst, time.Since(start))
	}
	rss := rssBytes(t)
	t.Logf("worst of 30 answers %v; RSS %d MB before the 2100 connections, %d MB with them", worst, rss0>>20, rss>>20)
	if worst > 100*time.Millisecond && !raceEnabled {
		t.Errorf("an answer took %v", worst)
	}
	// The race detector's shadow memory multiplies RSS; under it, the
	// Go heap is what is bounded.
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	t.Logf("heap in use %d MB", ms.HeapInuse>>20)
	if rss > 300<<20 && !raceEnabled || ms.HeapInuse > 300<<20 {
		t.Errorf("RSS %d MB, heap %d MB", rss>>20, ms.HeapInuse>>20)
	}
}

// TestServeQueries: bad query values are 400s; an empty range is [].
func TestServeQueries(t *testing.T) {
	svc := service.New(nil)
	if _, err := svc.AddVM("vm1", 1000, 4096, time.Second, "test"); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := newHTTPServer(svc.Handler())
	go serveLimited(srv, l, 2)
	defer srv.Close()
	for _, tc := range []struct {
		query string
		code  int
		want  string
	}{
		{"hotset?threshold=NaN", 400, "threshold"},
		{"hotset?threshold=Inf", 400, "threshold"},
		{"hotset?threshold=-Inf", 400, "threshold"},
		{"probabilities?start=1000", 200, `"probabilities":[]`},
		{"probabilities?count=65537", 400, "at most 65536"},
		{"probabilities?start=1e3", 400, "whole number"},
		{"probabilities?count=1;start=2", 400, "separate parameters with &, not ;"},
		{"probabilities?x=%zz", 400, `invalid URL escape \"%zz\""}`}, // no word of ; or &
		{"probabilities?count=", 400, "count is empty"},
	} {
		resp, err := http.Get(fmt.Sprintf("http://%s/v1/vms/vm1/%s", l.Addr(), tc.query))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(bufio.NewReader(resp.Body))
		resp.Body.Close()
		if resp.StatusCode != tc.code || !strings.Contains(string(body), tc.want) {
			t.Errorf("%s: %d %s, want %d with %q", tc.query, resp.StatusCode, body, tc.code, tc.want)
		}
	}
}

// TestServeFlags: no --speed panics; every bad one is an error.
func TestServeFlags(t *testing.T) {
	for _, speed := range []string{"1e9", "Inf", "-1", "NaN"} {
		_, _, err := runApp(t, "predict", "serve", "--trace", "../../testdata/hostile/header-1tib.pct", "--speed", speed, "--listen", "127.0.0.1:0")
		if err == nil || !strings.Contains(err.Error(), "--speed") {
			t.Errorf("--speed %s: %v", speed, err)
		}
	}
	for _, parts := range []string{"0", "65"} {
		_, _, err := runApp(t, "predict", "serve", "--trace", "../../predictor/testdata/parts/xz.pct", "--parts", parts, "--listen", "127.0.0.1:0")
		if err == nil || !strings.Contains(err.Error(), "--parts "+parts+": want 1 to 64") {
			t.Errorf("--parts %s: %v", parts, err)
		}
	}
	for _, tc := range []struct{ args, want string }{
		{"--speed 0 --loop", "--loop replays a paced trace again"},
		{"--epoch 5ms", "--epoch is for --collector"},
	} {
		_, _, err := runApp(t, append([]string{"predict", "serve", "--trace", "../../predictor/testdata/real/awk.pct", "--listen", "127.0.0.1:0"}, strings.Fields(tc.args)...)...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.args, err, tc.want)
		}
	}
	_, _, err := runApp(t, "predict", "serve", "--trace", "../../testdata/hostile/header-16eib.pct")
	if err == nil || !strings.Contains(err.Error(), "4 PiB") {
		t.Errorf("16 EiB header: %v", err)
	}
	csv := filepath.Join(t.TempDir(), "t.csv")
	if err := os.WriteFile(csv, []byte("epoch,page\n0,1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := runApp(t, "predict", "serve", "--trace", csv, "--listen", "127.0.0.1:0"); err == nil || !strings.Contains(err.Error(), "is a CSV trace: make it a trace file first (pagecast trace import") {
		t.Errorf("a CSV trace: %v", err)
	}
	// A trace cut inside its first epoch has nothing to replay: refused,
	// not served with a Brier score of 0 that reads as perfect.
	whole, err := os.ReadFile("../../predictor/testdata/real/awk.pct")
	if err != nil {
		t.Fatal(err)
	}
	cut := filepath.Join(t.TempDir(), "cut.pct")
	if err := os.WriteFile(cut, whole[:100], 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := runApp(t, "predict", "serve", "--trace", cut, "--listen", "127.0.0.1:0"); err == nil || !strings.Contains(err.Error(), "no intact epoch to replay (1 damaged stretch") {
		t.Errorf("a trace cut in its first epoch: %v", err)
	}
	dir := t.TempDir()
	for _, d := range []string{"a", "b"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile("../../predictor/testdata/real/awk.pct")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, d, "awk.pct"), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	_, _, err = runApp(t, "predict", "serve", "--trace", filepath.Join(dir, "a", "awk.pct"), "--trace", filepath.Join(dir, "b", "awk.pct"), "--listen", "127.0.0.1:0")
	if err == nil || !strings.Contains(err.Error(), "which another --trace has too: rename one") {
		t.Errorf("two traces of one name: %v", err)
	}
}

// TestServeRefusesUnservable: predict serve refuses, before serving, a VM
// name its API's paths cannot name and an empty --listen (walk 134: --name
// .. was served and never found; --listen "" served every interface on a
// port the kernel picked), and trace import an empty -o before it imports
// (it imported, then failed to rename its temporary file to "").
func TestServeRefusesUnservable(t *testing.T) {
	const awk = "../../predictor/testdata/real/awk.pct"
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"predict", "serve", "--trace", awk, "--name", "..", "--listen", "127.0.0.1:0"}, `--name: vm "..": the API's paths cannot name it`},
		{[]string{"predict", "serve", "--trace", awk, "--name", ".", "--listen", "127.0.0.1:0"}, `--name: vm ".": the API's paths cannot name it`},
		{[]string{"predict", "serve", "--trace", awk, "--listen", ""}, `--listen "": give host:port`},
		{[]string{"predict", "serve", "--trace", awk, "--listen", "unix:/tmp/s.sock"}, `--listen "unix:/tmp/s.sock": predict serve serves HTTP on TCP: give host:port`},
		{[]string{"predict", "serve", "--trace", awk, "--listen", "unix:s.sock"}, `--listen "unix:s.sock": predict serve serves HTTP on TCP: give host:port`},
		{[]string{"predict", "serve", "--trace", awk, "--listen", "tcp:127.0.0.1:0"}, `--listen "tcp:127.0.0.1:0": predict serve serves HTTP on TCP: give host:port`},
		{[]string{"predict", "serve", "--trace", awk, "--name", "a/..", "--listen", "127.0.0.1:0"}, `--name: vm "a/..": the API's paths cannot name it`},
		{[]string{"predict", "serve", "--trace", awk, "--name", "a//b", "--listen", "127.0.0.1:0"}, `--name: vm "a//b": the API's paths cannot name it`},
		{[]string{"predict", "serve", "--trace", awk, "--name", "a/", "--listen", "127.0.0.1:0"}, `--name: vm "a/": the API's paths cannot name it`},
		{[]string{"trace", "import", "--memory", "1M", "-o", "", "/dev/null"}, `-o "": give the file to write the trace to`},
		{[]string{"trace", "import", "--memory", "1M", "-o", "-", "/dev/null"}, `-o -: give the file to write the trace to (./- for a file of that name)`},
	} {
		_, _, err := runApp(t, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("pagecast %q: %v, want %q", tc.args, err, tc.want)
		}
	}
}

// serveAwk serves awk's trace as predict serve does, its VM named name
// ("": after the file), until the test ends.
func serveAwk(t *testing.T, name string) *httptest.Server {
	t.Helper()
	svc := service.New(nil)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := loadServeTraces(ctx, slog.New(slog.DiscardHandler), svc, []string{"../../predictor/testdata/real/awk.pct"}, name, 1, 1, false); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(svc.Handler())
	t.Cleanup(srv.Close)
	return srv
}

// TestServeHookUnknown: a trace that does not say what recorded it (awk's,
// imported from a CSV) is served with hook "unknown", so that the
// dashboard's hook panel shows the VM (it had no series).
func TestServeHookUnknown(t *testing.T) {
	srv := serveAwk(t, "")
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := `pagecast_predictor_vm_info{hook="unknown",vm="awk"} 1`; !strings.Contains(string(body), want) {
		t.Errorf("no %s in /metrics", want)
	}
}

// TestServeTraceNamed: a single trace's VM takes --name, the name profile
// gave its metrics (walk 106: the trace's file name, "vm" beside "src").
func TestServeTraceNamed(t *testing.T) {
	srv := serveAwk(t, "src")
	resp, err := http.Get(srv.URL + "/v1/vms/src")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET /v1/vms/src: %s", resp.Status)
	}
	if resp, err = http.Get(srv.URL + "/v1/vms/awk"); err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET /v1/vms/awk: %s, want 404: the VM is src", resp.Status)
		}
	}
}

// TestServeShortForParts: a trace of fewer epochs than --parts joins into
// one is refused, saying so. (It was served as a VM fed nothing, its
// replay spinning a core for as long as the server ran; found by a
// review walk.)
func TestServeShortForParts(t *testing.T) {
	path := filepath.Join(t.TempDir(), "short.pct")
	var epochs []trace.Epoch
	for e := range uint64(3) {
		epochs = append(epochs, trace.Epoch{Index: e + 1, Offset: time.Duration(e) * 25 * time.Millisecond, Pages: []uint64{e, 7}})
	}
	writeTrace(t, path, trace.Meta{MemoryBytes: 1 << 20, PageSize: 4096, Epoch: 25 * time.Millisecond, Source: "test"}, epochs...)
	_, _, err := runApp(t, "predict", "serve", "--trace", path, "--parts", "4", "--listen", "127.0.0.1:0")
	if err == nil || !strings.Contains(err.Error(), "its 3 epochs make no whole epoch of --parts 4") {
		t.Errorf("predict serve --parts 4 on 3 epochs: %v", err)
	}
}

// TestImportStdinNamed: trace import from standard input names it so in
// its errors, as in its success line (walk 136: "-: csv: …").
func TestImportStdinNamed(t *testing.T) {
	cmd := exec.Command(binary, "trace", "import", "--memory", "1M", "-o", filepath.Join(t.TempDir(), "x.pct"), "-")
	cmd.Stdin = strings.NewReader("x,y\n")
	out, err := cmd.CombinedOutput()
	if want := "pagecast: standard input: csv line 1: header \"x,y\": want epoch,page\n"; err == nil || string(out) != want {
		t.Errorf("trace import of a bad CSV on standard input: %v, %q, want %q", err, out, want)
	}
}
