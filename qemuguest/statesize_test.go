package qemuguest

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/pagecast/pagecast/qemu"
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

// capsMon plays a paused QEMU for saveState whose owner had turned on
// migration capabilities of their own: it keeps them as set, and its
// migration writes a short stream and completes.
type capsMon struct {
	mu   sync.Mutex
	caps map[string]bool
}

func (m *capsMon) Run(cmd []byte) ([]byte, error) {
	var req struct {
		Execute   string `json:"execute"`
		Arguments struct {
			URI  string `json:"uri"`
			Caps []struct {
				Capability string `json:"capability"`
				State      bool   `json:"state"`
			} `json:"capabilities"`
		} `json:"arguments"`
	}
	json.Unmarshal(cmd, &req)
	m.mu.Lock()
	defer m.mu.Unlock()
	switch req.Execute {
	case "query-status":
		return []byte(`{"return":{"status":"paused"}}`), nil
	case "query-migrate-capabilities":
		var out []map[string]any
		for c, on := range m.caps {
			out = append(out, map[string]any{"capability": c, "state": on})
		}
		return json.Marshal(map[string]any{"return": out})
	case "migrate-set-capabilities":
		for _, c := range req.Arguments.Caps {
			m.caps[c.Capability] = c.State
		}
	case "migrate":
		c, err := net.Dial("unix", strings.TrimPrefix(req.Arguments.URI, "unix:"))
		if err != nil {
			return nil, err
		}
		c.Write([]byte("QEVM state"))
		c.Close()
	case "query-migrate":
		return []byte(`{"return":{"status":"completed"}}`), nil
	}
	return []byte(`{"return":{}}`), nil
}

// TestSaveStateKeepsCapabilities: saving the device state (the engine's
// switch-over) leaves the source QEMU's migration capabilities as its
// owner had them; xbzrle, post-copy, multifd and auto-converge stayed off
// for good, a failed migration resuming the guest there (found by a review
// walk).
func TestSaveStateKeepsCapabilities(t *testing.T) {
	m := &capsMon{caps: map[string]bool{"xbzrle": true, "multifd": true, "auto-converge": true, "postcopy-ram": false, "x-ignore-shared": false, "events": true}}
	before := fmt.Sprint(m.caps)
	if _, err := saveState(m, 1); err != nil {
		t.Fatal(err)
	}
	if after := fmt.Sprint(m.caps); after != before {
		t.Errorf("migration capabilities before the state was saved %s, after %s", before, after)
	}
}

// TestIgnoreSharedAfterKilled: a pagecast process killed between setting
// x-ignore-shared and clearing it leaves the capability on; the next one
// restores what the owner had (off), not what it found: it restored "on",
// and a later QEMU migration out of the QEMU failed ("Capability
// x-ignore-shared is off, but received capability is on"; found by a walk).
func TestIgnoreSharedAfterKilled(t *testing.T) {
	pid := os.Getpid()
	marker := qemu.LockPath("ignore-shared", pid)
	t.Cleanup(func() { os.Remove(marker) })
	m := &capsMon{caps: map[string]bool{"xbzrle": true, "postcopy-ram": false, "x-ignore-shared": false}}
	if _, err := setIgnoreShared(m, pid); err != nil { // then killed
		t.Fatal(err)
	}
	if _, err := os.Stat(marker); err != nil {
		t.Skipf("no lock directory to keep the capabilities in: %v", err)
	}
	if !m.caps["x-ignore-shared"] {
		t.Fatal("x-ignore-shared not set")
	}
	if _, err := saveState(m, pid); err != nil {
		t.Fatal(err)
	}
	if m.caps["x-ignore-shared"] || !m.caps["xbzrle"] {
		t.Errorf("capabilities after a second pagecast: %v, want x-ignore-shared off and xbzrle on, as the owner had them", m.caps)
	}
	if _, err := os.Stat(marker); !os.IsNotExist(err) {
		t.Errorf("the kept capabilities are still there: %v", err)
	}
}
