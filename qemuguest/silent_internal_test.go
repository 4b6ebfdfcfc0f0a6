package qemuguest

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pagecast/pagecast/internal/testutil"
)

// TestAttachSilentMonitor: Dial and DialDest give up a monitor that
// greeted, answered qmp_capabilities and then fell silent (a QEMU stopped
// with SIGSTOP, or stuck) within attachAnswerWait, saying so (walk 134:
// pagecast receive waited on query-cpus-fast for good).
func TestAttachSilentMonitor(t *testing.T) {
	defer func(w time.Duration) { attachAnswerWait = w }(attachAnswerWait)
	attachAnswerWait = 300 * time.Millisecond
	sock := filepath.Join(t.TempDir(), "qmp.sock")
	testutil.ServeFakeQMP(t, sock, testutil.SilentAfterCapabilities)
	for _, dial := range []struct {
		name string
		f    func() error
	}{
		{"Dial", func() error { _, err := Dial(sock); return err }},
		{"DialDest", func() error { _, err := DialDest(sock); return err }},
	} {
		done := make(chan error, 1)
		start := time.Now()
		go func() { done <- dial.f() }()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), "did not answer") {
				t.Errorf("%s on a silent monitor: %v, want it to say the monitor did not answer", dial.name, err)
			}
			t.Logf("%s gave up in %v: %v", dial.name, time.Since(start).Round(time.Millisecond), err)
		case <-time.After(20 * time.Second):
			t.Fatalf("%s still waiting on a silent monitor after 20 s", dial.name)
		}
	}
}
