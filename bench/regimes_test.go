package bench

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/pagecast/pagecast/migrator"
	"github.com/pagecast/pagecast/simulate"
)

// regimeTraces are the real programs' traces of predictor/testdata/real
// and the epoch each program starts at, after the guest's boot.
var regimeTraces = []struct {
	name  string
	start uint64
}{{"awk", 224}, {"tar", 224}, {"bzip2", 100}, {"gcc", 100}, {"node", 100}, {"perl", 100}, {"sqlite", 100}, {"xz", 100}, {"zstd", 100}}

// quarterLinks is how many links, evenly from 1/3.5 to 1/4.5 of the dirty
// rate, BenchmarkPredictiveRegimes sums over: which round of a migration
// meets a quiet phase of the program decides much of its downtime, and
// with five links one of them could decide the sum.
const quarterLinks = 21

// BenchmarkPredictiveRegimes makes README.md's table "Where predictive
// deferral pays" (issue 14): on each real program's trace, predictive
// against pre-copy with the link at the workload's dirty rate
// (simulate.DirtyRate from the program's start) and summed over 21 links
// from 1/3.5 to 1/4.5 of it, where pre-copy may not converge (how many of
// the 21 ran into its round cap), predictive+postcopy over the same
// links, and predictive+tsmc at 1 Gbit/s. It takes some 4 minutes on two cores
// (4m15s on 2026-12-05).
func BenchmarkPredictiveRegimes(b *testing.B) {
	for _, tc := range regimeTraces {
		b.Run(tc.name, func(b *testing.B) {
			w, err := simulate.ReadTrace(filepath.Join("..", "predictor", "testdata", "real", tc.name+".pct"))
			if err != nil {
				b.Fatal(err)
			}
			rate := simulate.DirtyRate(w, tc.start)
			run := func(bw uint64, mode string) migrator.Info {
				r := simulate.Run(context.Background(), simulate.Options{Workload: w, Bandwidth: bw, Start: tc.start}, mode)
				if r.Err != nil {
					b.Fatalf("%s at %d B/s: %v", mode, bw, r.Err)
				}
				return r.Info
			}
			for range b.N {
				pre, pred := run(uint64(rate), "precopy"), run(uint64(rate), "predictive")
				b.ReportMetric(float64(pred.RAM.Transferred)/float64(pre.RAM.Transferred), "rate-bytes-x-precopy")
				b.ReportMetric(float64(pred.Downtime)/float64(pre.Downtime), "rate-downtime-x-precopy")
				// No scheme that sends each page at least once sends fewer
				// bytes than pre-copy's first pass: the floor of the ratio.
				b.ReportMetric(float64(pre.Pagecast.RoundBytes[0])/float64(pre.RAM.Transferred), "rate-floor-x-precopy")
				// The links are independent: simulated side by side, summed
				// in order.
				links := make([][3]migrator.Info, quarterLinks) // precopy, predictive, predictive+postcopy
				errs := make([]error, quarterLinks)
				var wg sync.WaitGroup
				sem := make(chan struct{}, runtime.GOMAXPROCS(0))
				for k := range links {
					wg.Add(1)
					go func() {
						defer wg.Done()
						sem <- struct{}{}
						defer func() { <-sem }()
						bw := uint64(rate / (3.5 + float64(k)/(quarterLinks-1)))
						for j, mode := range []string{"precopy", "predictive", "predictive+postcopy"} {
							r := simulate.Run(context.Background(), simulate.Options{Workload: w, Bandwidth: bw, Start: tc.start}, mode)
							if r.Err != nil {
								errs[k] = fmt.Errorf("%s at %d B/s: %w", mode, bw, r.Err)
								return
							}
							links[k][j] = r.Info
						}
					}()
				}
				wg.Wait()
				if err := errors.Join(errs...); err != nil {
					b.Fatal(err)
				}
				var preBytes, predBytes, preFirst, preDown, predDown, postBytes, postDown float64
				capped := 0
				for _, l := range links {
					pre, pred, post := l[0], l[1], l[2]
					if strings.Contains(pre.Pagecast.StopReason, "round cap") {
						capped++
					}
					preBytes += float64(pre.RAM.Transferred)
					preFirst += float64(pre.Pagecast.RoundBytes[0])
					predBytes += float64(pred.RAM.Transferred)
					preDown += float64(pre.Downtime)
					predDown += float64(pred.Downtime)
					postBytes += float64(post.RAM.Transferred)
					postDown += float64(post.Downtime)
				}
				b.ReportMetric(float64(capped), "quarter-precopy-capped-of-21")
				b.ReportMetric(predBytes/preBytes, "quarter-bytes-x-precopy")
				b.ReportMetric(predDown/preDown, "quarter-downtime-x-precopy")
				b.ReportMetric(preFirst/preBytes, "quarter-floor-x-precopy")
				b.ReportMetric(postBytes/preBytes, "quarter-postcopy-bytes-x-precopy")
				b.ReportMetric(postDown/preDown, "quarter-postcopy-downtime-x-precopy")
				hybrid := run(1e9/8, "predictive+tsmc")
				b.ReportMetric(float64(hybrid.RAM.Transferred)/float64(w.Pages()*migrator.PageSize), "hybrid-1Gbit-memory-share")
				b.ReportMetric(float64(hybrid.Downtime), "hybrid-1Gbit-downtime-ms") // whole ms, as query-migrate's (0.003 s read as one figure: walk 162)
				b.ReportMetric(float64(uint64(rate)), "dirty-B/s")                   // the link run at the dirty rate, to the byte (walk 142 read 11616864 for the table's 11616863)
			}
			b.ReportMetric(0, "ns/op")
		})
	}
}
