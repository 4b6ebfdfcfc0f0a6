package qemu

import (
	"cmp"
	"os"
	"slices"
	"strings"
	"testing"
)

// TestParseLayout reads the layouts of QEMU 7.2's own `info mtree -f`
// (testdata, taken through QMP's human-monitor-command): a q35 of 5 GiB
// keeps 2 GiB below 4 GiB, a pc 3 GiB, and a pc booted by SeaBIOS has
// shadowed its BIOS in RAM (parts of the first MiB read-only); a pc given
// max-ram-below-4g=1G keeps 1 GiB of its 2 below 4 GiB; a q35 whose
// firmware enabled TSEG hides its top MiB below 4 GiB outside SMM.
func TestParseLayout(t *testing.T) {
	for _, tc := range []struct {
		file, machine string
		ram           uint64
		want          []RAMRange
		backend       string // its id; "" for mem
	}{
		{"mtree-q35-5g-kvm.txt", "q35", 5 << 30, []RAMRange{
			{0, 0, 0xc0000}, {0x100000, 0x100000, 0x80000000 - 0x100000}, {1 << 32, 0x80000000, 3 << 30}}, ""},
		{"mtree-pc-5g-tcg.txt", "pc", 5 << 30, []RAMRange{
			{0, 0, 0xc0000}, {0x100000, 0x100000, 0xc0000000 - 0x100000}, {1 << 32, 0xc0000000, 2 << 30}}, ""},
		{"mtree-pc-3584m-booted.txt", "pc", 3584 << 20, []RAMRange{
			{0, 0, 0xc3000}, {0xe8000, 0xe8000, 0x8000}, {0x100000, 0x100000, 0xc0000000 - 0x100000}, {1 << 32, 0xc0000000, 512 << 20}}, ""},
		// q35 with TSEG enabled by the firmware (SMM on): its top MiB
		// below 4 GiB is hidden outside SMM (tseg-blackhole) and placed
		// where the SMM view has it (review 54: refused, "placed nowhere").
		{"mtree-q35-2g-tseg-tcg.txt", "q35", 2 << 30, []RAMRange{
			{0, 0, 0xc3000}, {0xe8000, 0xe8000, 0x8000}, {0x100000, 0x100000, 0x7fe00000}, {0x7ff00000, 0x7ff00000, 0x100000}}, "ram"},
		{"mtree-q35-3g-tseg-tcg.txt", "q35", 3 << 30, []RAMRange{
			{0, 0, 0xc3000}, {0xe8000, 0xe8000, 0x8000}, {0x100000, 0x100000, 0x7fe00000}, {0x7ff00000, 0x7ff00000, 0x100000},
			{1 << 32, 0x80000000, 1 << 30}}, "ram"},
		// -machine pc,max-ram-below-4g=1G: no rule foretells it.
		{"mtree-pc-2g-below1g-tcg.txt", "", 2 << 30, []RAMRange{
			{0, 0, 0xc0000}, {0x100000, 0x100000, 0x40000000 - 0x100000}, {1 << 32, 0x40000000, 1 << 30}}, ""},
	} {
		b, err := os.ReadFile("testdata/" + tc.file)
		if err != nil {
			t.Fatal(err)
		}
		for _, backend := range []string{cmp.Or(tc.backend, "mem"), ""} {
			l, err := ParseLayout(string(b), backend, tc.ram)
			if err != nil {
				t.Fatalf("%s, backend %q: %v", tc.file, backend, err)
			}
			if got := l.Ranges(); !slices.Equal(got, tc.want) {
				t.Errorf("%s, backend %q: ranges %x, want %x", tc.file, backend, got, tc.want)
			}
			// What it reads, the machine's rule says too, page by page.
			rule := MachineLayout(tc.machine, tc.ram)
			if tc.machine == "" {
				rule = SplitLayout(tc.ram, 1<<30)
			}
			if l.Frames() != rule.Frames() {
				t.Errorf("%s: %d frames, the %s rule %d", tc.file, l.Frames(), tc.machine, rule.Frames())
			}
			for gfn := uint64(0); gfn < l.Frames()+16; gfn += 997 {
				p, ok := l.Page(gfn)
				q, rok := rule.Page(gfn)
				if p != q || ok != rok {
					t.Fatalf("%s: frame %#x is page %#x %v, the %s rule %#x %v", tc.file, gfn, p, ok, tc.machine, q, rok)
				}
				if ok && gfn >= legacyEnd/4096 {
					if gpa, ok := l.GPA(p * 4096); !ok || gpa != gfn*4096 {
						t.Fatalf("%s: page %#x is at %#x %v, want frame %#x's", tc.file, p, gpa, ok, gfn)
					}
				}
			}
		}
	}
}

// TestLayoutPage: the frames of a q35 of 3 GiB, where a pc's rule put its
// high part 1 GiB off.
func TestLayoutPage(t *testing.T) {
	l := MachineLayout("pc-q35-7.2-machine", 3<<30)
	for _, tc := range []struct {
		gfn, page uint64
		ok        bool
	}{
		{0, 0, true},
		{0xc0, 0xc0, true}, // the first MiB is RAM at its own offset
		{0x7ffff, 0x7ffff, true},
		{0x80000, 0, false}, // the hole below 4 GiB
		{0xfffff, 0, false},
		{0x100000, 0x80000, true},
		{0x13ffff, 0xbffff, true},
		{0x140000, 0, false}, // past the RAM
		{1 << 52, 0, false},  // past any address
	} {
		if p, ok := l.Page(tc.gfn); p != tc.page || ok != tc.ok {
			t.Errorf("frame %#x: page %#x %v, want %#x %v", tc.gfn, p, ok, tc.page, tc.ok)
		}
	}
	if l.Frames() != 0x140000 {
		t.Errorf("frames %#x, want 0x140000 (RAM up to 5 GiB)", l.Frames())
	}
	if got := MachineLayout("q35", 2816<<20-4096).Ranges(); len(got) != 1 {
		t.Errorf("a q35 under 2.75 GiB: %x, want all of it below 4 GiB", got)
	}
}

