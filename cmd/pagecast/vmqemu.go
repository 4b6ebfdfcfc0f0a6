package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/pagecast/pagecast/guest"
	"github.com/pagecast/pagecast/internal/scratch"
	"github.com/pagecast/pagecast/internal/units"
	"github.com/pagecast/pagecast/migrator"
	"github.com/pagecast/pagecast/qemu"
	"github.com/pagecast/pagecast/qemuguest"
	"github.com/pagecast/pagecast/qmpserver"
	"github.com/pagecast/pagecast/tcg"
)

// Monitors `vm run` can run the guest under.
const (
	monitorPagecast = "pagecast"
	monitorQEMU     = "qemu"
	monitorAuto     = "auto"
)

// qemuVM is a QEMU running the pagecast guest for pagecast's commands, with
// the hook that sees its writes: the TCG plugin under TCG, KVM's dirty
// ring (for the eBPF programs) under KVM.
type qemuVM struct {
	*qemu.VM
	accel, why string
	dir        string
	qmp        string // the user's QMP socket (--qmp), which QEMU leaves behind when it exits
	qmpExtra   string // and the second one (--qmp-extra)
	// staged is where QEMU listens for the user's QMP until the guest is
	// up (publishQMP moves it to qmp); "" once moved, or where it never
	// was staged.
	staged string
}

// stagedQMP is where QEMU listens for a booting VM's --qmp until its guest
// is up: beside it, hidden, so that the move is a rename on the same file
// system. A client that attached to a KVM guest still in its firmware (as
// "until [ -S sock ]" does) froze it there under kvm-pvm for good (walk
// 74); the socket now appears once the guest is up.
func stagedQMP(path string) string {
	return filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".booting")
}

// publishQMP puts the user's QMP socket where --qmp said, once the guest
// is up (or has been given its time to come up).
func (v *qemuVM) publishQMP() error {
	if v.staged == "" {
		return nil
	}
	// Not over whatever took the path while the guest booted, as
	// rename(2) would (review 77): QEMU's own bind refused that.
	if err := unix.Renameat2(unix.AT_FDCWD, v.staged, unix.AT_FDCWD, v.qmp, unix.RENAME_NOREPLACE); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("--qmp %s: something made it while the guest booted: leave it to this VM, or give another path", v.qmp)
		}
		return fmt.Errorf("--qmp: move QEMU's socket into place: %w", err)
	}
	v.staged, v.VM.QMPPath = "", v.qmp
	return nil
}

// qemuVMOptions are what startQEMUVM needs beyond qemu.Options.
type qemuVMOptions struct {
	accel     string // --accel
	ringSize  int    // KVM dirty ring entries per vCPU
	ringGiven bool   // --ring-size given
	qmp       string // socket path for other clients; "" for one in the work directory
	qmpExtra  string // a second one, there from QEMU's start (--qmp-extra); "" for none
	incoming  string // QEMU -incoming URI ("defer": pagecast's receiver feeds it)
	name      string // QEMU's -name (--name)
	memory    uint64
	vcpus     int // a Linux guest's, or an incoming one's; the pagecast guest has one
	workload  guest.Workload
	mix       guest.Mix
	seed      uint64
	// A Linux kernel to boot instead of the pagecast guest (--kernel,
	// --initrd, --append); workload, mix and seed do not apply to it.
	kernel, initrd, append string
}

