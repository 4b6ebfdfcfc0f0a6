package qemu_test

import (
	"encoding/binary"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pagecast/pagecast/internal/testutil"
	"github.com/pagecast/pagecast/qemu"
)

// TestLayoutAgainstQEMU: the layout ReadLayout reads from a running QEMU
// (a pc of 3.5 GiB, a q35 of 3 GiB: each with RAM above 4 GiB, split
// apart) is where the guest finds its RAM. A value written at a page's
// offset in the RAM file is what QEMU's own `xp` reads at the
// guest-physical address the layout gives it, at each end of each
// stretch of RAM; the layout agrees with the machine's rule
// (MachineLayout). (Before the layout was read, a pc's split was
// assumed: a q35's RAM above 4 GiB was placed 1 GiB off.)
func TestLayoutAgainstQEMU(t *testing.T) {
	testutil.RequiresQEMU(t)
	if testing.Short() {
		t.Skip("starts QEMU")
	}
	for _, tc := range []struct {
		machine string
		memory  uint64
		low     uint64 // RAM below 4 GiB
	}{
		{"pc", 3584 << 20, 3 << 30},
		{"q35", 3 << 30, 2 << 30},
	} {
		t.Run(tc.machine, func(t *testing.T) {
			t.Parallel()
			// Waiting for a migration, no guest runs to write over the
			// values.
			v, err := qemu.Start(qemu.Options{Machine: tc.machine, MemoryBytes: tc.memory, Accel: testutil.QEMUAccel(), Incoming: "defer"})
			if err != nil {
				t.Fatal(err)
			}
			defer v.Close()
			l, err := qemu.ReadLayout(v.Monitor, "ram", tc.memory)
			if err != nil {
				t.Fatal(err)
			}
			rule := qemu.MachineLayout(tc.machine, tc.memory)
			if l.Frames() != rule.Frames() || l.Frames() != (1<<32+tc.memory-tc.low)/4096 {
				t.Errorf("%d frames, the %s rule says %d, want RAM up to %#x", l.Frames(), tc.machine, rule.Frames(), 1<<32+tc.memory-tc.low)
			}
			var checked int
			for _, r := range l.Ranges() {
				for _, off := range []uint64{r.Offset, r.Offset + r.Size/2, r.Offset + r.Size - 8} {
					gpa, ok := l.GPA(off)
					if !ok {
						t.Fatalf("offset %#x of range %+v has no address", off, r)
					}
					if p, ok := l.Page(gpa / 4096); !ok || p != off/4096 {
						t.Fatalf("frame %#x is page %#x %v, want %#x", gpa/4096, p, ok, off/4096)
					}
					want := 0x5a5a000000000000 | off
					binary.LittleEndian.PutUint64(v.Memory()[off:], want)
					var got string
					if err := qemu.QMP(v.Monitor, "human-monitor-command", map[string]any{"command-line": fmt.Sprintf("xp /1gx %#x", gpa)}, &got); err != nil {
						t.Fatal(err)
					}
					if !strings.Contains(got, fmt.Sprintf("%#x", want)) {
						t.Errorf("RAM offset %#x written %#x: the guest reads %q at %#x", off, want, strings.TrimSpace(got), gpa)
					}
					checked++
				}
			}
			t.Logf("%s: %d ranges %x, %d places checked", tc.machine, len(l.Ranges()), l.Ranges(), checked)
		})
	}
}

// TestRunsPagecastGuest: pagecast's guest, booted, is told by its status
// page; a QEMU started with pagecast's image that waits for a migration
// (whose guest may be any) is not taken for it. (A Linux guest's is
// checked in TestLinuxGuestDirtiesMemory.)
func TestRunsPagecastGuest(t *testing.T) {
	testutil.RequiresQEMU(t)
	if testing.Short() {
		t.Skip("starts QEMU")
	}
	for _, incoming := range []string{"", "defer"} {
		t.Run("incoming="+incoming, func(t *testing.T) {
			t.Parallel()
			v, err := qemu.Start(qemu.Options{MemoryBytes: 32 << 20, Accel: testutil.QEMUAccel(), Incoming: incoming, Cmdline: "workload=hotset"})
			if err != nil {
				t.Fatal(err)
			}
			defer v.Close()
			if incoming == "" {
				if _, err := v.WaitBanner(60 * time.Second); err != nil {
					t.Fatal(err)
				}
			}
			// The status page is written once the guest has booted
			// past its banner.
			deadline := time.Now().Add(10 * time.Second)
			for {
				own, err := qemu.RunsPagecastGuest(v.Monitor)
				if err != nil {
					t.Fatal(err)
				}
				if own != (incoming == "") {
					if incoming == "" && time.Now().Before(deadline) {
						time.Sleep(100 * time.Millisecond)
						continue
					}
					t.Fatalf("RunsPagecastGuest = %v, want %v", own, incoming == "")
				}
				break
			}
		})
	}
}
