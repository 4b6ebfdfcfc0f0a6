package tcg

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pagecast/pagecast/internal/testutil"
)

func TestProbe(t *testing.T) {
	testutil.RequiresQEMU(t)
	if err := Probe(""); err != nil {
		t.Fatalf("this machine's QEMU does not load the plugin: %v", err)
	}
	// A "QEMU" that refuses the plugin as a newer QEMU would.
	fake := filepath.Join(t.TempDir(), "qemu-system-x86_64")
	script := "#!/bin/sh\necho 'qemu-system-x86_64: -plugin x.so: Could not load plugin x.so: plugin requires API version 1, but this QEMU supports only a minimum version of 2' >&2\nexit 1\n"
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	err := Probe(fake)
	if err == nil || !strings.Contains(err.Error(), "this QEMU loads version 2 and newer only") {
		t.Fatalf("Probe on a QEMU past API 1: %v", err)
	}
}
