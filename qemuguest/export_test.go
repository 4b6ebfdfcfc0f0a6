package qemuguest

import "github.com/pagecast/pagecast/qemu"

// HMP runs a human monitor command on the Source's QEMU, for tests.
func HMP(s *Source, cmd string) (string, error) {
	var out string
	err := qemu.QMP(s.mon, "human-monitor-command", map[string]any{"command-line": cmd}, &out)
	return out, err
}

// ReclaimThrottle is reclaimThrottle, which New runs on a QEMU it did not
// start.
var ReclaimThrottle = reclaimThrottle
