package qemuguest

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// TestSweepThrottlesProbes: the sweep removes the throttle cgroups and
// canThrottle's probes of processes that are gone, and keeps those of
// live ones (a probe a killed pagecast left was never removed; review 64).
func TestSweepThrottlesProbes(t *testing.T) {
	defer func(root string) { CPUCgroupRoot = root }(CPUCgroupRoot)
	CPUCgroupRoot = t.TempDir()
	const gone = 2147483647 // no such process
	live := os.Getpid()
	names := map[string]bool{ // kept
		fmt.Sprintf("pagecast-%d", gone):                    false,
		fmt.Sprintf("pagecast-probe-%d-123", gone):          false,
		fmt.Sprintf("user.slice/pagecast-probe-%d-9", gone): false,
		fmt.Sprintf("pagecast-%d", live):                    true,
		fmt.Sprintf("pagecast-probe-%d-456", live):          true,
		"pagecast-not-a-pid":                                true,
	}
	for n := range names {
		if err := os.MkdirAll(filepath.Join(CPUCgroupRoot, n), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	sweepThrottles()
	for n, kept := range names {
		_, err := os.Stat(filepath.Join(CPUCgroupRoot, n))
		if (err == nil) != kept {
			t.Errorf("%s: kept %v, want %v", n, err == nil, kept)
		}
	}
}
