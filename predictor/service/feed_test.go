package service

import (
	"context"
	"testing"
	"time"
)

// TestReplayNothing: a replay of no epochs, looping, ends at once rather
// than spin (found by a review walk: predict serve --parts 4 on a trace of
// three epochs kept a core busy for as long as it ran).
func TestReplayNothing(t *testing.T) {
	svc := New(nil)
	vm, err := svc.AddVM("vm1", 1<<20, 4096, 100*time.Millisecond, "test")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { Replay(context.Background(), vm, nil, nil, 1, true); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Replay of no epochs, looping, has not returned in 5 s")
	}
}
