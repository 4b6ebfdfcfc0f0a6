package qemu

import (
	"os"
	"testing"

	"github.com/pagecast/pagecast/guest"
)

// TestStartFailsClean: a Start refused before QEMU runs (here a QMP path
// with ',', which QEMU's options cannot hold) leaves no work directory
// behind. (It stayed, locked, for the life of the process, with a RAM file
// half written where writing it failed; found by a review walk.)
func TestStartFailsClean(t *testing.T) {
	base := t.TempDir()
	scratchBase = func() string { return base }
	defer func() { scratchBase = defaultScratchBase }()
	if _, err := Start(Options{Binary: "/bin/false", MemoryBytes: guest.MinMemory, Accel: AccelTCG, QMP: "/tmp/a,b.sock"}); err == nil {
		t.Fatal("Start with a QMP path holding ',' succeeded")
	}
	if ents, _ := os.ReadDir(base); len(ents) != 0 {
		t.Errorf("a failed Start left %d work directories: %v", len(ents), ents[0].Name())
	}
}

var defaultScratchBase = scratchBase
