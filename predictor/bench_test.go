package predictor

import (
	"math/rand/v2"
	"runtime"
	"testing"
)

// benchModel returns a model of pages pages that has observed 128 epochs
// of a hot set with spatial clusters, fitted.
func benchModel(pages uint64) *Model {
	m, _ := benchModelFits(pages, 1)
	return m
}

// benchModelFits is benchModel, shown each epoch in parts (see
// ObserveParts; 1: whole), and the one-epoch fit's weights and time as the
// refit before the last (after 112 epochs) left them.
func benchModelFits(pages uint64, parts int) (*Model, fit) {
	m := NewModel(pages, Options{Workers: 1}) // the figures are a core's
	rng := rand.New(rand.NewPCG(1, 1))
	var dirty []uint64
	var before fit
	for e := range 128 {
		if e == 112 {
			before = *m.horizons[0]
		}
		dirty = dirty[:0]
		for p := uint64(0); p < pages; p += 1 + uint64(rng.IntN(16)) {
			if p%1024 < 256 || rng.IntN(64) == 0 {
				dirty = append(dirty, p)
			}
		}
		if parts == 1 {
			m.Observe(dirty)
			continue
		}
		ps := make([][]uint64, parts)
		for _, p := range dirty {
			k := rng.IntN(parts)
			ps[k] = append(ps[k], p)
		}
		m.ObserveParts(ps)
	}
	return m, before
}

// benchPredict times m's forecast of every page and reports the pages
// scored a second.
func benchPredict(b *testing.B, m *Model) {
	dst := make([]float32, m.Pages())
	m.Predict(dst) // fits the horizon, as the first forecast does
	b.ResetTimer()
	for b.Loop() {
		m.Predict(dst)
	}
	b.ReportMetric(float64(m.Pages())*float64(b.N)/b.Elapsed().Seconds(), "pages/s")
}

// BenchmarkPredict scores every page of a 4 GiB VM (1 Mi pages).
func BenchmarkPredict(b *testing.B) {
	const pages = 1 << 20
	m := benchModel(pages)
	benchPredict(b, m)
	b.ReportMetric(float64(m.StateBytes())/pages, "state-B/page")
}

// BenchmarkPredictHorizon8 is BenchmarkPredict at horizon 8, what a
// pre-copy round asks: the fit of its own, blended with the chain's
// forecast over 8 epochs.
func BenchmarkPredictHorizon8(b *testing.B) {
	const pages = 1 << 20
	m := benchModel(pages)
	dst := make([]float32, pages)
	m.PredictHorizon(dst, 8) // fits the horizon, as the first forecast does
	b.ResetTimer()
	for b.Loop() {
		m.PredictHorizon(dst, 8)
	}
	b.ReportMetric(float64(pages)*float64(b.N)/b.Elapsed().Seconds(), "pages/s")
}

// BenchmarkPredictCores is BenchmarkPredict on every core (a quarter of
// the pages each with four): what a forecast of every page takes where
// the machine's cores are free.
func BenchmarkPredictCores(b *testing.B) {
	const pages = 1 << 20
	m := benchModel(pages)
	m.setWorkers(runtime.GOMAXPROCS(0))
	benchPredict(b, m)
	b.ReportMetric(float64(m.o.Workers), "cores")
}

// BenchmarkObserveCores is BenchmarkObserve on every core.
func BenchmarkObserveCores(b *testing.B) {
	benchObserve(b, runtime.GOMAXPROCS(0))
}

// BenchmarkPredictParts is BenchmarkPredict with the model shown each
// epoch in 4 parts: what knowing when in the epoch a page was written
// costs in scoring and in state.
func BenchmarkPredictParts(b *testing.B) {
	const pages = 1 << 20
	m, _ := benchModelFits(pages, 4)
	benchPredict(b, m)
	b.ReportMetric(float64(m.StateBytes())/pages, "state-B/page")
}

// BenchmarkRefit refits the one-epoch forecast of a model of a 4 GiB VM
// (1 Mi pages) that has observed 128 epochs: what Observe adds every
// RefitEvery epochs per horizon forecast. Its cost follows the samples
// kept, at most 64 epochs of 6·Options.Samples rows (196608 by
// default), not the page count. Each refit starts from the weights the
// refit 16 epochs before left, as Observe's do: refitted from its own
// result, a fit converges at once and is cheaper than any Observe makes.
func BenchmarkRefit(b *testing.B) { benchRefit(b, 1) }

// BenchmarkRefitCores is BenchmarkRefit with a worker a core, as a
// model's default is: the logistic fit's passes over the samples run
// on every core.
func BenchmarkRefitCores(b *testing.B) { benchRefit(b, runtime.GOMAXPROCS(0)) }

func benchRefit(b *testing.B, workers int) {
	const pages = 1 << 20
	m, before := benchModelFits(pages, 1)
	m.setWorkers(workers)
	f := m.horizons[0]
	b.ResetTimer()
	for b.Loop() {
		f.w, f.fittedAt = before.w, before.fittedAt
		m.refit(f)
	}
	b.ReportMetric(b.Elapsed().Seconds()*1e3/float64(b.N), "ms/refit")
	b.ReportMetric(float64(m.scratch.len()), "rows")
}

// BenchmarkObserve closes epochs of a 4 GiB VM (1 Mi pages) with 1% of
// its pages dirtied each, refits included.
func BenchmarkObserve(b *testing.B) { benchObserve(b, 1) }

// benchObserve is BenchmarkObserve with workers at once.
func benchObserve(b *testing.B, workers int) {
	const pages = 1 << 20
	m := benchModel(pages)
	m.setWorkers(workers)
	rng := rand.New(rand.NewPCG(2, 2))
	epochs := make([][]uint64, 64)
	for i := range epochs {
		for p := uint64(0); p < pages; p++ {
			if rng.IntN(100) == 0 {
				epochs[i] = append(epochs[i], p)
			}
		}
	}
	b.ResetTimer()
	i := 0
	for b.Loop() {
		m.Observe(epochs[i%len(epochs)])
		i++
	}
	b.ReportMetric(float64(pages)*float64(b.N)/b.Elapsed().Seconds(), "pages/s")
}

// BenchmarkPredictReal scores every page of each real program's VM
// (testdata/real), with the model as it is at the end of the trace: the
// pages a second on real programs' memory, most of it quiet (see
// quietKey), where BenchmarkPredict's writes reach all of it.
func BenchmarkPredictReal(b *testing.B) {
	for _, name := range []string{"awk", "tar", "xz", "perl", "sqlite", "gcc", "node", "zstd", "bzip2"} {
		b.Run(name, func(b *testing.B) {
			epochs, pages := loadRealTrace(b, name)
			m := NewModel(pages, Options{Workers: 1})
			for _, e := range epochs {
				m.Observe(e.Pages)
			}
			benchPredict(b, m)
			b.ReportMetric(float64(m.quietPages())/float64(pages), "quiet-share")
		})
	}
}