func startQEMUVM(o qemuVMOptions) (_ *qemuVM, err error) {
	accel, why, err := qemu.ResolveAccel(o.accel)
	if err != nil {
		return nil, err
	}
	if accel == qemu.AccelTCG && o.ringGiven {
		// As --dirty and --kvm are (walk 160: taken without a word).
		return nil, fmt.Errorf("--ring-size sizes QEMU's KVM dirty ring (--accel kvm); this QEMU runs under TCG (%s), where pagecast's plugin marks the dirty pages and there is no ring", why)
	}
	dir, err := scratch.Dir(scratch.Base(), qemu.ScratchPrefix)
	if err != nil {
		return nil, fmt.Errorf("qemu work directory: %w", err)
	}
	defer func() {
		if err != nil {
			scratch.Remove(dir)
		}
	}()
	opts := qemu.Options{
		Accel: accel, MemoryBytes: o.memory, VCPUs: o.vcpus, Cmdline: o.workload.Cmdline(1), Mix: o.mix, Seed: o.seed,
		Dir: dir, QMP: o.qmp, Incoming: o.incoming, Name: o.name,
		Kernel: o.kernel, Initrd: o.initrd, Append: o.append,
	}
	if o.qmpExtra != "" {
		// As qemu.Start gives --qmp's: its commas doubled.
		opts.Extra = append(opts.Extra, "-chardev", "socket,id=qmp-extra,path="+strings.ReplaceAll(o.qmpExtra, ",", ",,")+",server=on,wait=off",
			"-mon", "chardev=qmp-extra,mode=control")
	}
	staged := ""
	// Not where the staged name would pass a socket path's 108 bytes
	// (sun_path) that the plain one fits in.
	if o.qmp != "" && o.incoming == "" && len(stagedQMP(o.qmp)) < 108 {
		staged = stagedQMP(o.qmp)
		if err := qmpserver.ClearStaleSocket(staged); err != nil {
			return nil, fmt.Errorf("--qmp: %w", err)
		}
		opts.QMP = staged
	}
	if o.kernel != "" {
		// Decompressed on the host, a bzImage boots seconds sooner under TCG;
		// if that fails, QEMU boots the bzImage itself.
		if pvh, err := qemu.PVHKernel(o.kernel, dir); err == nil {
			opts.Kernel = pvh
		}
	}
	if accel == qemu.AccelTCG {
		so, err := tcg.WritePlugin(dir)
		if err != nil {
			return nil, err
		}
		opts.Plugin = tcg.PluginArg(so, filepath.Join(dir, "dirty.shm"), qemu.PluginPagesFor(opts.Binary, "pc", o.memory))
	} else {
		opts.DirtyRingSize = o.ringSize
	}
	vm, err := qemu.Start(opts)
	if err != nil {
		// QEMU made them before it failed (walk 152: an --incoming port in
		// use left --qmp's socket behind); only where nobody listens.
		for _, sock := range []string{o.qmp, staged, o.qmpExtra} {
			if sock != "" {
				qmpserver.ClearStaleSocket(sock)
			}
		}
	}
	if err != nil && staged != "" && strings.Contains(err.Error(), staged) {
		// The user gave the other name (walk 78).
		return nil, fmt.Errorf("--qmp %s: QEMU listens at %s beside it until the guest is up, and could not make it there: %w", o.qmp, staged, err)
	}
	if err != nil {
		if accel == qemu.AccelTCG {
			if perr := tcg.ExplainLoadError(err.Error()); perr != nil {
				return nil, perr
			}
		}
		return nil, err
	}
	return &qemuVM{VM: vm, accel: accel, why: why, dir: dir, qmp: o.qmp, qmpExtra: o.qmpExtra, staged: staged}, nil
}

// describe says which accelerator and hook the VM uses, and why.
func (v *qemuVM) describe() string {
	if v.accel == qemu.AccelTCG {
		return fmt.Sprintf("QEMU under TCG, QEMU's emulator (%s); dirty pages from pagecast's TCG plugin inside QEMU", v.why)
	}
	return fmt.Sprintf("QEMU under KVM (%s); dirty pages from pagecast's eBPF programs on KVM's dirty ring", v.why)
}

func (v *qemuVM) Close() error {
	err := v.VM.Close()
	scratch.Remove(v.dir)
	if v.qmp != "" {
		qmpserver.ClearStaleSocket(v.qmp) // only where nobody listens: QEMU has exited
	}
	if v.staged != "" {
		qmpserver.ClearStaleSocket(v.staged)
	}
	if v.qmpExtra != "" {
		qmpserver.ClearStaleSocket(v.qmpExtra)
	}
	return err
}

func qemuVMFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "monitor", Value: monitorAuto,
			Usage: "what runs the guest: pagecast (pagecast's own KVM monitor), qemu (QEMU, with KVM or TCG), or auto: the one a flag given is for, else pagecast where KVM is usable and QEMU under TCG where it is not"},
		&cli.StringFlag{Name: "engine", Value: enginePagecast,
			Usage: "with --monitor qemu --incoming: pagecast (pagecast's receiver writes the guest RAM, QEMU's migration brings only the device state; from pagecast migrate) or qemu (--incoming is QEMU's own -incoming, for QEMU's migration)"},
		&cli.StringFlag{Name: "accel", Value: qemu.AccelAuto,
			Usage: "with --monitor qemu: auto (KVM where /dev/kvm works, unless it is kvm-pvm's, which emulates the guest; else TCG), kvm or tcg"},
		&cli.StringFlag{Name: "kernel",
			Usage: "with --monitor qemu: boot this Linux kernel (a bzImage such as /boot/vmlinuz-*, or a vmlinux) instead of the pagecast guest"},
		&cli.StringFlag{Name: "initrd", Usage: "with --kernel: its initramfs (qemu.BuildInitramfs makes one from busybox-static)"},
		&cli.StringFlag{Name: "append", Value: qemu.LinuxAppend,
			Usage: "with --kernel: the kernel command line (console=ttyS0 goes first)"},
	}
}

