package main

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/pagecast/pagecast/internal/units"
	"github.com/pagecast/pagecast/vmm"
)

func demoCommand() *cli.Command {
	flags := vmFlags()
	for _, f := range flags {
		if sf, ok := f.(*cli.StringFlag); ok && sf.Name == "memory" {
			sf.Value = "64M"
		}
	}
	return &cli.Command{
		Name:  "demo",
		Usage: "the main job end to end on a local VM: run it and show its dirtying live",
		Description: "Boots a small pagecast VM running a hot-set workload and prints, every interval, how many\n" +
			"pages it dirtied, the rate, and a strip showing where in guest memory the writes land.",
		Flags: append(flags,
			&cli.DurationFlag{Name: "duration", Value: 5 * time.Second, Usage: "how long to watch"},
			&cli.DurationFlag{Name: "interval", Value: 500 * time.Millisecond, Usage: "time between lines"},
		),
		Action: func(c *cli.Context) error {
			return runDemo(c, c.App.Writer)
		},
	}
}

func runDemo(c *cli.Context, out io.Writer) error {
	log := slog.Default()
	vm, err := newVM(c, log)
	if err != nil {
		return err
	}
	defer vm.Close()
	if err := vm.Start(); err != nil {
		return err
	}
	dl, err := vm.StartDirtyLog()
	if err != nil {
		return err
	}
	defer dl.Close()

	pages := vm.MemoryBytes() / vmm.PageSize
	fmt.Fprintf(out, "pagecast demo: %s guest, %d vCPU, workload %s, dirty tracking: %s\n",
		units.FormatBytes(float64(vm.MemoryBytes())), vm.VCPUs(), c.String("workload"), vm.DirtyMode())
	fmt.Fprintf(out, "each strip cell is %s of guest memory, from address 0 on the left; darker = more pages dirtied\n\n",
		units.FormatBytes(float64(pages/stripWidth*vmm.PageSize)))
	fmt.Fprintf(out, "%7s %9s %11s %12s  %s\n", "time", "pages", "rate", "guest writes", "where")

	start := time.Now()
	last := start
	lastProgress := uint64(0)
	for time.Since(start) < c.Duration("duration") {
		time.Sleep(c.Duration("interval"))
		set, err := dl.Harvest()
		if err != nil {
			return err
		}
		now := time.Now()
		st, err := vm.GuestStatus()
		if err != nil {
			return err
		}
		if state, gerr := vm.State(); gerr != nil {
			return fmt.Errorf("guest stopped (%s): %w", state, gerr)
		}
		dt := now.Sub(last).Seconds()
		progress := st.TotalProgress()
		fmt.Fprintf(out, "%6.1fs %9d %9s/s %12d  |%s|\n", now.Sub(start).Seconds(), set.Count(),
			units.FormatBytes(float64(set.Count()*vmm.PageSize)/dt), progress-lastProgress, strip(set))
		last, lastProgress = now, progress
	}
	if err := vm.Pause(); err != nil {
		return err
	}
	st, _ := vm.GuestStatus()
	fmt.Fprintf(out, "\nVM paused after %.1fs and shut down cleanly; guest status: %s\n",
		time.Since(start).Seconds(), st)
	return nil
}

const stripWidth = 64

// strip draws the share of dirtied pages in each of stripWidth equal
// slices of guest memory.
func strip(set *vmm.Bitmap) string {
	const shades = " .:-=+*#%@"
	per := (set.Pages() + stripWidth - 1) / stripWidth
	counts := make([]uint64, stripWidth)
	set.ForEach(func(gfn uint64) { counts[gfn/per]++ })
	var b strings.Builder
	for _, n := range counts {
		i := 0
		if n > 0 {
			i = 1 + int(float64(n)/float64(per)*float64(len(shades)-2)+0.5)
			i = min(i, len(shades)-1)
		}
		b.WriteByte(shades[i])
	}
	return b.String()
}