// TestParseLayoutRefuses: a text that would place RAM wrongly is refused,
// saying what is wrong.
func TestParseLayoutRefuses(t *testing.T) {
	head := "FlatView #1\n AS \"memory\", root: system\n Root memory region: system\n"
	ram := func(lines ...string) string { return head + "  " + strings.Join(lines, "\n  ") + "\n" }
	for _, tc := range []struct {
		name, text, want string
	}{
		{"no memory AS", "FlatView #0\n AS \"I/O\", root: io\n", `no address space "memory"`},
		{"other RAM only", ram("0000000000000000-000000003fffffff (prio 0, ram): other"), `RAM "mem" is nowhere`},
		{"a part missing", ram("0000000000000000-000000001fffffff (prio 0, ram): mem"), "placed nowhere"},
		{"a gap past 1 MiB", ram("0000000000000000-000000001fffffff (prio 0, ram): mem",
			"0000000030000000-000000003fffffff (prio 0, ram): mem @0000000030000000"), "from 0x20000000 to 0x30000000 is placed nowhere"},
		{"placed twice", ram("0000000000000000-000000003fffffff (prio 0, ram): mem",
			"0000000100000000-000000010fffffff (prio 0, ram): mem @0000000000000000"), "placed twice"},
		{"past the end", ram("0000000000000000-000000003fffffff (prio 0, ram): mem",
			"0000000100000000-000000010fffffff (prio 0, ram): mem @0000000040000000"), "runs past"},
		{"unaligned", ram("0000000000000000-000000003ffffffe (prio 0, ram): mem"), "whole 4 KiB pages"},
		{"overlap", ram("0000000000000000-000000003fffffff (prio 0, ram): mem",
			"0000000000001000-0000000000001fff (prio 0, ram): mem @0000000000001000"), "overlaps"},
		{"offset overflow", ram("0000000000000000-0000000000000fff (prio 0, ram): mem @ffffffffffffffff"), "not in whole 4 KiB pages"},
		{"SMM's past the end", ram("0000000000000000-000000003fffffff (prio 0, ram): mem") +
			"FlatView #2\n AS \"cpu-smm-0\", root: memory\n  00000000feda0000-00000000fedbffff (prio 0, ram): mem @fffffffffffff000\n", "seen in SMM) runs past"},
	} {
		_, err := ParseLayout(tc.text, "mem", 1<<30)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error saying %q", tc.name, err, tc.want)
		}
	}
	if _, err := ParseLayout(ram("0000000000000000-000000003fffffff (prio 0, ram): mem"), "mem", 1<<30); err != nil {
		t.Errorf("a whole 1 GiB: %v", err)
	}
}

// TestPCLayoutPage: the frames of pc machines of several sizes (the
// cases of qemuguest's ramPage, which the layout replaced).
func TestPCLayoutPage(t *testing.T) {
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
			got, ok := MachineLayout("pc", tt.ramPages*4096).Page(tt.gfn)
			if ok != tt.ok || (ok && got != tt.want) {
				t.Errorf("Page(%#x) of %#x pages = %#x, %v; want %#x, %v", tt.gfn, tt.ramPages, got, ok, tt.want, tt.ok)
			}
		})
	}
}

// TestParseLayoutSMM: KVM's SMM view (address space KVM-SMRAM) is read as
// TCG's (cpu-smm-N) is; and RAM of the first MiB that only SMM sees (the
// VGA window's, under a VGA's vga-lowmem outside SMM) is not placed at
// SMM's alias of it at 0xfeda0000, which counted frames up to 4 GiB for a
// 2 GiB guest (review 55).
func TestParseLayoutSMM(t *testing.T) {
	b, err := os.ReadFile("testdata/mtree-q35-2g-tseg-tcg.txt")
	if err != nil {
		t.Fatal(err)
	}
	smmView, memView, ok := strings.Cut(string(b), "FlatView #2")
	if !ok {
		t.Fatal("no FlatView #2 in the testdata")
	}
	// With H_SMRAME, SMM too sees the VGA window's RAM only at 0xfeda0000.
	withVGA := func(view string) string {
		v := strings.Replace(view, "  0000000000000000-00000000000c2fff (prio 0, ram): ram",
			"  0000000000000000-000000000009ffff (prio 0, ram): ram\n"+
				"  00000000000a0000-00000000000bffff (prio 1, i/o): vga-lowmem\n"+
				"  00000000000c0000-00000000000c2fff (prio 0, ram): ram @00000000000c0000", 1)
		if v == view {
			t.Fatal("a view's first line is not where the test puts the VGA window")
		}
		return v
	}
	for name, text := range map[string]string{
		"TCG, with a VGA": withVGA(smmView) + "FlatView #2" + withVGA(memView),
		"KVM":             strings.Replace(string(b), `AS "cpu-smm-0"`, `AS "KVM-SMRAM"`, 1),
	} {
		l, err := ParseLayout(text, "ram", 2<<30)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if l.Frames() != 2<<30/4096 {
			t.Errorf("%s: %#x frames, want %#x: ranges %x", name, l.Frames(), 2<<30/4096, l.Ranges())
		}
		if p, ok := l.Page(0x7ff00); !ok || p != 0x7ff00 {
			t.Errorf("%s: TSEG's frame 0x7ff00 is page %#x %v", name, p, ok)
		}
	}
}
