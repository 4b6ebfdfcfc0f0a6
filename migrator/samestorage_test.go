package migrator

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/digitalocean/go-qemu/qmp"
)

// blockMonitor answers any command (query-block, query-memdev) with its
// reply.
type blockMonitor string

func (m blockMonitor) Connect() error                                   { return nil }
func (m blockMonitor) Disconnect() error                                { return nil }
func (m blockMonitor) Events(context.Context) (<-chan qmp.Event, error) { return nil, nil }
func (m blockMonitor) Run([]byte) ([]byte, error)                       { return []byte(`{"return":` + string(m) + `}`), nil }

// TestSameStorage: a destination whose disk, by the device it backs, is
// another file than the source's is refused; the same file by another
// name, a read-only medium, a device only one side has, a disk not named
// by a file, and a QEMU not of this host are not (walk 114, review 115:
// libvirt's -blockdev names the device by its path only).
func TestSameStorage(t *testing.T) {
	dir := t.TempDir()
	disk, other, link := filepath.Join(dir, "disk.raw"), filepath.Join(dir, "copy.raw"), filepath.Join(dir, "link.raw")
	for _, f := range []string{disk, other} {
		if err := os.WriteFile(f, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(disk, link); err != nil {
		t.Fatal(err)
	}
	drive := func(device, qdev, file string, ro bool) string {
		return `[{"device":"` + device + `","qdev":"` + qdev + `","inserted":{"file":"` + file + `","ro":` + map[bool]string{true: "true", false: "false"}[ro] + `}}]`
	}
	const vd = "/machine/peripheral/virtio-disk0/virtio-backend"
	pid := os.Getpid()
	for _, tc := range []struct {
		name     string
		src, dst string
		pids     [2]int
		refused  bool
	}{
		{"another file", drive("virtio0", "", disk, false), drive("virtio0", "", other, false), [2]int{pid, pid}, true},
		{"another file, -blockdev", drive("", vd, disk, false), drive("", vd, other, false), [2]int{pid, pid}, true},
		{"the same file by a link", drive("", vd, disk, false), drive("", vd, link, false), [2]int{pid, pid}, false},
		{"read-only", drive("", vd, disk, true), drive("", vd, other, true), [2]int{pid, pid}, false},
		{"another device", drive("virtio0", "", disk, false), drive("virtio1", "", other, false), [2]int{pid, pid}, false},
		{"not a file", drive("virtio0", "", disk, false), drive("virtio0", "", "nbd://10.0.0.1/disk", false), [2]int{pid, pid}, false},
		{"a destination elsewhere", drive("virtio0", "", disk, false), drive("virtio0", "", other, false), [2]int{pid, 0}, false},
		{"a source elsewhere", drive("virtio0", "", disk, false), drive("virtio0", "", other, false), [2]int{0, pid}, false},
	} {
		err := SameStorage(blockMonitor(tc.src), blockMonitor(tc.dst), tc.pids[0], tc.pids[1])
		if refused := err != nil && strings.Contains(err.Error(), "opens "+other+" for the disk of "); refused != tc.refused {
			t.Errorf("%s: %v, want refused %v", tc.name, err, tc.refused)
		}
	}
}

// TestSameRAMBlocks: a destination without a memory backend of the
// source's id, or with it of another size, is refused before anything is
// sent (walk 114: id=pc.ram for the source's ram0, refused by QEMU only once
// all of the RAM had come); the same backends, or a QEMU that does not
// name them, are not.
func TestSameRAMBlocks(t *testing.T) {
	const (
		ram0  = `[{"id":"ram0","size":536870912,"share":true}]`
		pcRAM = `[{"id":"pc.ram","size":536870912,"share":true}]`
		small = `[{"id":"ram0","size":268435456,"share":true}]`
		both  = `[{"id":"ram0","size":536870912},{"id":"mem1","size":1048576}]`
		old   = `[{"size":536870912}]`
	)
	for _, tc := range []struct {
		src, dst, want string
	}{
		{ram0, ram0, ""},
		{ram0, both, ""}, // more at the destination: the stream names none of them
		{ram0, pcRAM, `has no memory backend "ram0", which holds 512.0 MiB of the source's RAM (its memory backends: pc.ram)`},
		{both, ram0, `has no memory backend "mem1"`},
		{ram0, small, `memory backend "ram0" holds 256.0 MiB, the source's 512.0 MiB`},
		{ram0, old, ""},
	} {
		err := SameRAMBlocks(blockMonitor(tc.src), blockMonitor(tc.dst))
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("source %s, destination %s: %v, want %q", tc.src, tc.dst, err, tc.want)
		}
	}
}
