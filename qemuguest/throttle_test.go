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

// TestThrottleQuotaPerThread: the group's quota is a CPU's share for each
// vCPU thread, a thread named twice counted once: it was one CPU's share
// for all, each of a 2-vCPU guest's threads throttled to 3.5% where 7% was
// asked for (walk 82).
func TestThrottleQuotaPerThread(t *testing.T) {
	for _, tc := range []struct {
		tids  []int
		quota int64
	}{{[]int{10}, 10000}, {[]int{10, 11}, 20000}, {[]int{10, 11, 12, 13}, 40000}, {[]int{10, 10}, 10000}} {
		dir := t.TempDir()
		c := &cpuThrottle{dir: dir}
		if err := c.set(1, tc.tids, 50); err != nil {
			t.Fatal(err)
		}
		period, quota := readInt(t, dir, "cpu.cfs_period_us"), readInt(t, dir, "cpu.cfs_quota_us")
		if period != 20000 || quota != tc.quota {
			t.Errorf("threads %v at 50%%: period %d µs, quota %d µs, want 20000 and %d", tc.tids, period, quota, tc.quota)
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
