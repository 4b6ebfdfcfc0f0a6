package main

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pagecast/pagecast/qemu"
)

// TestPublishQMP: QEMU's socket, staged beside --qmp while the guest
// boots, is moved into place, but never over something that took the path
// meanwhile (review 77: rename replaced another process's live socket).
func TestPublishQMP(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "q.sock")
	staged := stagedQMP(path)
	if staged != filepath.Join(dir, ".q.sock.booting") {
		t.Fatalf("staged at %s", staged)
	}
	l, err := net.Listen("unix", staged)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	v := &qemuVM{VM: &qemu.VM{QMPPath: staged}, qmp: path, staged: staged}
	other, err := net.Listen("unix", path) // took the path meanwhile
	if err != nil {
		t.Fatal(err)
	}
	if err := v.publishQMP(); err == nil || !strings.Contains(err.Error(), "something made it while the guest booted") {
		t.Errorf("publish over a live socket: %v", err)
	}
	other.Close()
	os.Remove(path)
	if err := v.publishQMP(); err != nil || v.QMPPath != path || v.staged != "" {
		t.Fatalf("publish: %v, QMPPath %s, staged %q", err, v.QMPPath, v.staged)
	}
	if c, err := net.Dial("unix", path); err != nil {
		t.Errorf("dial the published socket: %v", err)
	} else {
		c.Close()
	}
}
