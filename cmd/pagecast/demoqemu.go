package main

import (
	"fmt"
	"io"
	"net"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/pagecast/pagecast/collector"
	"github.com/pagecast/pagecast/internal/units"
	"github.com/pagecast/pagecast/migrator"
	"github.com/pagecast/pagecast/qemu"
)

// tcgDemoDelay slows the demo guest's writes under TCG, which runs it far
// faster than KVM's instruction emulation did, to a rate where the
// forecast and the migrations have something to tell apart.
const tcgDemoDelay = 25000

// runQEMUDemo is the demo on a QEMU VM: run the pagecast guest, profile it
// (TCG plugin or eBPF), forecast, and migrate it QEMU to QEMU.
func runQEMUDemo(c *cli.Context, out io.Writer, why string) error {
	o, err := qemuGuestFlags(c)
	if err != nil {
		return err
	}
	accel, _, err := qemu.ResolveAccel(o.accel)
	if err != nil {
		return err
	}
	spec := c.String("workload")
	if accel == qemu.AccelTCG && !c.IsSet("workload") && o.workload.Delay == 0 {
		o.workload.Delay = tcgDemoDelay
		spec += fmt.Sprintf(",delay=%d", tcgDemoDelay)
	}
	vm, err := startQEMUVM(o)
	if err != nil {
		return err
	}
	defer vm.Close()
	fmt.Fprintf(out, "pagecast demo: %s guest, workload %s\n", units.FormatBytes(float64(o.memory)), spec)
	fmt.Fprintf(out, "runs on %s\n", vm.describe())
	if why != "" {
		fmt.Fprintf(out, "(%s)\n", why)
	}
	if _, err := vm.WaitBanner(60 * time.Second); err != nil {
		return err
	}
	interval := c.Duration("interval")
	col, err := collector.New(collector.Config{QMP: vm.QMPPath, Epoch: interval})
	if err != nil {
		return fmt.Errorf("profile the QEMU VM: %w", err)
	}
	defer col.Close()
	fmt.Fprintf(out, "dirty pages from: %s\n", col.Hook())
	alive := func() error {
		select {
		case <-vm.Done():
			return fmt.Errorf("qemu exited: %s", vm.Stderr())
		default:
			return nil
		}
	}
	epochs, err := demoWatch(c, out, vm, o.memory, collectorSource(col, o.memory, interval), alive)
	if err != nil {
		return err
	}
	st, _ := col.Stats()
	fmt.Fprintf(out, "the plugin recorded %d guest writes to RAM, dropped %d\n", st.Events, st.DroppedAll())
	col.Close() // frees QEMU's QMP socket for the migrations
	if c.Bool("no-migrate") {
		return nil
	}
	fmt.Fprintln(out)
	if len(epochs) == 0 {
		return fmt.Errorf("no epoch profiled in --duration %v", c.Duration("duration"))
	}
	return demoQEMUMigrations(c, out, vm, o)
}

// demoQEMUModes are the modes the QEMU demo migrates with: those QEMU has
// natively (predictive needs pagecast's engine, which does not move QEMU's
// RAM yet).
var demoQEMUModes = []string{migrator.ModePrecopy, migrator.MECOM, migrator.ModeThrottle, migrator.ModeTSMC}

