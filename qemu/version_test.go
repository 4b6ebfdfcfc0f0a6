package qemu

import (
	"os/exec"
	"testing"
)

// TestPluginPages: QEMU 7.2 and 8.1's plugin API names a page by its
// offset in RAM (pages= is the RAM's pages); 8.2's by its guest-physical
// frame, the hole below 4 GiB counted (review 54: its writes above 4 GiB
// would have been dropped).
func TestPluginPages(t *testing.T) {
	for _, tc := range []struct {
		version, machine string
		mem, want        uint64
	}{
		{"QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\n", "pc", 4 << 30, 4 << 30 / 4096},
		{"QEMU emulator version 8.1.5", "q35", 4 << 30, 4 << 30 / 4096},
		{"QEMU emulator version 8.2.2 (Debian 1:8.2.2+ds-0ubuntu1)", "pc", 4 << 30, 5 << 30 / 4096},
		{"QEMU emulator version 8.2.2", "q35", 4 << 30, 6 << 30 / 4096},
		{"QEMU emulator version 8.2.2", "", 4 << 30, 6 << 30 / 4096}, // unknown: a q35's
		{"QEMU emulator version 8.2.2", "pc", 1 << 30, 1 << 30 / 4096},
		// A release candidate or development build of 8.2 is 8.2's
		// (review 55); of 8.1, 8.1's.
		{"QEMU emulator version 8.1.90 (v8.2.0-rc0)", "pc", 4 << 30, 5 << 30 / 4096},
		{"QEMU emulator version 8.1.50", "pc", 4 << 30, 5 << 30 / 4096},
		{"QEMU emulator version 8.0.90", "pc", 4 << 30, 4 << 30 / 4096},
	} {
		v, err := ParseVersion(tc.version)
		if err != nil {
			t.Fatal(err)
		}
		if got := PluginPages(v, tc.machine, tc.mem); got != tc.want {
			t.Errorf("%s, %s of %d MiB: pages=%d, want %d", v, tc.machine, tc.mem>>20, got, tc.want)
		}
	}
	if _, err := ParseVersion("qemu-img version 7.2.0"); err == nil {
		t.Error("a qemu-img's --version taken for QEMU's")
	}
	if bin, err := exec.LookPath("qemu-system-x86_64"); err == nil {
		v, err := BinaryVersion(bin)
		if err != nil || v.Major == 0 {
			t.Errorf("this host's QEMU: %v, %v", v, err)
		}
		t.Logf("this host's QEMU is %s: the plugin names pages by %s", v, map[bool]string{false: "offset in RAM", true: "address"}[PluginAddresses(v)])
	}
}

// TestMigratesMemfdRAM: from QEMU 8.1 x-ignore-shared skips only RAM in a
// named file, so a memfd's RAM goes with the device state (walk 111); a
// release candidate or development build of 8.1 is 8.1's.
func TestMigratesMemfdRAM(t *testing.T) {
	for _, tc := range []struct {
		v    Version
		want bool
	}{
		{Version{7, 2, 22}, false},
		{Version{8, 0, 5}, false},
		{Version{8, 0, 50}, true},
		{Version{8, 0, 90}, true},
		{Version{8, 1, 0}, true},
		{Version{10, 0, 2}, true},
	} {
		if got := MigratesMemfdRAM(tc.v); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.v, got, tc.want)
		}
	}
}
