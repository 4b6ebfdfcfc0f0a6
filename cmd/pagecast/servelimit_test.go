package main

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestLimitIdleAfterBusy: with every slot answering a request, Accept
// holds the next connection; once those answers are sent and their
// connections sit idle (kept alive), one is evicted for it. (It was held
// until an idle connection timed out, IdleTimeout, 30 s; found by a review
// walk.)
func TestLimitIdleAfterBusy(t *testing.T) {
	release := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			<-release
		}
		io.WriteString(w, "ok\n")
	})
	addr := freeAddr(t)
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := newHTTPServer(h)
	go serveLimited(srv, l, 1)
	defer srv.Close()

	// Client A: keep-alive, a slow request occupying the only slot.
	a := &http.Client{Transport: &http.Transport{}}
	doneA := make(chan error, 1)
	go func() {
		resp, err := a.Get("http://" + addr + "/slow")
		if err == nil {
			io.ReadAll(resp.Body)
			resp.Body.Close() // the connection goes back to A's pool: idle, kept alive
		}
		doneA <- err
	}()
	time.Sleep(200 * time.Millisecond)

	// Client B comes while A is answered: held in Accept.
	b := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	doneB := make(chan error, 1)
	start := time.Now()
	go func() {
		resp, err := b.Get("http://" + addr + "/fast")
		if err == nil {
			io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		doneB <- err
	}()
	time.Sleep(200 * time.Millisecond)
	close(release) // A is answered, then idles
	if err := <-doneA; err != nil {
		t.Fatal(err)
	}
	if err := <-doneB; err != nil {
		t.Fatalf("B, after %v (A answered and idle since ~%v): %v", time.Since(start).Round(time.Millisecond), 200*time.Millisecond, err)
	}
	t.Logf("B answered after %v", time.Since(start))
}

// TestShutdownHeldAccept: predict serve stops (Ctrl-C) with srv.Shutdown
// and a 2 s timeout, as --metrics' stop does with 5 s. With every slot busy
// and one more connection held in limitedListener.Accept, the listener's
// Close lets it go, so that Serve returns and the timeout holds. (Go's
// Shutdown waits for Serve to return before it looks at its context, and
// the timeout was ignored until a slot freed: up to WriteTimeout, 30 s, for
// a client that does not read its reply; found by a review walk.)
func TestShutdownHeldAccept(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(5 * time.Second)
	})
	addr := freeAddr(t)
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := newHTTPServer(h)
	served := make(chan error, 1)
	go func() { served <- serveLimited(srv, l, 1) }()
	go http.Get("http://" + addr + "/a") // takes the only slot
	time.Sleep(200 * time.Millisecond)
	c, err := net.Dial("tcp", addr) // held in Accept
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	time.Sleep(200 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second) // as runServe
	defer cancel()
	start := time.Now()
	err = srv.Shutdown(ctx)
	took := time.Since(start)
	t.Logf("Shutdown with a 2 s timeout returned %v after %v; Serve: %v", err, took.Round(time.Millisecond), <-served)
	if took > 3*time.Second {
		t.Errorf("Shutdown took %v", took.Round(time.Millisecond))
	}
}

// TestHeaderLimit: a request whose line and header pass 16 KiB gets 431,
// one within it is answered (walk 133: Go's server reads 4 KiB past
// MaxHeaderBytes, and 431 came only at 20 KiB, where the README said 16).
func TestHeaderLimit(t *testing.T) {
	srv := newHTTPServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") }))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	defer srv.Close()
	for _, c := range []struct {
		head int // bytes of the request's line and header, its blank line included
		want int
	}{{15 << 10, http.StatusOK}, {16<<10 - 64, http.StatusOK}, {16<<10 + 64, http.StatusRequestHeaderFieldsTooLarge}, {20 << 10, http.StatusRequestHeaderFieldsTooLarge}} {
		start := "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: "
		req := start + strings.Repeat("a", c.head-len(start)-4) + "\r\n\r\n"
		conn, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(conn, req); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("%d bytes: %v", c.head, err)
		}
		resp.Body.Close()
		conn.Close()
		if resp.StatusCode != c.want {
			t.Errorf("a request head of %d bytes: %s, want %d", c.head, resp.Status, c.want)
		}
	}
}
