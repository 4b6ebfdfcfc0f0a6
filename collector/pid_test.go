package collector_test

import (
	"os"
	"strings"
	"testing"

	"github.com/pagecast/pagecast/collector"
)

// TestPIDNotAVM: profiling by process id refuses a process that holds no
// KVM VM (it recorded nothing and exited 0), and one that does not exist.
func TestPIDNotAVM(t *testing.T) {
	_, err := collector.New(collector.Config{PID: os.Getpid(), MemoryBytes: 16 << 20})
	if err == nil || !strings.Contains(err.Error(), "holds no KVM VM") {
		t.Errorf("profiling the test itself: %v, want it refused", err)
	}
	_, err = collector.New(collector.Config{PID: 1 << 30, MemoryBytes: 16 << 20}) // past any pid_max
	if err == nil || !strings.Contains(err.Error(), "no process 1073741824") {
		t.Errorf("profiling no process: %v", err)
	}
}
