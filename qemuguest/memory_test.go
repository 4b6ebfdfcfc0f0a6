package qemuguest

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// memPathQEMU answers what ramFile asks of a QEMU whose RAM is a 64 KiB
// memory-backend-file at path; with typ, a backend of that type (a
// memory-backend-memfd has no mem-path), and "-" for one that does not
// say its type.
type memPathQEMU struct{ path, typ string }

func (q memPathQEMU) Run(cmd []byte) ([]byte, error) {
	switch c := string(cmd); {
	case strings.Contains(c, `"query-memdev"`):
		return []byte(`{"return":[{"id":"mem","size":65536,"share":true}]}`), nil
	case strings.Contains(c, `"qom-get"`) && strings.Contains(c, `"type"`):
		switch q.typ {
		case "":
			return []byte(`{"return":"memory-backend-file"}`), nil
		case "-":
			return []byte(`{"error":{"class":"GenericError","desc":"Property 'type' not found"}}`), nil
		}
		return []byte(fmt.Sprintf(`{"return":%q}`, q.typ)), nil
	case strings.Contains(c, `"qom-get"`) && q.path == "":
		return []byte(`{"error":{"class":"GenericError","desc":"Property 'mem-path' not found"}}`), nil
	case strings.Contains(c, `"qom-get"`):
		return []byte(fmt.Sprintf(`{"return":%q}`, q.path)), nil
	}
	return nil, fmt.Errorf("not here: %s", cmd)
}

// TestRAMFileKinds: a memfd backend's RAM is found among QEMU's open
// files and is not named (QEMU 8.1 and later migrate it with the state),
// by its type or, where QEMU does not say, by its file; a file backend's
// is its own file, not a memfd of the same size opened before it (review
// 113: that memfd was taken, and the source refused). This process plays
// the QEMU.
func TestRAMFileKinds(t *testing.T) {
	fd, err := unix.MemfdCreate("guest-ram", 0)
	if err != nil {
		t.Skip(err)
	}
	memfd := os.NewFile(uintptr(fd), "memfd")
	defer memfd.Close()
	if err := memfd.Truncate(65536); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "ram")
	if err := os.WriteFile(path, make([]byte, 65536), 0o600); err != nil {
		t.Fatal(err)
	}
	file, err := os.Open(path) // opened after the memfd
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	self := fmt.Sprintf("/proc/%d/fd/", os.Getpid())
	for _, c := range []struct {
		name  string
		q     memPathQEMU
		want  string // the file found
		named bool
	}{
		{"memfd backend", memPathQEMU{typ: "memory-backend-memfd"}, self + fmt.Sprint(fd), false},
		{"memfd, type unsaid", memPathQEMU{typ: "-"}, self + fmt.Sprint(fd), false},
		{"file backend", memPathQEMU{path: path}, self + fmt.Sprint(file.Fd()), true},
	} {
		got, _, named, err := ramFile(c.q, os.Getpid())
		if err != nil || got != c.want || named != c.named {
			t.Errorf("%s: %s, named %v, %v; want %s, named %v", c.name, got, named, err, c.want, c.named)
		}
	}
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
	got, size, named, err := ramFile(memPathQEMU{path: path}, os.Getpid())
	if err != nil || !named {
		t.Fatalf("%s, named %v: %v; want the named file", got, named, err)
	}
	b, err := os.ReadFile(got)
	if size != 65536 || err != nil || !bytes.Equal(b, ram) {
		t.Errorf("guest RAM at %s (%d bytes said, %d read, %v): want the file QEMU holds", got, size, len(b), err)
	}
}
