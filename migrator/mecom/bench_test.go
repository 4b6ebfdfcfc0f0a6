package mecom

import (
	"fmt"
	"runtime"
	"testing"

	"github.com/pagecast/pagecast/guest"
)

// BenchmarkIsZero scans zero pages, the worst case (nothing stops the
// scan early), from cache and from memory.
func BenchmarkIsZero(b *testing.B) {
	for _, size := range []struct {
		name  string
		bytes int
	}{{"cache/1MiB", 1 << 20}, {"memory/256MiB", 256 << 20}} {
		b.Run(size.name, func(b *testing.B) {
			mem := make([]byte, size.bytes)
			clear(mem) // touch it: untouched memory is one shared zero page
			pages := size.bytes / PageSize
			b.SetBytes(PageSize)
			i := 0
			for b.Loop() {
				if !IsZero(mem[i*PageSize : (i+1)*PageSize]) {
					b.Fatal("zero page not zero")
				}
				if i++; i == pages {
					i = 0
				}
			}
			b.ReportMetric(float64(b.N)*PageSize/b.Elapsed().Seconds()/1e9, "GB/s")
		})
	}
}

// BenchmarkClassify reports the time to classify a page of each kind.
func BenchmarkClassify(b *testing.B) {
	for _, k := range kindClass {
		b.Run(k.kind, func(b *testing.B) {
			pages := kindPages(k.mix, 256)
			b.SetBytes(PageSize)
			i := 0
			for b.Loop() {
				Classify(pages[i&255])
				i++
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/page")
		})
	}
}

// BenchmarkCodec codes pages of each kind with each codec that applies,
// reporting speed and ratio (wire bytes, header included, per page byte).
func BenchmarkCodec(b *testing.B) {
	for _, k := range kindClass[1:] {
		pages := kindPages(k.mix, 256)
		for _, codec := range []Codec{Raw, Words, S2, Zstd} {
			if codec == Words && k.class != Repeat {
				continue
			}
			b.Run(k.kind+"/"+codec.String(), func(b *testing.B) {
				w := newWorker()
				out := make([]byte, 0, 2*PageSize)
				b.SetBytes(PageSize)
				i, total := 0, 0
				for b.Loop() {
					out, _ = w.appendCoded(out[:0], pages[i&255], codec)
					total += len(out)
					i++
				}
				b.ReportMetric(float64(total)/float64(i)/PageSize, "ratio")
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/page")
			})
		}
	}
}

// benchBatches cuts the default arena into batches of the migrator's
// size, in address order.
func benchBatches() (mem []byte, batches [][]uint64) {
	mem = defaultArena()
	const batch = 256
	first := guest.ArenaStart / PageSize
	for p := first; p < len(mem)/PageSize; p += batch {
		b := make([]uint64, 0, batch)
		for q := p; q < min(p+batch, len(mem)/PageSize); q++ {
			b = append(b, uint64(q))
		}
		batches = append(batches, b)
	}
	return mem, batches
}

// BenchmarkEncode encodes the default mix in batches of 256 pages with one
// worker and with GOMAXPROCS, at an unknown bandwidth (fewest bytes win),
// at 1 Gbit/s and at 10 Gbit/s. GB/s is input (guest memory) per second;
// GB/s/core divides it by the workers.
func BenchmarkEncode(b *testing.B) {
	mem, batches := benchBatches()
	for _, workers := range []int{1, runtime.GOMAXPROCS(0)} {
		for _, bw := range []struct {
			name string
			rate float64
		}{{"unknown", 0}, {"1Gbit", 125e6}, {"10Gbit", 1.25e9}} {
			b.Run(fmt.Sprintf("workers=%d/bw=%s", workers, bw.name), func(b *testing.B) {
				e := NewEncoder(workers)
				e.SetBandwidth(bw.rate)
				// One pass to learn, as a migration's first round does.
				var out []byte
				for _, gfns := range batches {
					out, _ = e.Encode(out[:0], gfns, mem)
				}
				before := e.Stats()
				b.SetBytes(int64(len(batches[0]) * PageSize))
				i := 0
				for b.Loop() {
					out, _ = e.Encode(out[:0], batches[i%len(batches)], mem)
					i++
				}
				after := e.Stats()
				var in, coded uint64
				for c := range numClasses {
					in += after.In[c] - before.In[c]
					coded += after.Out[c] - before.Out[c]
				}
				gbps := float64(in) / b.Elapsed().Seconds() / 1e9
				b.ReportMetric(gbps, "GB/s")
				b.ReportMetric(gbps/float64(workers), "GB/s/core")
				b.ReportMetric(float64(coded)/float64(in), "ratio")
				b.Logf("choices %v", after.Choice)
			})
		}
	}
}

// BenchmarkDecode decodes the default mix encoded at an unknown bandwidth
// (low-entropy pages in zstd) and at 10 Gbit/s (mostly raw).
func BenchmarkDecode(b *testing.B) {
	mem, batches := benchBatches()
	for _, bw := range []struct {
		name string
		rate float64
	}{{"unknown", 0}, {"10Gbit", 1.25e9}} {
		b.Run("bw="+bw.name, func(b *testing.B) {
			e := NewEncoder(0)
			e.SetBandwidth(bw.rate)
			blobs := make([][]byte, len(batches))
			for i, gfns := range batches {
				blobs[i], _ = e.Encode(nil, gfns, mem)
			}
			b.SetBytes(int64(len(batches[0]) * PageSize))
			i, pages := 0, 0
			for b.Loop() {
				k := i % len(blobs)
				if err := Decode(blobs[k], len(batches[k]), func(int, []byte) { pages++ }); err != nil {
					b.Fatal(err)
				}
				i++
			}
			b.ReportMetric(float64(pages)*PageSize/b.Elapsed().Seconds()/1e9, "GB/s")
		})
	}
}