// qemuGuestFlags reads the flags that describe the pagecast guest on QEMU
// (vmFlags and qemuVMFlags).
func qemuGuestFlags(c *cli.Context) (qemuVMOptions, error) {
	o := qemuVMOptions{accel: c.String("accel"), ringSize: c.Int("ring-size"), ringGiven: c.IsSet("ring-size"), seed: c.Uint64("seed")}
	// Here, not in vm run alone: the demo under QEMU took them unsaid
	// (walk 86).
	if c.IsSet("dirty") {
		return o, errors.New("--dirty chooses KVM's dirty log on pagecast's own monitor; with --monitor qemu the dirty pages come from pagecast's TCG plugin " +
			"(--accel tcg) or from eBPF on QEMU's KVM dirty ring (--accel kvm, sized by --ring-size)")
	}
	if c.IsSet("kvm") {
		return o, errors.New("--kvm is pagecast's own monitor's KVM device; with --monitor qemu QEMU opens /dev/kvm itself (--accel kvm)")
	}
	n := c.Int("vcpus")
	switch {
	case n < 1 || n > qemu.MaxVCPUs:
		return o, fmt.Errorf("--vcpus %d: want 1 to %d", n, qemu.MaxVCPUs)
	case n != 1 && c.String("kernel") == "" && c.String("incoming") == "":
		// A Linux guest brings its vCPUs up, and a VM waiting for a
		// migration takes the source's (walk 80: a Linux guest of 4 was
		// refused, as the pagecast guest is).
		why := fmt.Sprintf("--vcpus %d: the pagecast guest starts extra vCPUs only under pagecast's own monitor", n)
		if c.Command.Name != "run" { // demo has neither --kernel nor --incoming (review 81)
			return o, errors.New(why)
		}
		return o, fmt.Errorf("%s; under QEMU (--monitor qemu, or auto without /dev/kvm), --vcpus is for a Linux guest (--kernel) and for a VM waiting for a migration (--incoming, the source's count)", why)
	}
	o.vcpus = n
	var err error
	if o.memory, err = units.ParseBytes(c.String("memory")); err != nil {
		return o, fmt.Errorf("--memory: %w", err)
	}
	if o.workload, err = guest.ParseWorkload(c.String("workload")); err != nil {
		return o, fmt.Errorf("--workload: %w", err)
	}
	if o.mix, err = guest.ParseMix(c.String("mix")); err != nil {
		return o, fmt.Errorf("--mix: %w", err)
	}
	return o, nil
}

// runQEMU is `vm run --monitor qemu`: QEMU runs the pagecast guest until
// SIGINT, SIGTERM or QEMU's own end (quit on its QMP socket).
// qmpSocketFlag is the path of QMP socket flag name (unix:PATH), cleared of
// a socket no one listens on; "" where it is not given.
func qmpSocketFlag(c *cli.Context, name string) (string, error) {
	spec := c.String(name)
	if spec == "" {
		return "", nil
	}
	path, ok := strings.CutPrefix(spec, "unix:")
	if !ok {
		return "", fmt.Errorf("--%s %q: want unix:PATH", name, spec)
	}
	if err := qmpserver.ClearStaleSocket(path); err != nil {
		return "", fmt.Errorf("--%s: %w", name, err) // a live VM's socket, or not a socket
	}
	return path, nil
}

