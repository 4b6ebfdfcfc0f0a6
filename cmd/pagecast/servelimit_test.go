package main

import (
	"context"
	"io"
	"net"
	"net/http"
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
