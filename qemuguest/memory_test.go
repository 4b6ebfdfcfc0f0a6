package qemuguest

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// memPathQEMU answers what ramFile asks of a QEMU whose RAM is a 64 KiB
// memory-backend-file at path.
type memPathQEMU struct{ path string }

func (q memPathQEMU) Run(cmd []byte) ([]byte, error) {
	switch c := string(cmd); {
	case strings.Contains(c, `"query-memdev"`):
		return []byte(`{"return":[{"id":"mem","size":65536,"share":true}]}`), nil
	case strings.Contains(c, `"qom-get"`):
		return []byte(fmt.Sprintf(`{"return":%q}`, q.path)), nil
	}
	return nil, fmt.Errorf("not here: %s", cmd)
}

// TestMemPathReplaced: the guest RAM of a memory-backend-file is the file
// QEMU has open, not whatever its mem-path names now: a smaller file put
// at that path was mapped at the backend's size, and reading the guest's
// RAM killed pagecast with SIGBUS (found by a review walk). This process
// plays the QEMU holding the file open.
func TestMemPathReplaced(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ram")
	ram := bytes.Repeat([]byte{7}, 65536)
	if err := os.WriteFile(path, ram, 0o600); err != nil {
		t.Fatal(err)
	}
	held, err := os.Open(path) // QEMU's
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	other := filepath.Join(dir, "other")
	if err := os.WriteFile(other, make([]byte, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(other, path); err != nil {
		t.Fatal(err)
	}
	got, size, memfd, err := ramFile(memPathQEMU{path}, os.Getpid())
	if err != nil || memfd {
		t.Fatalf("%s, memfd %v: %v; want the named file", got, memfd, err)
	}
	b, err := os.ReadFile(got)
	if size != 65536 || err != nil || !bytes.Equal(b, ram) {
		t.Errorf("guest RAM at %s (%d bytes said, %d read, %v): want the file QEMU holds", got, size, len(b), err)
	}
}
