package predictor

import (
	"path/filepath"
	"runtime"
	"testing"

	"github.com/pagecast/pagecast/trace"
)

// TestHostileTraces (issue 16): a header claiming 1 TiB and index gaps of
// 2^32 epochs cost memory in proportion to the trace, not to what it
// claims.
func TestHostileTraces(t *testing.T) {
	for _, name := range []string{"header-1tib.pct", "index-gap-2p32.pct", "index-gap-1e8.pct", "index-gap-2p63.pct"} {
		t.Run(name, func(t *testing.T) {
			runtime.GC()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			results, err := EvaluateFile(filepath.Join("..", "testdata", "hostile", name), EvalOptions{})
			runtime.ReadMemStats(&after)
			if err != nil || len(results) != 4 || len(results[0].Epochs) == 0 {
				t.Fatalf("%d results, err %v", len(results), err)
			}
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 64<<20 {
				t.Fatalf("evaluating allocated %d MB", alloc>>20)
			}
		})
	}
}

// TestPageMap: a map keeps dirtied pages and their neighbours, in order,
// and scores count every guest page.
func TestPageMap(t *testing.T) {
	const total = 1 << 30
	epochs := []trace.Epoch{{Index: 0, Pages: []uint64{0, 5, 1 << 20, total - 1}}, {Index: 1, Pages: []uint64{40, 1 << 20}}}
	pm := PlanPages(epochs, total)
	if pm == nil {
		t.Fatal("no map for 4 pages of 2^30")
	}
	// Runs: [0, 22), [24, 57), 2^20±16, the last 17.
	if want := uint64(22 + 33 + 33 + 17); pm.Mapped() != want {
		t.Fatalf("mapped %d, want %d", pm.Mapped(), want)
	}
	if pm.Dirtied() != 5 { // 1<<20 twice
		t.Fatalf("dirtied %d, want the 5 pages the epochs hold", pm.Dirtied())
	}
	for _, c := range []struct{ page, dense uint64 }{{0, 0}, {21, 21}, {22, pm.Far}, {40, 38}, {56, 54}, {57, pm.Far}, {1<<20 - 16, 55}, {1 << 20, 71}, {total - 1, pm.Mapped() - 1}, {total - 18, pm.Far}} {
		if got := pm.Dense(c.page); got != c.dense {
			t.Errorf("Dense(%d) = %d, want %d", c.page, got, c.dense)
		}
	}
	if PlanPages(epochs, DensePages) != nil {
		t.Fatal("a map for a small guest")
	}
	var es []trace.Epoch
	for i := range 30 {
		es = append(es, trace.Epoch{Index: uint64(i), Pages: []uint64{uint64(i % 3), 1 << 20}})
	}
	pages, pm := MapPages(es, total)
	res := Evaluate(es, pages, Contenders(pages, Options{}), EvalOptions{Pages: pm})
	if res[0].Pairs != total*uint64(len(res[0].Epochs)) {
		t.Fatalf("pairs %d for %d epochs of %d pages", res[0].Pairs, len(res[0].Epochs), total)
	}
}
