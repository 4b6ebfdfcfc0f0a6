package trace

import (
	"bytes"
	"io"
	"math/rand/v2"
	"testing"
	"time"
)

// benchEpochs is 32 one-second epochs in a 4 GiB guest (1 Mi pages): a
// sweep over 30 000 consecutive pages, 30 000 pages drawn at random, or
// 3 000 drawn at random ("sparse").
func benchEpochs(kind string) (Meta, []Epoch) {
	m := Meta{MemoryBytes: 4 << 30, PageSize: 4096, Epoch: time.Second}
	rng := rand.New(rand.NewPCG(7, 8))
	epochs := make([]Epoch, 32)
	for i := range epochs {
		e := Epoch{Index: uint64(i), Offset: time.Duration(i) * time.Second}
		switch kind {
		case "sweep":
			e.Pages = seq(uint64(i)*30000, 30000)
		case "random":
			e.Pages = randomPages(rng, 30000, m.Pages())
		case "sparse":
			e.Pages = randomPages(rng, 3000, m.Pages())
		}
		epochs[i] = e
	}
	return m, epochs
}

// BenchmarkAppend writes epochs and reports the file's size per page.
func BenchmarkAppend(b *testing.B) {
	for _, kind := range []string{"sweep", "random", "sparse"} {
		b.Run(kind, func(b *testing.B) {
			m, epochs := benchEpochs(kind)
			var buf bytes.Buffer
			w, err := NewWriter(&buf, m)
			if err != nil {
				b.Fatal(err)
			}
			header := w.Size()
			pages := 0
			i := 0
			for b.Loop() {
				e := epochs[i%len(epochs)]
				e.Index, e.Offset = uint64(i), time.Duration(i)*time.Second
				if err := w.Append(e); err != nil {
					b.Fatal(err)
				}
				pages += len(e.Pages)
				i++
				if buf.Len() > 64<<20 {
					buf.Reset()
				}
			}
			// Size per page over one pass of the epochs.
			var one bytes.Buffer
			w1, _ := NewWriter(&one, m)
			n := 0
			for _, e := range epochs {
				w1.Append(e)
				n += len(e.Pages)
			}
			b.ReportMetric(float64(w1.Size()-header)/float64(n), "bytes/page")
			b.ReportMetric(float64(pages)/b.Elapsed().Seconds(), "pages/s")
		})
	}
}

// BenchmarkRead reads a trace of 30 000-page epochs and reports pages
// read per second.
func BenchmarkRead(b *testing.B) {
	for _, kind := range []string{"sweep", "random"} {
		b.Run(kind, func(b *testing.B) {
			m, epochs := benchEpochs(kind)
			data, _ := encode(b, m, epochs)
			pages := 0
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				r, err := NewReader(bytes.NewReader(data))
				if err != nil {
					b.Fatal(err)
				}
				for {
					e, err := r.Next()
					if err == io.EOF {
						break
					}
					if err != nil {
						b.Fatal(err)
					}
					pages += len(e.Pages)
				}
			}
			b.ReportMetric(float64(pages)/b.Elapsed().Seconds(), "pages/s")
		})
	}
}