func runQEMU(ctx context.Context, c *cli.Context, log *slog.Logger) error {
	o, err := qemuGuestFlags(c)
	if err != nil {
		return err
	}
	o.kernel, o.initrd, o.append = c.String("kernel"), c.String("initrd"), c.String("append")
	o.name = c.String("name")
	for _, f := range []string{"workload", "mix", "seed"} {
		if o.kernel != "" && c.IsSet(f) {
			return fmt.Errorf("--%s is for the pagecast guest; a Linux guest (--kernel) runs what its initramfs runs", f)
		}
	}
	if o.kernel == "" && (c.IsSet("initrd") || c.IsSet("append")) {
		return fmt.Errorf("--initrd and --append go with --kernel")
	}
	if o.qmp, err = qmpSocketFlag(c, "qmp"); err != nil {
		return err
	}
	if o.qmpExtra, err = qmpSocketFlag(c, "qmp-extra"); err != nil {
		return err
	}
	// With pagecast's engine the receiver listens on --incoming and QEMU
	// waits (-incoming defer) for the device state it forwards; with
	// QEMU's, --incoming is QEMU's own.
	var incoming net.Listener
	var serverTLS *tls.Config
	switch engine := c.String("engine"); {
	case c.String("incoming") == "" && tlsSet(c):
		return errors.New("--tls-cert, --tls-key, --tls-ca: a QEMU VM's migrations out are driven by pagecast migrate: give them to it (here they are for --incoming)")
	case c.String("incoming") == "":
	case engine == engineQEMU && tlsSet(c):
		return errors.New("--tls-cert, --tls-key, --tls-ca: QEMU's own migration (--engine qemu) is taken here in plain TCP; pagecast's TLS needs --engine pagecast")
	case engine == engineQEMU:
		if !strings.HasPrefix(c.String("incoming"), "tcp:") {
			return fmt.Errorf("--incoming %q: want tcp:HOST:PORT", c.String("incoming"))
		}
		o.incoming = c.String("incoming")
	case engine == enginePagecast:
		if serverTLS, err = tlsConfig(c, true); err != nil {
			return err
		}
		l, err := migrator.Listen(c.String("incoming"), serverTLS)
		if err != nil {
			return fmt.Errorf("--incoming: %w", err)
		}
		defer l.Close()
		incoming, o.incoming = l, "defer"
	default:
		return fmt.Errorf("--engine %q: want pagecast or qemu", engine)
	}
	vm, err := startQEMUVM(o)
	if err != nil {
		return err
	}
	defer vm.Close()
	out := c.App.Writer
	guestName := "pagecast guest"
	switch {
	case incoming != nil || o.incoming != "":
		guestName = "a migration's guest" // whatever the source runs
	case o.kernel != "":
		guestName = "Linux guest " + o.kernel
	}
	banner := vm.describe()
	if incoming == nil && o.incoming != "" {
		// QEMU's own migration tracks the pages it sends itself: the hook
		// is for profiles of the guest once it runs here (walk 78).
		banner += " (for profiles of the guest once it runs here; QEMU's migration tracks its own dirty pages)"
	}
	fmt.Fprintf(out, "%s on %s\n", guestName, banner)
	qmpSaid := vm.QMPPath
	if vm.staged != "" {
		qmpSaid = vm.qmp + " once the guest is up"
	}
	// Which QEMU, where several are installed (walk 121: QEMU 10 was
	// taken from PATH unsaid).
	which := vm.Binary
	if v, err := qemu.QueryVersion(vm.Monitor); err == nil {
		which = v.String() + ", " + which
	}
	fmt.Fprintf(out, "QEMU pid %d (%s), %s RAM shared at %s, QMP unix:%s\n", vm.PID(), which, units.FormatBytes(float64(o.memory)),
		filepath.Join(vm.dir, "ram"), qmpSaid)
	arrived := "" // the run state QEMU's own migration left the guest in
	if incoming != nil {
		fmt.Fprintf(out, "serial console in %s (what the guest writes once it runs here)\n", vm.SerialPath())
		fmt.Fprintf(out, "waiting for an incoming migration (pagecast's engine) on %s%s\n", c.String("incoming"), overTLS(serverTLS))
		dest, err := qemuguest.DestFromVM(vm.VM)
		if err != nil {
			return err
		}
		sayReady()
		res, err := receive(ctx, incoming, qemuDestination(dest, c.Bool("paused")), serverTLS, log, nil, nil)
		if err != nil {
			return err
		}
		printReceived(out, res, c.Bool("paused"))
		if res.HeldPaused {
			arrived = "paused"
			sayOutcome(c, "a migration was received: the guest is here, paused as it was on the source")
		} else {
			sayOutcome(c, "a migration was received: the guest ran here")
		}
	} else if o.incoming != "" {
		fmt.Fprintf(out, "serial console in %s (what the guest writes once it runs here)\n", vm.SerialPath())
		fmt.Fprintf(out, "waiting for an incoming QEMU migration on %s\n", o.incoming)
		if c.Bool("paused") {
			// Under -incoming QEMU's stop turns its autostart off: the
			// guest stays paused once QEMU's migration has brought it.
			if err := qemu.QMP(vm.Monitor, "stop", nil, nil); err != nil {
				return fmt.Errorf("--paused: %w", err)
			}
		}
		sayReady()
		st, err := waitIncomingQEMU(ctx, vm.VM, out)
		if err != nil {
			return err
		}
		arrived = st
		if st == "paused" && c.Bool("paused") {
			st += " (--paused): QMP cont runs it"
		}
		fmt.Fprintf(out, "QEMU's migration received; guest %s\n", st)
	} else if o.kernel != "" {
		// An initramfs from qemu.BuildInitramfs prints the marker; another may not.
		fmt.Fprintf(out, "serial console in %s\n", vm.SerialPath())
		line, err := vm.WaitSerialContext(ctx, qemu.LinuxStartMarker, 120*time.Second)
		select {
		case <-vm.Done():
			return qemuEnded(vm.VM)
		default:
		}
		if ctx.Err() != nil {
			return nil // stopped, as vm run is stopped
		}
		if errors.Is(err, qemu.ErrKernelPanic) {
			// It will not come up: nothing to keep running for. Its
			// serial log goes with the VM's directory: kept where the
			// user can read all of it (walk 152: the message pointed at
			// a log already gone).
			if kept := keepSerialLog(vm.SerialPath(), vm.PID()); kept != "" {
				return fmt.Errorf("%w (the whole serial console is kept in %s)", err, kept)
			}
			return err
		}
		// In place before it is said: scripts take "guest up" for
		// ready (review 77).
		if err := vm.publishQMP(); err != nil {
			return err
		}
		if err != nil {
			fmt.Fprintf(out, "no %q line on the serial console yet; the guest keeps running\n", qemu.LinuxStartMarker)
		} else {
			fmt.Fprintf(out, "guest up: %s\n", line)
		}
	} else {
		banner, err := vm.WaitBannerContext(ctx, 60*time.Second)
		if ctx.Err() != nil {
			return nil // stopped, as vm run is stopped
		}
		if err != nil {
			return err
		}
		if err := vm.publishQMP(); err != nil {
			return err
		}
		fmt.Fprintf(out, "guest up: %s\n", readableBanner(banner))
		if note := clampNote(banner, o.workload); note != "" {
			fmt.Fprintf(out, "note: %s\n", note)
		}
	}
	sayReady() // a booted guest's QMP socket is in place (an incoming one's said so before it waited)
	guest := slog.String("workload", c.String("workload"))
	switch {
	case incoming != nil || o.incoming != "":
		guest = slog.String("guest", "migrated")
	case o.kernel != "":
		guest = slog.String("kernel", o.kernel)
	}
	msg := "virtual machine running"
	switch {
	case c.Bool("paused") && (incoming != nil || o.incoming != ""):
		msg = "virtual machine paused (--paused; cont runs it)"
	case arrived != "" && arrived != "running":
		// A QMP stop sent while it waited (walk 111: logged as running).
		msg = "virtual machine " + arrived
	}
	log.Info(msg, "monitor", "qemu", "accel", vm.accel, "pid", vm.PID(),
		guest, "qmp", vm.QMPPath)
	// A guest migrated away leaves its QEMU paused in postmigrate, holding
	// the guest's RAM, and nothing said so (walk 80: a 5 GiB source ran on
	// silently); a guest run here again by cont is said too.
	// A mark left for an earlier QEMU of this PID (qemuguest's sweep
	// removes them only when some pagecast takes a lock): this guest was
	// paused by no migrate (review 105).
	qemuguest.ForgetSwitchover(vm.PID())
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	states := watchRunState(wctx, vm.VM)
	away := false
	for {
		select {
		case <-ctx.Done():
			return waitOutgoing(vm.VM, c.App.ErrWriter, log)
		case <-vm.Done():
			return qemuEnded(vm.VM)
		case st := <-states:
			switch {
			case st == stateAbandoned:
				who, _ := qemuguest.AbandonedSwitchover(vm.PID())
				fmt.Fprintf(c.App.ErrWriter, "pagecast: warning: %s\n", abandonedNote(who))
				away = true
			case st == "postmigrate":
				fmt.Fprintf(out, "the guest's migration out has completed (QEMU's run state postmigrate): this QEMU keeps a paused copy of its %s of RAM until vm run is stopped (Ctrl-C, SIGTERM) or QMP quit\n",
					units.FormatBytes(float64(o.memory)))
				away = true
			case away && st == "running":
				fmt.Fprintln(out, "the guest runs here again (run state running)")
				away = false
				// A killed migrate's mark goes: the guest is here.
				qemuguest.ForgetSwitchover(vm.PID())
			}
		}
	}
}

