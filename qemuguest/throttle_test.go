package qemuguest

import (
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestCFSPeriod(t *testing.T) {
	for _, tt := range []struct {
		pct    int
		period time.Duration
	}{{1, 20 * time.Millisecond}, {50, 20 * time.Millisecond}, {95, 20 * time.Millisecond}, {96, 25 * time.Millisecond}, {99, 100 * time.Millisecond}} {
		p := cfsPeriod(tt.pct)
		quota := cfsQuota(p, tt.pct)
		if p != tt.period || quota < time.Millisecond || p > time.Second {
			t.Errorf("cfsPeriod(%d) = %s (quota %s), want %s", tt.pct, p, quota, tt.period)
		}
	}
	// Every throttle the policies may ask for is one the kernel takes: a
	// quota of at least 1 ms in whole microseconds, a period of at most
	// 1 s, and the share asked for within a hundredth (97% gave a
	// quota of 999 µs, refused; found by a new-user walk).
	for pct := 1; pct <= 99; pct++ {
		p := cfsPeriod(pct)
		quota := cfsQuota(p, pct)
		share := 1 - float64(quota)/float64(p)
		if quota.Microseconds() < 1000 || p > time.Second || p%time.Microsecond != 0 || quota%time.Microsecond != 0 || math.Abs(share-float64(pct)/100) > 0.01 {
			t.Errorf("throttle %d%%: period %v, quota %v (%.4f of it withheld)", pct, p, quota, share)
		}
	}
}

// TestThrottleQuotaPerThread: each vCPU thread's cgroup gets one CPU's
// share: one quota of that share for them all gave a 2-vCPU guest
// throttled 93% 3.5% of a CPU a vCPU (walk 82).
func TestThrottleQuotaPerThread(t *testing.T) {
	dir := t.TempDir()
	c := &cpuThrottle{dir: dir, threads: []string{threadCgroup(10), threadCgroup(11)}}
	for _, th := range c.threads {
		if err := os.Mkdir(filepath.Join(dir, th), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.set(1, []int{10, 11}, 50); err != nil {
		t.Fatal(err)
	}
	for _, th := range c.threads {
		if period, quota := readInt(t, filepath.Join(dir, th), "cpu.cfs_period_us"), readInt(t, filepath.Join(dir, th), "cpu.cfs_quota_us"); period != 20000 || quota != 10000 {
			t.Errorf("%s at 50%%: period %d µs, quota %d µs, want 20000 and 10000", th, period, quota)
		}
	}
}

func readInt(t *testing.T, dir, file string) int64 {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, file))
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
