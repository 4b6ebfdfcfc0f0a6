package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/pagecast/pagecast/internal/scratch"
	"github.com/pagecast/pagecast/internal/units"
	"github.com/pagecast/pagecast/qemu"
	"github.com/pagecast/pagecast/tcg"
)

// TestPluginMemoryRange: pagecast plugin prints a pages= the plugin takes
// (1 to tcg.MaxPages), the RAM's pages (the plugin names a page by its
// offset in RAM: --memory 4G printed pages= for 5 GiB, the hole below
// 4 GiB counted), and refuses, before printing or writing anything, a
// --memory that would need more or less.
func TestPluginMemoryRange(t *testing.T) {
	for _, mem := range []string{"4K", "32M", "4G", "262142G"} {
		stdout, _, err := runApp(t, "plugin", "--dir", t.TempDir(), "--memory", mem)
		if err != nil {
			t.Fatalf("--memory %s: %v", mem, err)
		}
		m := regexp.MustCompile(`,pages=(\d+)\n`).FindStringSubmatch(stdout)
		if m == nil {
			t.Fatalf("--memory %s printed no pages=:\n%s", mem, stdout)
		}
		n, err := strconv.ParseUint(m[1], 10, 64)
		if err != nil || n < 1 || n > tcg.MaxPages {
			t.Errorf("--memory %s: pages=%s, which the plugin refuses (want 1 to %d)", mem, m[1], uint64(tcg.MaxPages))
		}
		// Frames up to a q35's top of RAM: QEMU 8.2 names pages by
		// address, whatever QEMU is on PATH (review 55).
		if bytes, _ := units.ParseBytes(mem); n != qemu.PluginPages(qemu.Version{Major: 8, Minor: 2}, "q35", bytes) {
			t.Errorf("--memory %s: pages=%d, want %d (a q35's frames)", mem, n, qemu.PluginPages(qemu.Version{Major: 8, Minor: 2}, "q35", bytes))
		}
	}
	for _, mem := range []string{"1K", "4095", "262143G", "256T", "10E", "18446744073709551615"} {
		dir := filepath.Join(t.TempDir(), "plug")
		stdout, _, err := runApp(t, "plugin", "--dir", dir, "--memory", mem)
		want := `--memory "` + mem + `": want a size from 4K to 262142G (the plugin records at most 68719476736 pages of 4 KiB)`
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("--memory %s: %v, want %q", mem, err, want)
		}
		if stdout != "" {
			t.Errorf("--memory %s printed %q, want nothing", mem, stdout)
		}
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("--memory %s made --dir: %v", mem, err)
		}
	}
}

// TestPluginRemovesStaleRAM: the work directory of a vm run killed with
// SIGKILL (its guest's RAM file in /dev/shm, its lock held by nobody) is
// removed by pagecast plugin and pagecast profile too, not only by the
// next vm run.
func TestPluginRemovesStaleRAM(t *testing.T) {
	for _, args := range [][]string{{"plugin", "--dir", t.TempDir()}, {"profile", "--qmp", "unix:/nonexistent/q.sock"}} {
		dead, err := os.MkdirTemp(scratch.Base(), qemu.ScratchPrefix)
		if err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(dead)
		for _, f := range []string{".pagecast-lock", "ram"} {
			if err := os.WriteFile(filepath.Join(dead, f), nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		runApp(t, args...) // profile fails at the socket, after its sweep
		if _, err := os.Stat(dead); !os.IsNotExist(err) {
			t.Errorf("pagecast %s left %s, whose maker is gone (%v)", strings.Join(args, " "), dead, err)
		}
	}
}