// demoQEMUMigrations moves the QEMU VM to a fresh QEMU started with
// -incoming, once with each mode QEMU can do (each from where the last put
// it), checks that the guest runs on at the destination, and prints the
// figures side by side.
func demoQEMUMigrations(c *cli.Context, out io.Writer, src *qemuVM, o qemuVMOptions) error {
	bw, err := parseBandwidth(c.String("bandwidth"))
	if err != nil {
		return fmt.Errorf("--bandwidth: %w", err)
	}
	var modes []string
	for _, m := range strings.Split(c.String("modes"), ",") {
		if _, err := migrator.PlanQEMU(migrator.Params{Mode: m}, o.memory); err != nil {
			fmt.Fprintf(out, "skipping %s: %v\n", m, err)
			continue
		}
		modes = append(modes, m)
	}
	if len(modes) == 0 || modes[0] != migrator.ModePrecopy {
		modes = append([]string{migrator.ModePrecopy}, modes...) // the baseline of the comparison
	}
	fmt.Fprintf(out, "\nlive migration QEMU to QEMU on loopback with QEMU's own migration, link capped at %s/s, downtime limit %v:\n",
		units.FormatBytes(float64(bw)), migrator.DefaultDowntimeLimit)
	cur := src
	defer func() { cur.Close() }()
	var rows []qemuMigration
	for _, mode := range modes {
		port, err := freePort()
		if err != nil {
			return err
		}
		do := o
		do.qmp, do.incoming = "", fmt.Sprintf("tcp:127.0.0.1:%d", port)
		dst, err := startQEMUVM(do)
		if err != nil {
			return fmt.Errorf("%s: destination QEMU: %w", mode, err)
		}
		p := migrator.Params{Mode: mode, MaxBandwidth: bw, DowntimeLimit: migrator.DefaultDowntimeLimit, MaxRounds: migrator.DefaultMaxRounds}
		plan, err := migrator.SetupQEMU(cur.Monitor, dst.Monitor, p)
		if err == nil {
			err = migrator.Migrate(cur.Monitor, do.incoming)
		}
		if err != nil {
			dst.Close()
			return fmt.Errorf("%s migration: %w", mode, err)
		}
		bar := newProgressBar(c.App.ErrWriter, false)
		info, err := migrator.WaitQEMU(c.Context, cur.Monitor, &plan, 200*time.Millisecond, bar.update)
		bar.done()
		if err != nil {
			dst.Close()
			return fmt.Errorf("%s migration: %w (the guest keeps running on the source)", mode, err)
		}
		before, _ := cur.GuestStatus()
		after, err := waitProgress(dst, before.TotalProgress(), 10*time.Second)
		if err != nil {
			dst.Close()
			return fmt.Errorf("%s migration: %w", mode, err)
		}
		fmt.Fprintf(out, "  %-10s done: guest running on the destination QEMU (progress %d -> %d); capabilities: %s\n",
			mode, before.TotalProgress(), after, strings.Join(append([]string{"none"}, plan.Capabilities...)[min(1, len(plan.Capabilities)):], ", "))
		rows = append(rows, qemuMigration{mode: mode, info: info, forced: plan.Forced})
		cur.Close()
		cur = dst
	}
	fmt.Fprintln(out)
	writeQEMUMigrationTable(out, rows)
	fmt.Fprintln(out, "\nagainst precopy:")
	pre := rows[0].info
	for _, r := range rows[1:] {
		fmt.Fprintf(out, "  %-10s %4.0f%% of the bytes, %4.0f%% of the downtime, %4.0f%% of the total time\n", r.mode,
			100*float64(r.info.RAM.Transferred)/float64(max(pre.RAM.Transferred, 1)),
			100*float64(r.info.Downtime)/float64(max(pre.Downtime, 1)),
			100*float64(r.info.TotalTime)/float64(max(pre.TotalTime, 1)))
	}
	return nil
}

// waitProgress waits until the guest's progress counter passes from,
// which shows it running, and returns the counter.
func waitProgress(vm *qemuVM, from uint64, timeout time.Duration) (uint64, error) {
	deadline := time.Now().Add(timeout)
	for {
		st, err := vm.GuestStatus()
		if err == nil && st.TotalProgress() > from {
			return st.TotalProgress(), nil
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("the guest makes no progress on the destination in %v (status %v, %v)", timeout, st, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

type qemuMigration struct {
	mode   string
	info   migrator.Info
	forced bool // switch-over forced at the round cap
}

// writeQEMUMigrationTable prints QEMU migrations side by side, one row each.
func writeQEMUMigrationTable(w io.Writer, rows []qemuMigration) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "mode\ttotal\tdowntime\tsetup\tbytes\tdirty syncs\tthrottle\tpulled\tstopped because\t")
	ms := func(v int64) string { return (time.Duration(v) * time.Millisecond).String() }
	for _, r := range rows {
		i := r.info
		why := "fit the limit"
		switch {
		case r.forced:
			why = "round cap"
		case i.RAM.PostcopyRequests > 0 || i.RAM.PostcopyBytes > 0:
			why = "post-copy"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d%%\t%d\t%s\t\n", r.mode, ms(i.TotalTime), ms(i.Downtime), ms(i.SetupTime),
			units.FormatBytes(float64(i.RAM.Transferred)), i.RAM.DirtySyncCount, i.CPUThrottlePercentage, i.RAM.PostcopyRequests, why)
	}
	tw.Flush()
}
