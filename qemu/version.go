package qemu

import (
	"cmp"
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"time"
)

// Version is a QEMU release: 7.2.22 is {7, 2, 22}.
type Version struct{ Major, Minor, Micro int }

func (v Version) String() string { return fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Micro) }

// AtLeast says whether v is major.minor or later.
func (v Version) AtLeast(major, minor int) bool {
	return v.Major > major || v.Major == major && v.Minor >= minor
}

// QueryVersion asks the QEMU behind mon its version (query-version).
func QueryVersion(mon Runner) (Version, error) {
	var r struct {
		QEMU Version `json:"qemu"`
	}
	if err := QMP(mon, "query-version", nil, &r); err != nil {
		return Version{}, err
	}
	return r.QEMU, nil
}

var versionLine = regexp.MustCompile(`QEMU emulator version (\d+)\.(\d+)\.(\d+)`)

// BinaryVersion is the version of the QEMU binary bin (its --version).
func BinaryVersion(bin string) (Version, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "--version").Output()
	if err != nil {
		return Version{}, fmt.Errorf("%s --version: %w", bin, err)
	}
	return ParseVersion(string(out))
}

// ParseVersion reads QEMU's --version: "QEMU emulator version 7.2.22
// (Debian 1:7.2+dfsg-7+deb12u18+b3)".
func ParseVersion(s string) (Version, error) {
	m := versionLine.FindStringSubmatch(s)
	if m == nil {
		return Version{}, fmt.Errorf("no QEMU version in %q", clip(s, 80))
	}
	var v Version
	for i, p := range []*int{&v.Major, &v.Minor, &v.Micro} {
		n, err := strconv.Atoi(m[i+1])
		if err != nil {
			return Version{}, fmt.Errorf("QEMU version %q: %w", m[0], err)
		}
		*p = n
	}
	return v, nil
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// MigratesMemfdRAM says whether QEMU v's own migration sends guest RAM in a
// memfd (memory-backend-memfd, share=on) with x-ignore-shared on: QEMU 8.1
// and later skip only shared RAM in a named file ("exec/memory: Introduce
// RAM_NAMED_FILE flag", 2023); 7.2 skipped any shared RAM.
func MigratesMemfdRAM(v Version) bool { return releaseOf(v).AtLeast(8, 1) }

// releaseOf is the release v is or leads to: a release candidate or
// development build of x.y+1 calls itself x.y.90 or x.y.50 and up.
func releaseOf(v Version) Version {
	if v.Micro >= 50 {
		return Version{Major: v.Major, Minor: v.Minor + 1}
	}
	return v
}

// PluginAddresses says whether QEMU v's TCG plugin API names a store's
// page of RAM by its guest-physical address. QEMU 8.2 does
// (qemu_plugin_hwaddr_phys_addr, since "plugin: Simplify struct
// qemu_plugin_hwaddr", posted 2023-08-28 after 8.1's release); 7.2 and
// 8.0-8.1 give its offset in QEMU's RAM, which below 4 GiB is the same
// number and above it is not. A release candidate or development build is
// taken for the release it leads to (review 55: 8.2.0-rc0, "8.1.90", was
// taken for 8.1).
func PluginAddresses(v Version) bool { return releaseOf(v).AtLeast(8, 2) }

// PluginPages is the pages= pagecast's TCG plugin needs in QEMU v for a
// machine (QEMU's type name; "" where unknown) with memBytes of RAM: its
// pages, where the plugin names them by offset in RAM; else its
// guest-physical frames, the hole below 4 GiB counted (for an unknown
// machine, a q35's, the larger hole).
func PluginPages(v Version, machine string, memBytes uint64) uint64 {
	if !PluginAddresses(v) {
		return (memBytes + 4095) / 4096
	}
	return MachineLayout(cmp.Or(machine, "q35"), memBytes).Frames()
}

// PluginPagesFor is PluginPages for the QEMU binary bin ("" for
// qemu-system-x86_64 from PATH), asked its version; where it cannot say,
// the larger count, which is safe either way.
func PluginPagesFor(bin, machine string, memBytes uint64) uint64 {
	v, err := BinaryVersion(cmp.Or(bin, "qemu-system-x86_64"))
	if err != nil {
		v = Version{Major: 8, Minor: 2}
	}
	return PluginPages(v, machine, memBytes)
}
