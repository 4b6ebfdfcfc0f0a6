package migrator

import (
	"math/rand/v2"
	"testing"

	"github.com/pagecast/pagecast/bitmap"
	"github.com/pagecast/pagecast/migrator/mecom"
)

// TestPendingShareCodesThePages: the stop's estimate of what the pending
// pages take coded is theirs, not their content class's so far: a hot set
// of varied text pending after the round coded a guest's repetitive text
// (the same class, low entropy) codes to several times the class's share.
// (Taken as the class's, a 32 MiB guest's predictive+mecom judged its
// stop-and-copy at 0.56 of the pages' size, sent it at 0.80, and paused
// 377 ms against a limit of 300.)
func TestPendingShareCodesThePages(t *testing.T) {
	const pages, hot = 1024, 128
	mem := make([]byte, pages*PageSize)
	rng := rand.New(rand.NewPCG(1, 2))
	sentence := []byte("the quick brown fox jumps over the lazy dog while the migration goes on; ")
	for p := range pages {
		page := mem[p*PageSize : (p+1)*PageSize]
		if p < hot { // varied printable text: still low entropy by the sample, but it codes poorly
			for i := range page {
				page[i] = byte(0x20 + rng.IntN(0x5f))
			}
			continue
		}
		for i := range page {
			page[i] = sentence[(i+p)%len(sentence)]
		}
	}
	contents := mappedContents(mem)
	if c := mecom.Classify(contents.Page(0)); c != mecom.LowEntropy {
		t.Fatalf("a hot page is %v, want low entropy as the cold ones", c)
	}
	enc := mecom.NewEncoder(1)
	var cold []uint64
	for p := uint64(hot); p < pages; p++ {
		cold = append(cold, p)
	}
	if _, err := enc.Encode(nil, cold, mem); err != nil { // the round so far: the cold pages
		t.Fatal(err)
	}
	pending := bitmap.New(pages)
	for p := range uint64(hot) {
		pending.Set(p)
	}
	s := &sender{enc: enc, contents: contents, pending: pending, pendingN: hot}
	share, ok := s.pendingShare()
	in, out := enc.Measure([][]byte{contents.Page(0), contents.Page(1)})
	t.Logf("pending share %.3f; the class's so far %.3f; two hot pages coded %.3f", share,
		float64(enc.Stats().Out[mecom.LowEntropy])/float64(enc.Stats().In[mecom.LowEntropy]), float64(out)/float64(in))
	if !ok || share < 0.5 {
		t.Errorf("pending share %.3f (ok %v), want the hot pages' own, over 0.5", share, ok)
	}
}
