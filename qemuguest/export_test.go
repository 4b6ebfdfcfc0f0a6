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

// AbandonThrottle lets go of s's throttle as a killed process does: its
// lock released, its threads left in the cgroup at their quota.
func AbandonThrottle(s *Source) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.throttle.lock.Close()
	s.throttle = cpuThrottle{}
}
