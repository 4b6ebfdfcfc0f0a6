package qemuguest

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRAMPage(t *testing.T) {
	const gib = 1 << 30 / 4096 // pages
	tests := []struct {
		name          string
		gfn, ramPages uint64
		want          uint64
		ok            bool
	}{
		{"small guest", 100, 16384, 100, true},
		{"past a small guest's end", 16384, 16384, 0, false},
		// A 3 GiB guest is all below 4 GiB (the page at 2.75 GiB was
		// once taken for the hole, and the pages from there on were
		// never resent: the migration's checksums caught it).
		{"3 GiB guest at 2.75 GiB", 0xB0000, 3 * gib, 0xB0000, true},
		{"3 GiB guest's last page", 3*gib - 1, 3 * gib, 3*gib - 1, true},
		{"past a 3 GiB guest's end", 3 * gib, 3 * gib, 0, false},
		// A 4 GiB guest keeps 3 GiB below 4 GiB, 1 GiB above.
		{"large guest below the hole", 3*gib - 1, 4 * gib, 3*gib - 1, true},
		{"in the hole", 3 * gib, 4 * gib, 0, false},
		{"just below 4 GiB", 4*gib - 1, 4 * gib, 0, false},
		{"at 4 GiB", 4 * gib, 4 * gib, 3 * gib, true},
		{"last page", 5*gib - 1, 4 * gib, 4*gib - 1, true},
		{"past the end", 5 * gib, 4 * gib, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := ramPage(tt.gfn, tt.ramPages)
			if ok != tt.ok || (ok && got != tt.want) {
				t.Errorf("ramPage(%#x, %#x) = %#x, %v; want %#x, %v", tt.gfn, tt.ramPages, got, ok, tt.want, tt.ok)
			}
		})
	}
}

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
	got, size, err := ramFile(memPathQEMU{path}, os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(got)
	if size != 65536 || err != nil || !bytes.Equal(b, ram) {
		t.Errorf("guest RAM at %s (%d bytes said, %d read, %v): want the file QEMU holds", got, size, len(b), err)
	}
}

// TestCheckLayout: a q35 machine whose RAM is split otherwise than a pc
// machine's (2 GiB below 4 GiB from 2.75 GiB of RAM) is refused, saying
// so; smaller ones, whose RAM is all below 4 GiB on both, and pc machines
// are not.
func TestCheckLayout(t *testing.T) {
	for _, tc := range []struct {
		machine string
		ram     uint64
		ok      bool
	}{
		{"pc-i440fx-7.2-machine", 8 << 30, true},
		{"pc-q35-7.2-machine", 2 << 30, true},
		{"pc-q35-7.2-machine", 0xb0000000 - 4096, true},
		{"pc-q35-7.2-machine", 0xb0000000, false},
		{"pc-q35-7.2-machine", 4 << 30, false},
	} {
		err := checkLayout(tc.machine, tc.ram)
		if (err == nil) != tc.ok || (err != nil && !strings.Contains(err.Error(), "use -machine pc")) {
			t.Errorf("%s with %d MiB: %v", tc.machine, tc.ram>>20, err)
		}
	}
}
