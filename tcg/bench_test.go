package tcg_test

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pagecast/pagecast/qemu"
)

// BenchmarkPluginOverhead measures how much the plugin slows the guest:
// the guest's write rate (from its own progress counter) with the plugin
// over without, for word and whole-page writes. QEMUs with and without the
// plugin run one at a time, alternating (without, with, with, without, …),
// each measured alone for a window after its guest has started. The host
// is shared, so besides writes per second of wall time the benchmark
// reports writes per second of the vCPU thread's CPU time (from
// /proc/TID/schedstat), which other load skews less: cpu-ratio is that,
// wall-ratio the wall time's.
func BenchmarkPluginOverhead(b *testing.B) {
	const (
		window = time.Second
		runs   = 4 // per side
	)
	for _, c := range []struct{ name, workload string }{
		{"word", "hotset"},
		{"page", "hotset:write=page"},
	} {
		b.Run(c.name, func(b *testing.B) {
			var writes [2]uint64
			var took, ran [2]time.Duration
			var stores uint64
			for range b.N {
				for r := range 2 * runs {
					side := (r + r/2) % 2 // 0 1 1 0 0 1 1 0
					vm, area := startGuest(b, c.workload, side == 1)
					tid := vcpuThread(b, vm)
					time.Sleep(window / 4) // past the first translations
					p0, t0, c0 := progress(b, vm), time.Now(), cpuTime(b, tid)
					time.Sleep(window)
					p1, t1, c1 := progress(b, vm), time.Now(), cpuTime(b, tid)
					writes[side] += p1 - p0
					took[side] += t1.Sub(t0)
					ran[side] += c1 - c0
					if area != nil {
						stores += area.Stats().Writes
					}
					vm.Close()
				}
			}
			without := float64(writes[0]) / ran[0].Seconds()
			with := float64(writes[1]) / ran[1].Seconds()
			wallWithout := float64(writes[0]) / took[0].Seconds()
			wallWith := float64(writes[1]) / took[1].Seconds()
			b.ReportMetric(without, "writes/cpu-s-without")
			b.ReportMetric(with, "writes/cpu-s-with")
			b.ReportMetric(with/without, "cpu-ratio")
			b.ReportMetric(wallWith/wallWithout, "wall-ratio")
			b.ReportMetric(0, "ns/op")
			b.Logf("%s: per vCPU second %.0f writes without the plugin, %.0f with: ratio %.3f; "+
				"per wall second %.0f and %.0f (vCPU busy %.0f%% and %.0f%%); plugin saw %d stores",
				c.workload, without, with, with/without, wallWithout, wallWith,
				100*ran[0].Seconds()/took[0].Seconds(), 100*ran[1].Seconds()/took[1].Seconds(), stores)
		})
	}
}

// qmp runs a QMP command without arguments.
func qmp(tb testing.TB, vm *qemu.VM, cmd string) {
	tb.Helper()
	if _, err := vm.Monitor.Run([]byte(fmt.Sprintf(`{"execute":%q}`, cmd))); err != nil {
		tb.Fatalf("qmp %s: %v", cmd, err)
	}
}

// vcpuThread is the host thread id of the VM's first vCPU.
func vcpuThread(tb testing.TB, vm *qemu.VM) int {
	tb.Helper()
	raw, err := vm.Monitor.Run([]byte(`{"execute":"query-cpus-fast"}`))
	if err != nil {
		tb.Fatalf("query-cpus-fast: %v", err)
	}
	var reply struct {
		Return []struct {
			ThreadID int `json:"thread-id"`
		} `json:"return"`
	}
	if err := json.Unmarshal(raw, &reply); err != nil || len(reply.Return) == 0 {
		tb.Fatalf("query-cpus-fast: %s: %v", raw, err)
	}
	return reply.Return[0].ThreadID
}

// cpuTime is the CPU time thread tid has run, from /proc/TID/schedstat.
func cpuTime(tb testing.TB, tid int) time.Duration {
	tb.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/schedstat", tid))
	if err != nil {
		tb.Fatal(err)
	}
	ns, err := strconv.ParseInt(strings.Fields(string(raw))[0], 10, 64)
	if err != nil {
		tb.Fatalf("schedstat of %d: %q: %v", tid, raw, err)
	}
	return time.Duration(ns)
}

// BenchmarkReadEpoch scans a buffer of 1 Mi pages (4 GiB of guest-physical
// addresses) with 1% of the pages marked, as a collector does each epoch.
func BenchmarkReadEpoch(b *testing.B) {
	for _, marked := range []int{0, 100, 10000} {
		b.Run(fmt.Sprintf("marked=%d", marked), func(b *testing.B) {
			area := newArea(b, 1<<20, 0)
			var dst []uint64
			buf := areaBuffer(b, area, 0)
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				for i := range marked {
					buf[i*(len(buf)/max(marked, 1))] = 1
				}
				b.StartTimer()
				dst = area.ReadEpoch(0, dst[:0])
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1e3, "µs/epoch")
			b.ReportMetric(float64(1<<20)*float64(b.N)/b.Elapsed().Seconds()/1e9, "Gpages/s")
		})
	}
}
