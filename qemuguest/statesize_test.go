package qemuguest

import (
	"encoding/json"
	"net"
	"strings"
	"sync"
	"testing"
)

// oversizeMon plays a paused QEMU whose device state (with shared RAM left
// out) is larger than MaxState, as QEMU's does with large non-shared RAM
// blocks (a qxl's 64 MiB vram, say): its migration writes until the reader
// closes the socket, then fails, as QEMU's does on a broken pipe.
type oversizeMon struct {
	mu     sync.Mutex
	status string
	desc   string
	wg     sync.WaitGroup
}

func (m *oversizeMon) Run(cmd []byte) ([]byte, error) {
	var req struct {
		Execute   string         `json:"execute"`
		Arguments map[string]any `json:"arguments"`
	}
	json.Unmarshal(cmd, &req)
	m.mu.Lock()
	defer m.mu.Unlock()
	switch req.Execute {
	case "query-status":
		return []byte(`{"return":{"status":"paused"}}`), nil
	case "migrate":
		uri := req.Arguments["uri"].(string)
		m.status = "active"
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			c, err := net.Dial("unix", strings.TrimPrefix(uri, "unix:"))
			if err == nil {
				buf := make([]byte, 1<<20)
				for err == nil {
					_, err = c.Write(buf)
				}
				c.Close()
			}
			m.mu.Lock()
			m.status, m.desc = "failed", "Unable to write to socket: "+err.Error()
			m.mu.Unlock()
		}()
		return []byte(`{"return":{}}`), nil
	case "query-migrate":
		b, _ := json.Marshal(map[string]any{"return": map[string]any{"status": m.status, "error-desc": m.desc}})
		return b, nil
	}
	return []byte(`{"return":{}}`), nil
}

// TestSaveStateTooLarge: the reader's own diagnosis of an oversize stream
// ("longer than 64 MiB (is guest RAM shared?)") is said first, not only
// QEMU's "migration failed: broken pipe", which its closing caused (found
// by a review walk).
func TestSaveStateTooLarge(t *testing.T) {
	m := &oversizeMon{}
	_, err := saveState(m, 1)
	m.wg.Wait()
	t.Logf("saveState: %v", err)
	if err == nil || !strings.Contains(err.Error(), "longer than") {
		t.Errorf("want the error to say the stream is longer than %d bytes", MaxState)
	}
}