// stateAbandoned is watchRunState's paused or postmigrate where a
// pagecast migrate paused the guest for its switch-over and was killed
// before the end (qemuguest.AbandonedSwitchover).
const stateAbandoned = "abandoned"

// abandonedNote says what a guest left paused by a killed migrate means.
func abandonedNote(who string) string {
	ended := "exited before the migration ended"
	if strings.HasSuffix(who, qemuguest.Unconfirmed) {
		ended = "exited" // after a migration completed but unconfirmed (walk 123)
	}
	return fmt.Sprintf("%s paused this guest for its switch-over and %s: "+
		"the guest may be only here, paused (whatever QEMU's run state says); if the destination does not run it, QMP cont runs it here", who, ended)
}

// watchRunState sends QEMU's run state each time it changes, polled every
// second on a goroutine of its own, so that a QEMU that does not answer
// holds up no signal (review 81: vm run waited on its query-status and
// took no SIGTERM). A postmigrate while a pagecast migrate holds the
// guest's dirty log is sent as "migrating": its state went ahead of the
// commit, and a failure yet resumes the guest here.
func watchRunState(ctx context.Context, vm *qemu.VM) <-chan string {
	states := make(chan string)
	go func() {
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		last := ""
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			st, err := qemu.RunState(vm.Monitor)
			if err != nil {
				continue
			}
			if st == "postmigrate" || st == "paused" {
				if _, held := qemuguest.MigrationHolder(vm.PID()); held && st == "postmigrate" {
					st = "migrating"
				} else if _, ok := qemuguest.AbandonedSwitchover(vm.PID()); ok && !held {
					st = stateAbandoned
				}
			}
			if st == last {
				continue
			}
			last = st
			select {
			case states <- st:
			case <-ctx.Done():
				return
			}
		}
	}()
	return states
}

