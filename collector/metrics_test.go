package collector_test

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pagecast/pagecast/collector"
	"github.com/pagecast/pagecast/vmm"
)

// TestMetrics scrapes a profiling collector: every metric is present with
// data, and promtool's linter accepts the exposition.
func TestMetrics(t *testing.T) {
	_, sock := startVM(t, "hotset", vmm.DirtyRing)
	c, err := collector.New(collector.Config{QMP: sock, Epoch: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	time.Sleep(100 * time.Millisecond)
	if _, err := c.CloseEpoch(); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c.Metrics())
	for name, min := range map[string]float64{
		"pagecast_dirty_pages_total":      1,
		"pagecast_dirty_bytes_per_second": 1,
		"pagecast_profiler_epochs_total":  1,
		"pagecast_profiler_events_total":  1,
		"pagecast_guest_memory_bytes":     64 << 20,
	} {
		got, err := testutil.GatherAndCount(reg, name)
		if err != nil || got != 1 {
			t.Fatalf("%s: %d series, %v", name, got, err)
		}
		v := gatherValue(t, reg, name)
		if v < min {
			t.Errorf("%s = %v, want at least %v", name, v, min)
		}
	}
	// The latest epoch's measured length: 100 ms slept, and the close's
	// grace.
	if v := gatherValue(t, reg, "pagecast_profiler_last_epoch_seconds"); v < 0.1 || v > 1 {
		t.Errorf("pagecast_profiler_last_epoch_seconds = %v, want about 0.1", v)
	}
	if n, _ := testutil.GatherAndCount(reg, "pagecast_profiler_events_dropped_total"); n != 4 {
		t.Errorf("dropped events by reason: %d series, want 4", n)
	}

	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not installed (Debian package prometheus); metrics checked above")
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var text bytes.Buffer
	for _, mf := range mfs {
		if err := writeText(&text, mf); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = &text
	out, err := cmd.CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "" {
		t.Fatalf("promtool check metrics: %v\n%s\n---\n%s", err, out, text.String())
	}
}
