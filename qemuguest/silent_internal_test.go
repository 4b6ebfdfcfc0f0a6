package qemuguest

import (
	"bufio"
	"encoding/json"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestAttachSilentMonitor: Dial and DialDest give up a monitor that
// greeted, answered qmp_capabilities and then fell silent (a QEMU stopped
// with SIGSTOP, or stuck) within attachAnswerWait, saying so (walk 134:
// pagecast receive waited on query-cpus-fast for good).
func TestAttachSilentMonitor(t *testing.T) {
	defer func(w time.Duration) { attachAnswerWait = w }(attachAnswerWait)
	attachAnswerWait = 300 * time.Millisecond
	sock := filepath.Join(t.TempDir(), "qmp.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.Write([]byte(`{"QMP":{"version":{"qemu":{"major":7,"minor":2,"micro":0},"package":""},"capabilities":[]}}` + "\n"))
				dec := json.NewDecoder(bufio.NewReader(c))
				var m struct {
					Execute string `json:"execute"`
				}
				if dec.Decode(&m) != nil || m.Execute != "qmp_capabilities" {
					return
				}
				c.Write([]byte(`{"return":{}}` + "\n"))
				for dec.Decode(&m) == nil { // silent from here on
				}
			}()
		}
	}()
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
