package qemuguest

import (
	"os"
	"strings"
	"testing"

	"github.com/pagecast/pagecast/qemu"
)

// A migration completed but unconfirmed leaves the switch-over mark, as a
// migrate killed in its switch-over does, saying so: a vm run of the
// source then waits for a second signal (walk 123: it stopped QEMU, the
// only copy of the guest left, at the first).
func TestLeaveUnconfirmed(t *testing.T) {
	pid := 1<<22 + os.Getpid()%1000 // past any pid this host gives
	if _, err := qemu.OpenLock("switchover", pid); err != nil {
		t.Skip("no lock directory here:", err)
	}
	t.Cleanup(func() { clearSwitchover(pid) })
	clearSwitchover(pid)
	if _, ok := AbandonedSwitchover(pid); ok {
		t.Fatal("a mark before any was left")
	}
	s := &Source{vm: vm{pid: pid}}
	s.LeaveUnconfirmed()
	if _, ok := AbandonedSwitchover(pid); ok {
		t.Fatal("LeaveUnconfirmed left a mark of a guest never paused for a switch-over")
	}
	s.switchover = true // as SaveState leaves it
	s.LeaveUnconfirmed()
	who, ok := AbandonedSwitchover(pid)
	if !ok || !strings.HasSuffix(who, Unconfirmed) {
		t.Fatalf("AbandonedSwitchover after LeaveUnconfirmed: %q, %v; want a process, then %q", who, ok, Unconfirmed)
	}
	if s.switchover {
		t.Error("the Source still holds the mark: its Close would remove it")
	}
	ForgetSwitchover(pid) // the guest runs here again
	if _, ok := AbandonedSwitchover(pid); ok {
		t.Error("the mark outlived ForgetSwitchover")
	}
}
