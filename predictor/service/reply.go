package service

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// A reply's array is encoded and written replyChunk items at a time, so
// that a client that reads slowly holds a chunk's encoding and not the
// whole reply's: 4000 clients that asked for 65536 pages each and read
// nothing held 3.7 GB when each reply was encoded whole (about 0.9 MB
// each).
const replyChunk = 512

// Replies of more than smallReply bytes of data take their bytes from a
// budget of replyBudget for as long as they are being written, waiting at
// most replyWait for it (then 503): a reply's data is copied at the
// request, so clients that read nothing would otherwise hold a copy each.
// Smaller ones, at most --max-conns of them, go unchecked.
const (
	smallReply  = 16 << 10
	replyBudget = 64 << 20
	replyWait   = 5 * time.Second
)

// writeArrayReply writes head as a JSON object whose last member, field,
// is an array of n items; each(lo, hi) gives items lo to hi-1.
func writeArrayReply(w http.ResponseWriter, head map[string]any, field string, n int, each func(lo, hi int) any) {
	b, err := marshalJSON(head)
	if err != nil || len(head) == 0 {
		writeError(w, http.StatusInternalServerError, fmt.Sprintf("encode the reply: %v", err))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	b = append(b[:len(b)-1], ","+strconv.Quote(field)+":["...) // the head without its closing brace
	for lo := 0; lo < n; lo += replyChunk {
		c, err := marshalJSON(each(lo, min(n, lo+replyChunk)))
		if err != nil {
			return // the reply is cut short: the client sees bad JSON
		}
		if lo > 0 {
			b = append(b, ',')
		}
		if _, err := w.Write(append(b, c[1:len(c)-1]...)); err != nil {
			return // the client is gone
		}
		b = b[:0]
	}
	w.Write(append(b, "]}\n"...))
}

// marshalJSON is json.Marshal as jsonEncoder writes: & stays &, as in the
// service's other replies.
func marshalJSON(v any) ([]byte, error) {
	var b bytes.Buffer
	if err := jsonEncoder(&b).Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

// reserve takes bytes from the replies' budget for a reply of that much
// data, writing a 503 if it cannot within replyWait; release gives them
// back.
func (s *Service) reserve(w http.ResponseWriter, r *http.Request, bytes uint64) (release func(), ok bool) {
	if bytes <= smallReply {
		return func() {}, true
	}
	ctx, cancel := context.WithTimeout(r.Context(), replyWait)
	defer cancel()
	if !s.replies.take(ctx, bytes) {
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, fmt.Sprintf("busy: replies holding %d MiB are being written to clients that read them slowly; try again, or ask for fewer pages", replyBudget>>20))
		return nil, false
	}
	return func() { s.replies.give(bytes) }, true
}

// budget is a count of bytes that may be taken and given back.
type budget struct {
	mu    sync.Mutex
	left  uint64
	freed chan struct{} // closed, and made anew, when bytes are given back
}

func newBudget(n uint64) budget { return budget{left: n, freed: make(chan struct{})} }

// take takes n bytes, waiting for them until ctx ends (false then).
func (b *budget) take(ctx context.Context, n uint64) bool {
	for {
		b.mu.Lock()
		if n <= b.left {
			b.left -= n
			b.mu.Unlock()
			return true
		}
		freed := b.freed
		b.mu.Unlock()
		select {
		case <-freed:
		case <-ctx.Done():
			return false
		}
	}
}

// give gives n bytes back.
func (b *budget) give(n uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.left += n
	close(b.freed)
	b.freed = make(chan struct{})
}
