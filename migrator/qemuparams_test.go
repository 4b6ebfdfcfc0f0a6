package migrator

import (
	"testing"
	"time"

	"github.com/pagecast/pagecast/internal/testutil"
	"github.com/pagecast/pagecast/qemu"
)

// TestQEMUCapsReset: a plan with no --bandwidth lifts the cap QEMU had,
// its own default or one an earlier migration set: left out, QEMU kept
// them, and a migration asked with no cap ran at 1 MiB/s after one that
// set it (found by a review walk).
func TestQEMUCapsReset(t *testing.T) {
	testutil.RequiresQEMU(t)
	if testing.Short() {
		t.Skip("boots QEMU")
	}
	vm, err := qemu.Start(qemu.Options{MemoryBytes: 64 << 20, Accel: qemu.AccelTCG, Incoming: "defer"})
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Close()
	caps := func() (bw, post uint64) {
		var p struct {
			MaxBandwidth         uint64 `json:"max-bandwidth"`
			MaxPostcopyBandwidth uint64 `json:"max-postcopy-bandwidth"`
		}
		if err := clientRun(vm.Monitor, "query-migrate-parameters", nil, &p); err != nil {
			t.Fatal(err)
		}
		return p.MaxBandwidth, p.MaxPostcopyBandwidth
	}
	if _, err := SetupQEMU(vm.Monitor, nil, Params{Mode: ModePrecopy, DowntimeLimit: 300 * time.Millisecond, MaxBandwidth: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	if bw, _ := caps(); bw != 1<<20 {
		t.Fatalf("max-bandwidth after a plan at 1 MiB/s: %d", bw)
	}
	if _, err := SetupQEMU(vm.Monitor, nil, Params{Mode: ModePrecopy, DowntimeLimit: 300 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	if bw, post := caps(); bw != 0 || post != 0 {
		t.Errorf("after a plan with no cap, QEMU's max-bandwidth is %d and max-postcopy-bandwidth %d bytes/s, want 0 (none)", bw, post)
	}
}