// waitOutgoing is vm run's stop (SIGINT, SIGTERM) of a QEMU whose guest a
// pagecast migrate is moving, with either engine, from the moment it
// connected (qemuguest.MigrationHolder): it says so and waits for that
// migration to end (the guest then runs on the destination, or here if it
// failed), or for a second signal; stopping QEMU at once ended the guest
// and failed the migration, unsaid (found by a new-user walk).
func waitOutgoing(vm *qemu.VM, errw io.Writer, log *slog.Logger) error {
	// QEMU's own migration counts too, whoever started it: a pagecast
	// migrate killed with SIGKILL leaves it running (walk 103), and so
	// may libvirt.
	migrating := func() (string, bool) {
		if who, ok := qemuguest.MigrationHolder(vm.PID()); ok {
			return who, true
		}
		st, err := within(qemuAnswerWait, func() (string, error) { return qemuMigrationStatus(vm.Monitor), nil })
		if err == nil && underway(st) {
			if st == migrator.StatusPostcopyPaused {
				// It ends only by a recovery (migrate-recover), or
				// never: said, as the wait may be for good (CI 47).
				return fmt.Sprintf("QEMU's own migration (query-migrate: %s: the link broke in post-copy; the guest ran on at the destination, "+
					"which lacks pages still here, until a migrate-recover resumes it; if the destination QEMU is gone, the guest went with it, and nothing here can run it again)", st), true
			}
			return fmt.Sprintf("QEMU's own migration (query-migrate: %s)", st), true
		}
		return "", false
	}
	// A migrate killed while its engine held the guest paused for the
	// switch-over, before the stop or while vm run waited for it.
	abandoned := func() (bool, error) {
		if who, ok := qemuguest.AbandonedSwitchover(vm.PID()); ok {
			if st, _ := within(qemuAnswerWait, func() (string, error) { return qemu.RunState(vm.Monitor) }); st == "postmigrate" || st == "paused" {
				return true, waitSecondSignal(vm, errw, log, abandonedNote(who)+": stopping QEMU now may end the guest")
			}
		}
		return false, nil
	}
	who, ok := migrating()
	if !ok {
		if left, err := abandoned(); left {
			return err
		}
		log.Info("shutting down", "monitor", "qemu", "pid", vm.PID())
		return nil
	}
	fmt.Fprintf(errw, "pagecast: %s is migrating this guest: stopping QEMU now would end the guest and fail that migration; "+
		"waiting for the migration to end (a second signal stops QEMU anyway)\n", who)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sig)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-sig:
			fmt.Fprintln(errw, "pagecast: stopping QEMU during the migration: the guest ends, and the migration fails")
			return nil
		case <-vm.Done():
			return qemuEnded(vm)
		case <-tick.C:
			if _, ok := migrating(); ok {
				continue
			}
			if left, err := abandoned(); left {
				return err
			}
			st, _ := within(qemuAnswerWait, func() (string, error) { return qemu.RunState(vm.Monitor) })
			if st == "postmigrate" {
				fmt.Fprintf(errw, "pagecast: the migration has ended (run state %s here); stopping QEMU\n", st)
				return nil
			}
			// Failed or cancelled: the guest is here, and the stop asked
			// for ends it (walk 103: said as if nothing were lost).
			fmt.Fprintf(errw, "pagecast: the migration has ended without moving the guest (run state %s here): stopping QEMU, as asked, ends the guest\n", st)
			return nil
		}
	}
}

