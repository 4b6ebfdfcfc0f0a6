package migrator

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
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

// qomMonitor answers qom-list from children (path → its children, as
// "name:type") and qom-get from props ("path property" → JSON), and any
// other path or property with QEMU's error.
type qomMonitor struct {
	children map[string][]string
	props    map[string]string
}

func (m qomMonitor) Connect() error                                   { return nil }
func (m qomMonitor) Disconnect() error                                { return nil }
func (m qomMonitor) Events(context.Context) (<-chan qmp.Event, error) { return nil, nil }
func (m qomMonitor) Run(cmd []byte) ([]byte, error) {
	var c struct {
		Execute   string            `json:"execute"`
		Arguments map[string]string `json:"arguments"`
	}
	if err := json.Unmarshal(cmd, &c); err != nil {
		return nil, err
	}
	notFound := []byte(`{"error":{"class":"DeviceNotFound","desc":"not found"}}`)
	switch c.Execute {
	case "qom-list":
		kids, ok := m.children[c.Arguments["path"]]
		if !ok {
			return notFound, nil
		}
		var list []string
		for _, k := range kids {
			name, typ, _ := strings.Cut(k, ":")
			list = append(list, fmt.Sprintf(`{"name":%q,"type":"child<%s>"}`, name, typ))
		}
		list = append(list, `{"name":"type","type":"string"}`)
		return []byte(`{"return":[` + strings.Join(list, ",") + `]}`), nil
	case "qom-get":
		v, ok := m.props[c.Arguments["path"]+" "+c.Arguments["property"]]
		if !ok {
			return []byte(`{"error":{"class":"GenericError","desc":"Property 'x' not found"}}`), nil
		}
		return []byte(`{"return":` + v + `}`), nil
	}
	return []byte(`{"error":{"class":"CommandNotFound","desc":"no such command"}}`), nil
}

// libvirtDevices is walk 114's q35 VM's devices, as libvirt gives them:
// root ports with ids, a NIC and a balloon behind them, a serial port, and
// the board's SATA controller; without drops a device from them (its
// path); renamed gives the root ports other ids and the NIC by -nic.
func libvirtDevices(without string, renamed bool) qomMonitor {
	rp := func(id string) string {
		if renamed {
			return "rp" + id
		}
		return id
	}
	const p, anon = "/machine/peripheral/", "/machine/peripheral-anon/"
	m := qomMonitor{children: map[string][]string{
		"/machine/peripheral":      {rp("pci.1") + ":pcie-root-port", rp("pci.2") + ":pcie-root-port", "net0:virtio-net-pci", "serial0:isa-serial"},
		"/machine/peripheral-anon": {"device[0]:virtio-balloon-pci"},
		"/machine/unattached":      {"device[0]:qemu64-x86_64-cpu", "device[9]:ich9-ahci", "sysbus:System", "pci[0]:memory-region"},
	}, props: map[string]string{
		"/machine/unattached/device[9] addr":       "250",
		"/machine/unattached/pci[0] addr":          "0", // a memory region's: on no bus
		"/machine/unattached/device[9] parent_bus": `"/machine/q35/pcie.0"`,
		p + rp("pci.1") + " addr":                  "16",
		p + rp("pci.1") + " parent_bus":            `"/machine/q35/pcie.0"`,
		p + rp("pci.2") + " addr":                  "17",
		p + rp("pci.2") + " parent_bus":            `"/machine/q35/pcie.0"`,
		p + "net0 addr":                            "0",
		p + "net0 parent_bus":                      `"` + p + rp("pci.1") + `/` + rp("pci.1") + `"`,
		anon + "device[0] addr":                    "0",
		anon + "device[0] parent_bus":              `"` + p + rp("pci.2") + `/` + rp("pci.2") + `"`,
		p + "serial0 parent_bus":                   `"/machine/unattached/device[15]/isa.0"`,
		p + "serial0 index":                        "0",
	}}
	if renamed {
		// Listed in another order, as another command line gives them,
		// and the NIC by -nic (the board's place for it).
		slices.Reverse(m.children["/machine/peripheral"])
		m.children["/machine/peripheral"] = slices.DeleteFunc(m.children["/machine/peripheral"], func(k string) bool { return strings.HasPrefix(k, "net0:") })
		m.children["/machine/unattached"] = append(m.children["/machine/unattached"], "device[20]:virtio-net-pci")
		m.props["/machine/unattached/device[20] addr"] = m.props[p+"net0 addr"]
		m.props["/machine/unattached/device[20] parent_bus"] = m.props[p+"net0 parent_bus"]
	}
	if without != "" {
		dir, name := filepath.Split(without)
		dir = strings.TrimSuffix(dir, "/")
		m.children[dir] = slices.DeleteFunc(slices.Clone(m.children[dir]), func(k string) bool { return strings.HasPrefix(k, name+":") })
	}
	return m
}

// TestSameDevices: a destination that lacks one of the source's PCI
// devices, or has it elsewhere on its PCI buses, is refused before
// anything is sent, naming it (walk 114: a root port left out was refused
// by QEMU once all the memory had gone); one whose devices and bridges
// have other ids, or come in another order or by -nic, or that has more,
// is not; nor is one without a device not on PCI, which is left to QEMU;
// nor a QEMU that does not say.
func TestSameDevices(t *testing.T) {
	src := libvirtDevices("", false)
	moved := libvirtDevices("", false)
	moved.props["/machine/peripheral-anon/device[0] addr"] = "8" // slot 01
	for _, tc := range []struct {
		name string
		dst  qmp.Monitor
		want string // in the refusal; "" for none
	}{
		{"the same", libvirtDevices("", false), ""},
		{"other ids, another order", libvirtDevices("", true), ""},
		{"no balloon", libvirtDevices("/machine/peripheral-anon/device[0]", false),
			"has no virtio-balloon-pci at PCI pcie.0/02.1/00.0, where the source has one (the destination has none there)"},
		{"no root port", libvirtDevices("/machine/peripheral/pci.1", false),
			"has no pcie-root-port at PCI pcie.0/02.0, where the source has one (the destination has none there)"},
		{"balloon in another slot", moved, "has no virtio-balloon-pci at PCI pcie.0/02.1/00.0"},
		{"no SATA controller", libvirtDevices("/machine/unattached/device[9]", false), "has no ich9-ahci at PCI pcie.0/1f.2"},
		{"no serial port", libvirtDevices("/machine/peripheral/serial0", false), ""},
		{"not QEMU", qomMonitor{}, ""},
	} {
		err := SameDevices(src, tc.dst)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: refused: %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "Unknown savevm section")):
			t.Errorf("%s: %v; want refused with %q", tc.name, err, tc.want)
		}
	}
	// More at the destination is the destination's own.
	if err := SameDevices(libvirtDevices("/machine/peripheral/net0", false), src); err != nil {
		t.Errorf("a destination with a device more: %v", err)
	}
}
