package qemu

import "testing"

// FuzzParseLayout reads arbitrary `info mtree -f` text: a layout accepted
// places every page of RAM past the first MiB once, where Page finds it
// again, and never more frames than the address space has.
func FuzzParseLayout(f *testing.F) {
	f.Add("FlatView #0\n AS \"memory\", root: system\n Root memory region: system\n  0000000000000000-000000000009ffff (prio 0, ram): pc.ram KVM\n  00000000000c0000-0000000000ffffff (prio 0, ram): pc.ram @00000000000c0000 KVM\n", uint16(4095), "")
	f.Add("FlatView #0\n AS \"memory\"\n  0000000000000000-00000000000fffff (prio 0, ram): mem\n  0000000100000000-00000001000fffff (prio 0, ram): mem @0000000000100000\nFlatView #1\n AS \"KVM-SMRAM\"\n  00000000000a0000-00000000000bffff (prio 1, ram): mem @00000000000a0000\n", uint16(511), "mem")
	f.Add("FlatView #3\n AS \"cpu-smm-0\"\n  0000000000000000-0000000000000fff (prio 0, ram): m @0000000000001000\n AS \"memory\"\n  0000000000000000-0000000000000fff (prio 0, ram): m\n", uint16(1), "m")
	f.Fuzz(func(t *testing.T, text string, ramPages uint16, backend string) {
		ram := (uint64(ramPages)%4096 + 1) * 4096
		l, err := ParseLayout(text, backend, ram)
		if err != nil {
			return
		}
		if l.RAMBytes() != ram {
			t.Fatalf("layout of %d bytes for %d", l.RAMBytes(), ram)
		}
		_ = l.Frames()
		for off := uint64(0); off < ram; off += 4096 {
			gpa, ok := l.GPA(off)
			if !ok {
				if off >= legacyEnd {
					t.Fatalf("RAM at %#x is placed nowhere in %+v", off, l.Ranges())
				}
				continue
			}
			if gpa < legacyEnd {
				continue // Page takes the first MiB's frames for themselves
			}
			if p, ok := l.Page(gpa / 4096); !ok || p != off/4096 {
				t.Fatalf("RAM at %#x is at %#x, whose page is %d, %v, in %+v", off, gpa, p, ok, l.Ranges())
			}
		}
	})
}
