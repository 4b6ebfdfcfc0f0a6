package qemu

import (
	"encoding/json"
	"fmt"
)

// Runner sends raw QMP commands: a *qmpclient.Client (VM.Monitor)
// satisfies it. Commands are raw JSON, since go-qemu's generated API stops
// at QEMU 2.11.
type Runner interface {
	Run(cmd []byte) ([]byte, error)
}

// QMP sends the command cmd with args (nil for none) and decodes the
// reply's "return" into out (nil to discard it).
func QMP(mon Runner, cmd string, args, out any) error {
	req := map[string]any{"execute": cmd}
	if args != nil {
		req["arguments"] = args
	}
	b, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("qmp %s: %w", cmd, err)
	}
	raw, err := mon.Run(b)
	if err != nil {
		return fmt.Errorf("qmp %s: %w", cmd, err)
	}
	if out == nil {
		return nil
	}
	var reply struct {
		Return json.RawMessage `json:"return"`
	}
	if err := json.Unmarshal(raw, &reply); err != nil {
		return fmt.Errorf("qmp %s reply: %w", cmd, err)
	}
	if err := json.Unmarshal(reply.Return, out); err != nil {
		return fmt.Errorf("qmp %s reply: %w", cmd, err)
	}
	return nil
}

// RunState is QEMU's run state (query-status): "running", "paused",
// "inmigrate", "postmigrate", …
func RunState(mon Runner) (string, error) {
	var st struct {
		Status string `json:"status"`
	}
	if err := QMP(mon, "query-status", nil, &st); err != nil {
		return "", err
	}
	return st.Status, nil
}

// MigrationCapabilities is QEMU's query-migrate-capabilities: each
// capability it knows, and whether it is on.
func MigrationCapabilities(mon Runner) (map[string]bool, error) {
	var caps []struct {
		Capability string `json:"capability"`
		State      bool   `json:"state"`
	}
	if err := QMP(mon, "query-migrate-capabilities", nil, &caps); err != nil {
		return nil, err
	}
	out := make(map[string]bool, len(caps))
	for _, c := range caps {
		out[c.Capability] = c.State
	}
	return out, nil
}
