package qemuguest_test

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/pagecast/pagecast/qemu"
	"github.com/pagecast/pagecast/qemuguest"
)

// cpusOf answers query-cpus-fast with one vCPU, thread tid.
type cpusOf int

func (c cpusOf) Run(cmd []byte) ([]byte, error) {
	if !strings.Contains(string(cmd), "query-cpus-fast") {
		return []byte(`{"error":{"class":"CommandNotFound","desc":"not here"}}`), nil
	}
	return fmt.Appendf(nil, `{"return":[{"cpu-index":0,"thread-id":%d,"qom-type":"qemu64-x86_64-cpu"}]}`, int(c)), nil
}

// TestHoldMigration: a migration marked on a QEMU (here a sleep standing
// in for it) refuses a second one, naming the first, until released; a
// QEMU that cannot be found from here is not marked, and not refused.
func TestHoldMigration(t *testing.T) {
	defer func(d string) { qemu.LockDir = d }(qemu.LockDir)
	qemu.LockDir = t.TempDir()
	stand := exec.Command("sleep", "60")
	if err := stand.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { stand.Process.Kill(); stand.Wait() }()
	mon := cpusOf(stand.Process.Pid)

	release, err := qemuguest.HoldMigration(mon)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(qemu.LockPath("migrate", stand.Process.Pid)); err != nil {
		t.Fatalf("no lock file: %v", err)
	}
	_, err = qemuguest.HoldMigration(mon)
	if err == nil || !strings.Contains(err.Error(), "is migrating this VM already") || !strings.Contains(err.Error(), fmt.Sprintf("this process (pid %d)", os.Getpid())) {
		t.Fatalf("a second migration of the guest: %v", err)
	}
	release()
	again, err := qemuguest.HoldMigration(mon)
	if err != nil {
		t.Fatalf("after the first released: %v", err)
	}
	again()

	// A thread that is not here: nothing marked, nothing refused.
	gone, err := qemuguest.HoldMigration(cpusOf(1 << 30))
	if err != nil {
		t.Fatalf("a QEMU not found from here: %v", err)
	}
	gone()
}