// qemuAnswerWait is how long vm run's stop waits for QEMU to answer a
// question (within): a QEMU that does not answer (stopped, hung) must not
// hold up the stop (review 81; its query-migrate did, found by
// TestVMRunQEMUHungStops).
const qemuAnswerWait = 2 * time.Second

// waitSecondSignal says why vm run does not stop QEMU at the first signal
// and waits for a second (or for QEMU to exit: QMP quit). A pagecast
// migrate that comes for the guest meanwhile is waited for as
// waitOutgoing waits, and QEMU stopped after it (review 105: vm run waited
// on after a new migration had moved the guest).
func waitSecondSignal(vm *qemu.VM, errw io.Writer, log *slog.Logger, why string) error {
	fmt.Fprintf(errw, "pagecast: %s; a second signal stops QEMU anyway\n", why)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sig)
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-sig:
			fmt.Fprintln(errw, "pagecast: stopping QEMU")
			return nil
		case <-vm.Done():
			return qemuEnded(vm)
		case <-tick.C:
			if _, held := qemuguest.MigrationHolder(vm.PID()); held {
				signal.Stop(sig)
				return waitOutgoing(vm, errw, log)
			}
		}
	}
}

// readableBanner is the guest's banner with its hot-set probability, which
// the guest prints in 16-bit fixed point (p=58982), as the fraction
// --workload gave (p=0.90).
func readableBanner(banner string) string {
	return fixedP.ReplaceAllStringFunc(banner, func(m string) string {
		n, err := strconv.ParseUint(m[len(" p="):], 10, 32)
		if err != nil {
			return m
		}
		return fmt.Sprintf(" p=%.2f", float64(n)/65536)
	})
}

var fixedP = regexp.MustCompile(` p=\d+\b`)

