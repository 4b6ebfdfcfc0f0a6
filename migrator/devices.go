package migrator

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/digitalocean/go-qemu/qmp"
)

// SameDevices refuses a destination QEMU (dst, --dest-qmp) that lacks a
// PCI device the source has, before anything is sent. A migration carries
// each device's state by where the device sits, and QEMU's load of it at
// the destination ends on a device it does not have ("Unknown savevm
// section or instance"), once the whole of the guest's memory has gone:
// walk 114's destination, left without one of libvirt's PCIe root ports,
// refused the state after 512 MiB had crossed. Each PCI device the source
// has (-device, device_add, -nic, the board's: QOM's /machine/peripheral,
// /machine/peripheral-anon and /machine/unattached) must be there of the
// same type at the same slot and function, on the same chain of bridges
// from the same root bus; its id, and the bridges', may differ, as they do
// not travel. It is found in any of the three places: how a device was
// given (-nic here, -device there) is left to QEMU, which took an e1000 so
// and refused a virtio-net-pci, whose -nic has another number of MSI-X
// vectors (walk 117). Other devices are left to QEMU too: an ISA serial
// port given by -serial at one end and -device at the other is one device
// to a migration, in other QOM places. Devices only the destination has
// are left alone (QEMU loads a stream without them). A device that keeps
// no state (edu, pci-testdev) is refused too, where QEMU would take the
// stream. Where either QEMU does not say (not QEMU, or a QOM path it
// refuses), the migration finds out.
func SameDevices(src, dst qmp.Monitor) error {
	// Asked of both at once: some 80 questions each, 0.16-0.19 s on a
	// QEMU whose TCG guest is busy (walk 117).
	var s, d map[device]int
	var wg sync.WaitGroup
	wg.Go(func() { s = pciDevices(src) })
	d = pciDevices(dst)
	wg.Wait()
	if s == nil || d == nil {
		return nil
	}
	for _, k := range slices.SortedFunc(maps.Keys(s), compareDevices) {
		if d[k] >= s[k] {
			continue
		}
		start := "start the destination with the source's devices"
		there := "none"
		for o := range d {
			if o.where == k.where {
				there = o.typ
			}
		}
		return fmt.Errorf("the destination QEMU (--dest-qmp) has no %s at PCI %s, where the source has one (the destination has %s there): "+
			"a migration carries each device's state by where it sits, and the destination's load of it would end there (\"Unknown savevm section\"), once all of the guest's memory had gone; %s",
			k.typ, k.where, there, start)
	}
	return nil
}

// device is a PCI device of a QEMU, by type and where it sits: its root
// bus, then the slot and function of each bridge on the way and its own
// ("pcie.0/02.1/00.0").
type device struct{ typ, where string }

func compareDevices(a, b device) int {
	return strings.Compare(a.where+"\x00"+a.typ, b.where+"\x00"+b.typ)
}

// pciDevices counts the PCI devices of the QEMU behind m, given by the
// user (QOM's /machine/peripheral and /machine/peripheral-anon) or not
// (/machine/unattached: the board's, -nic's); nil where it does not say.
func pciDevices(m qmp.Monitor) map[device]int {
	devs := map[device]int{}
	places := map[string]string{} // a device's QOM path → where it sits
	for _, dir := range []string{"/machine/peripheral", "/machine/peripheral-anon", "/machine/unattached"} {
		var children []struct {
			Name string `json:"name"`
			Type string `json:"type"`
		}
		if clientRun(m, "qom-list", map[string]string{"path": dir}, &children) != nil {
			return nil
		}
		for _, c := range children {
			typ, ok := strings.CutPrefix(c.Type, "child<")
			if !ok {
				continue
			}
			where, err := pciPlace(m, dir+"/"+c.Name, places, 0)
			if err != nil {
				return nil
			}
			if where != "" {
				devs[device{strings.TrimSuffix(typ, ">"), where}]++
			}
		}
	}
	return devs
}

// pciPlace is where the device at QOM path sits on the PCI buses ("" for
// a device not on one), found through its parent bus's device up to a root
// bus; places keeps what was found, for the bridges several devices sit
// behind.
func pciPlace(m qmp.Monitor, path string, places map[string]string, depth int) (string, error) {
	if where, ok := places[path]; ok {
		return where, nil
	}
	if depth > 32 {
		return "", fmt.Errorf("%s: PCI bridges nested over 32 deep", path)
	}
	var addr json.RawMessage
	if clientRun(m, "qom-get", map[string]string{"path": path, "property": "addr"}, &addr) != nil {
		places[path] = "" // no addr: not a PCI device
		return "", nil
	}
	var devfn int
	if json.Unmarshal(addr, &devfn) != nil || devfn < 0 || devfn > 0xff {
		places[path] = "" // an addr of another kind of bus
		return "", nil
	}
	var bus string
	if clientRun(m, "qom-get", map[string]string{"path": path, "property": "parent_bus"}, &bus) != nil || !strings.HasPrefix(bus, "/") {
		places[path] = "" // not a device on a bus (a memory region has an addr too)
		return "", nil
	}
	// A bus is a child of the device that provides it: a bridge given
	// by the user, or the machine's host bridge (a root bus).
	owner, name := bus[:max(strings.LastIndexByte(bus, '/'), 0)], bus[strings.LastIndexByte(bus, '/')+1:]
	here := fmt.Sprintf("%02x.%x", devfn>>3, devfn&7)
	var where string
	if strings.HasPrefix(owner, "/machine/peripheral/") || strings.HasPrefix(owner, "/machine/peripheral-anon/") || strings.HasPrefix(owner, "/machine/unattached/") {
		up, err := pciPlace(m, owner, places, depth+1)
		if err != nil {
			return "", err
		}
		if up == "" {
			// A PCI bus under a device not on one (a PCI expander's):
			// named by its bus, as a root bus is.
			up = name
		}
		where = up + "/" + here
	} else {
		where = name + "/" + here
	}
	places[path] = where
	return where, nil
}
