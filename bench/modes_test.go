package bench

import (
	"testing"

	"github.com/pagecast/pagecast/internal/testutil"
	"github.com/pagecast/pagecast/migrator"
)

// Mode scenarios. In the converging one the writable working set fits what
// the link moves in the downtime limit; in the other the guest dirties its
// hot set faster than the link can carry it, so plain pre-copy only ends
// at its round cap.
var modeScenarios = []struct {
	name      string
	workload  string
	bandwidth uint64
}{
	{"converging", "hotset:hot=2048,p=0.99", 32 << 20},
	{"non-converging", "hotset:hot=2048,p=0.9", 16 << 20},
}

var benchModes = []string{
	migrator.ModePrecopy, migrator.ModePredictive, migrator.ModeThrottle, migrator.ModeTSMC,
	migrator.MECOM, migrator.ModePredictive + "+" + migrator.MECOM, migrator.ModeThrottle + "+" + migrator.MECOM,
}

// modeRounds is the round cap in these runs: Xen's 30 makes a
// non-converging pre-copy take minutes at these rates without saying more.
const modeRounds = 10

// BenchmarkModes migrates the same guest (64 MiB, default content mix) once
// in each mode, in one run, under the same link cap and downtime limit, and
// reports total time, downtime, bytes on the wire, rounds and the guest's
// pace during the migration (its write rate over its rate just before), and
// each against plain pre-copy.
func BenchmarkModes(b *testing.B) {
	for _, sc := range modeScenarios {
		var pre migrationResult
		for _, mode := range benchModes {
			b.Run(sc.name+"/"+mode, func(b *testing.B) {
				testutil.RequiresKVM(b)
				var r migrationResult
				for range b.N {
					r = migrateWith(b, sc.workload, migrator.Config{Mode: mode, MaxBandwidth: sc.bandwidth,
						DowntimeLimit: migrateDowntime, MaxRounds: modeRounds})
				}
				if mode == migrator.ModePrecopy {
					pre = r
				}
				r.reportCore(b)
				b.ReportMetric(r.pace, "guest-pace")
				if pre.bytes > 0 {
					b.ReportMetric(float64(r.bytes)/float64(pre.bytes), "bytes/precopy")
					b.ReportMetric(ratio(r.total, pre.total), "time/precopy")
					b.ReportMetric(ratio(r.downtime, pre.downtime), "downtime/precopy")
				}
				b.ReportMetric(0, "ns/op")
			})
		}
	}
}