// waitIncomingQEMU waits until QEMU, started with its own -incoming, has
// taken a migration (its run state leaves inmigrate: running, or paused
// for a destination started so, and its query-migrate is past post-copy)
// and returns that state; errStoppedWaiting (errStoppedReceiving once
// QEMU's migration is under way) if ctx ends first. A migration QEMU fails to
// load makes it exit, with its reason. In post-copy, where the guest runs
// here with part of its memory still at the source, it says so on out
// once, and a stop then is said to have lost the guest.
func waitIncomingQEMU(ctx context.Context, vm *qemu.VM, out io.Writer) (string, error) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	postcopy, paused := false, false
	for {
		select {
		case <-ctx.Done():
			if postcopy {
				return "", errors.New("stopped during QEMU's post-copy: the guest ran here with part of its memory still at the source, and is lost")
			}
			// As pagecast's engine's destination: one that does not
			// start fails (README: exits with status 1).
			var mig struct {
				Status string `json:"status"`
			}
			// Asked now, not at the last tick: a migration that went
			// on to post-copy or ended since was said never to have
			// begun (found by a review walk).
			err := qemu.QMP(vm.Monitor, "query-migrate", nil, &mig)
			switch {
			case err != nil:
			case strings.HasPrefix(mig.Status, "postcopy"):
				return "", errors.New("stopped during QEMU's post-copy: the guest ran here with part of its memory still at the source, and is lost")
			case mig.Status == migrator.StatusCompleted:
				return "", errors.New("stopped as QEMU's migration completed: the guest had come here, and its copy at the source is paused (cont there runs it again)")
			case !slices.Contains([]string{"", migrator.StatusNone, migrator.StatusSetup, migrator.StatusFailed, migrator.StatusCancelled}, mig.Status):
				// setup: QEMU 8.2 and later say it from -incoming on,
				// before any stream came (7.2 says nothing).
				return "", errStoppedReceiving
			}
			return "", errStoppedWaiting
		case <-vm.Done():
			err := qemuEnded(vm)
			if err == nil {
				// It quit as asked (QMP quit, SIGTERM): no guest came,
				// or it was lost (it said "migration received" and
				// exited 0; found by a review walk).
				if postcopy {
					return "", errors.New("QEMU quit during its post-copy: the guest ran here with part of its memory still at the source, and is lost")
				}
				return "", fmt.Errorf("QEMU quit (QMP quit, or a signal) before a migration came: %w", errStoppedWaiting)
			}
			if !postcopy && strings.Contains(vm.Stderr(), "load of migration failed") {
				// QEMU's account alone ("Read section footer failed: -5")
				// does not say where the guest is.
				// "If it still runs": a source stopped mid-migration took
				// the guest with it (walk 103).
				err = fmt.Errorf("the incoming migration failed before the guest ran here (the source cancelled it or stopped, the link broke, or the stream did not load), "+
					"so the guest is where it was, on the source, if the source still runs: %w", err)
			}
			return "", err
		case <-tick.C:
		}
		st, err := qemu.RunState(vm.Monitor)
		if err != nil {
			continue // QEMU exiting: Done says why
		}
		if st == "inmigrate" {
			continue
		}
		var mig struct {
			Status string `json:"status"`
		}
		if err := qemu.QMP(vm.Monitor, "query-migrate", nil, &mig); err == nil && strings.HasPrefix(mig.Status, "postcopy") {
			if !postcopy {
				where := "the guest runs here"
				if st != "running" {
					where = "the guest is here, " + st // --paused
				}
				fmt.Fprintf(out, "QEMU's migration is in post-copy: %s, part of its memory still at the source (stopping this VM now loses the guest)\n", where)
				postcopy = true
			}
			switch {
			case mig.Status == migrator.StatusPostcopyPaused && !paused:
				fmt.Fprintln(out, "QEMU's post-copy is paused: the link to the source broke, and the guest's vCPUs wait for pages still there. "+
					"If the source QEMU still runs, recover: QMP migrate-recover here (uri: a new tcp:HOST:PORT to listen on), then migrate with resume at the source; "+
					"if it has gone, so have those pages, and the guest with them")
				paused = true
			case mig.Status == "postcopy-active" && paused:
				fmt.Fprintln(out, "QEMU's post-copy resumed: the source is back")
				paused = false
			}
			continue
		}
		return st, nil
	}
}

// keepSerialLog copies a failed guest's serial log out of the VM's
// directory, which goes with the VM, to the temporary directory, and
// returns where; "" if it could not.
func keepSerialLog(path string, pid int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	kept := filepath.Join(os.TempDir(), fmt.Sprintf("pagecast-serial-%d.log", pid))
	if err := os.WriteFile(kept, b, 0o600); err != nil {
		return ""
	}
	return kept
}

// qemuEnded turns vm's QEMU's exit into an error unless it quit as asked
// (QMP quit, or a signal it caught). An exit by SIGBUS where the guest's
// RAM does not fit its file system says so.
func qemuEnded(vm *qemu.VM) error {
	exit, stderr := vm.ExitErr(), strings.TrimSpace(vm.Stderr())
	if exit == nil {
		return nil
	}
	if short := vm.RAMShort(); short != "" && qemu.BusError(exit) {
		stderr = strings.TrimSpace(stderr + "\n" + short + ": the guest's memory did not fit")
	}
	if stderr == "" {
		return fmt.Errorf("qemu (the VM) ended: %w", exit)
	}
	return fmt.Errorf("qemu (the VM) ended: %w: %s", exit, stderr)
}
