package main

import (
	"fmt"
	"math"
	"os"
	"path/filepath"

	"github.com/urfave/cli/v2"

	"github.com/pagecast/pagecast/internal/units"
	"github.com/pagecast/pagecast/qemu"
	"github.com/pagecast/pagecast/tcg"
)

// maxPluginMemory is the most guest RAM the plugin records: its frames, up
// to the top of a q35's RAM, tcg.MaxPages at most (262142G).
var maxPluginMemory = uint64(tcg.MaxPages)<<tcg.PageShift - (1<<32 - qemu.LowMemoryOf("q35", math.MaxUint64))

func pluginCommand() *cli.Command {
	return &cli.Command{
		Name:  "plugin",
		Usage: "install pagecast's QEMU TCG plugin and print the -plugin option for a QEMU you start yourself",
		Description: "Under QEMU's TCG emulator there is no KVM dirty tracking for eBPF to watch: pagecast's TCG plugin,\n" +
			"loaded by QEMU, records the page of each guest store to RAM in shared memory (QEMU 7.2 names it by\n" +
			"its offset in guest RAM, QEMU 8.2 and later by its guest-physical frame; pagecast maps either), and\n" +
			"`pagecast profile --qmp` reads it from there. This writes the plugin (built into pagecast) to\n" +
			"--dir and prints the option to add to QEMU's command line. It loads in QEMU 7.2 to 10.x (run here:\n" +
			"7.2.22 and 10.0.2).\n\n" +
			"Example: pagecast plugin --dir /usr/local/lib/pagecast --memory 4G",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "dir", Value: ".", Usage: "where to write pagecast-dirty.so"},
			&cli.StringFlag{Name: "memory", Value: "4G", Usage: fmt.Sprintf("the largest guest RAM the plugin will record, 4K to %dG (sizes its shared memory: 2 bytes per 4 KiB page)", maxPluginMemory>>30)},
			&cli.StringFlag{Name: "shm", Usage: "shared memory file the plugin creates (default: /dev/shm/pagecast-tcg.<QEMU's pid>, found by profile through /proc)"},
		},
		Action: func(c *cli.Context) error {
			mem, err := units.ParseBytes(c.String("memory"))
			if err != nil {
				// It says what a size is: 3.5G is not one, though within range.
				return fmt.Errorf("--memory %q: want a size from 4K to %dG, such as 4G: %w", c.String("memory"), maxPluginMemory>>30, err)
			}
			if mem < 4096 || mem > maxPluginMemory {
				return fmt.Errorf("--memory %q: want a size from 4K to %dG (the plugin records at most %d pages of 4 KiB), such as 4G",
					c.String("memory"), maxPluginMemory>>30, uint64(tcg.MaxPages))
			}
			if err := os.MkdirAll(c.String("dir"), 0o755); err != nil {
				return fmt.Errorf("--dir: %w", err)
			}
			tcg.RemoveStale()  // areas of QEMUs killed before they could remove theirs
			qemu.RemoveStale() // and RAM files of vm runs killed so
			// QEMU 8.2 names pages by guest-physical frame, the hole below
			// 4 GiB counted; 7.2 by offset in RAM, and ignores pages past
			// the RAM's (qemu.PluginAddresses). The QEMU that will load it
			// may not be the one on PATH (review 55): the frames, for any.
			pages := qemu.PluginPages(qemu.Version{Major: 8, Minor: 2}, "", mem)
			so, err := tcg.WritePlugin(c.String("dir"))
			if err != nil {
				return err
			}
			if abs, err := filepath.Abs(so); err == nil {
				so = abs
			}
			out := c.App.Writer
			fmt.Fprintf(out, "wrote %s\n", so)
			fmt.Fprintf(out, "start QEMU under TCG with:\n  -accel tcg -plugin %s\n", tcg.PluginArg(so, c.String("shm"), pages))
			if pages > (mem+4095)/4096 {
				fmt.Fprintf(out, "(pages=%d: the guest-physical frames up to the top of a q35's %s of RAM, hole below 4 GiB included, as QEMU 8.2 names pages; QEMU 7.2 names them by offset in RAM and uses the first %d)\n",
					pages, c.String("memory"), (mem+4095)/4096)
			}
			fmt.Fprintln(out, "then: pagecast profile --qmp unix:QMP-SOCKET")
			return nil
		},
	}
}
