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
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/pagecast/pagecast/guest"
	"github.com/pagecast/pagecast/internal/units"
	"github.com/pagecast/pagecast/migrationmetrics"
	"github.com/pagecast/pagecast/migrator"
	"github.com/pagecast/pagecast/qemu"
	"github.com/pagecast/pagecast/qmpserver"
	"github.com/pagecast/pagecast/vmm"
)

// vmFlags are the flags that describe a pagecast virtual machine.
func vmFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "memory", Aliases: []string{"m"}, Value: "128M",
			Usage: fmt.Sprintf("guest RAM (K, M, G, T or P suffix); at least %d MiB", guest.MinMemory>>20)},
		&cli.IntFlag{Name: "vcpus", Value: 1, Usage: fmt.Sprintf("virtual CPUs (1..%d): the pagecast guest's each run a share of its workload (under pagecast's own monitor; under --monitor qemu it has one); a Linux guest's (--kernel) all run it; an --incoming VM needs the source's", guest.MaxCPUs)},
		&cli.StringFlag{Name: "workload", Aliases: []string{"w"}, Value: "hotset", DefaultText: "hotset",
			Usage: "what the guest writes: NAME[:key=value,...]; workloads:\n" + workloadHelp() + "\n\t "},
		&cli.StringFlag{Name: "mix", Value: guest.DefaultMix.String(),
			Usage: "initial memory content, percent of pages that are zero, repeated-word, text-like and random"},
		&cli.Uint64Flag{Name: "seed", Value: 1, Usage: "seed for the memory content"},
		&cli.StringFlag{Name: "dirty", Value: vmm.DirtyRing,
			Usage: "KVM dirty tracking: ring (KVM_CAP_DIRTY_LOG_RING, needed by the eBPF profiler) or bitmap (KVM_GET_DIRTY_LOG)"},
		&cli.IntFlag{Name: "ring-size", Value: vmm.DefaultRingEntries, Usage: fmt.Sprintf("dirty ring entries per vCPU (a power of two, at least %d)", vmm.MinRingEntries)},
		&cli.StringFlag{Name: "kvm", Value: "/dev/kvm", Usage: "KVM device"},
	}
}

func workloadHelp() string {
	var b strings.Builder
	for _, w := range guest.Workloads() {
		fmt.Fprintf(&b, "\t  %-8s %s", w.Name, w.Description)
		if d := guest.Defaults(w.Name); d != "" {
			fmt.Fprintf(&b, " (default %s)", d) // walk 106: only the README said them
		}
		b.WriteString("\n")
	}
	b.WriteString("\t  every workload also takes write=word|page, delay=N (spin between writes), gate=0|1 (wait for x-pagecast-guest-go); defaults write=word, delay=0, gate=0")
	return b.String()
}

// checkVMFlags refuses what vm run would otherwise find wrong only after
// saying which monitor it chose, or not at all.
func checkVMFlags(c *cli.Context) error {
	mem, err := units.ParseBytes(c.String("memory"))
	if err != nil {
		return fmt.Errorf("--memory: %w", err)
	}
	if mem < guest.MinMemory {
		hint := ""
		if strings.Trim(c.String("memory"), "0123456789") == "" {
			hint = " (a size without a unit is in bytes: 64M is 64 MiB)"
		}
		return fmt.Errorf("--memory %s: %s is below the guest's minimum of %d MiB%s",
			c.String("memory"), units.FormatBytes(float64(mem)), guest.MinMemory>>20, hint)
	}
	w, err := guest.ParseWorkload(c.String("workload"))
	if err != nil {
		return fmt.Errorf("--workload: %w", err)
	}
	if w.Name == "replay" {
		return errors.New("--workload replay plays a table of pages that only a program driving pagecast's guest writes (vmm.VM.WriteReplayTable); vm run cannot fill it: give another workload")
	}
	if c.Bool("paused") && !c.IsSet("incoming") {
		return errors.New("--paused keeps a migrated guest paused once it has arrived: give --incoming too (a booted guest pauses with QMP stop)")
	}
	if c.IsSet("engine") && !c.IsSet("incoming") {
		return errors.New("--engine is which migration --incoming waits for: give --incoming too, or leave --engine out")
	}
	if c.IsSet("engine") && c.String("monitor") == monitorPagecast {
		return errors.New("--engine is for --monitor qemu --incoming: pagecast's own monitor takes pagecast's engine only")
	}
	return nil
}

// clampNote says so when the guest's banner line holds a smaller hot set
// than w asked for: the guest clamps it to its arena ("" if not, or if
// line is not the banner).
func clampNote(line string, w guest.Workload) string {
	m := bannerHot.FindStringSubmatch(line)
	if m == nil || w.Hot == 0 {
		return ""
	}
	if held, err := strconv.ParseUint(m[1], 10, 32); err == nil && held < uint64(w.Hot) {
		return fmt.Sprintf("the guest holds a hot set of %s pages, not the %d asked: its arena has no more (a larger --memory holds more)", m[1], w.Hot)
	}
	return ""
}

var bannerHot = regexp.MustCompile(`^pagecast-guest v\d+ .* hot=(\d+) `)

// serialLines is an io.Writer that calls fn with each line written, as the
// monitor writes the guest's serial lines, one a Write.
type serialLines func(line string)

func (f serialLines) Write(b []byte) (int, error) {
	f(strings.TrimSuffix(string(b), "\n"))
	return len(b), nil
}

// newVM builds a virtual machine from vmFlags; fill puts the --mix content
// in its memory (a migration destination gets the source's instead).
func newVM(c *cli.Context, log *slog.Logger, fill bool) (*vmm.VM, error) {
	mem, err := units.ParseBytes(c.String("memory"))
	if err != nil {
		return nil, fmt.Errorf("--memory: %w", err)
	}
	w, err := guest.ParseWorkload(c.String("workload"))
	if err != nil {
		return nil, fmt.Errorf("--workload: %w", err)
	}
	mix, err := guest.ParseMix(c.String("mix"))
	if err != nil {
		return nil, fmt.Errorf("--mix: %w", err)
	}
	if n := c.Int("vcpus"); n < 1 || n > guest.MaxCPUs {
		return nil, fmt.Errorf("--vcpus %d: want 1 to %d", n, guest.MaxCPUs)
	}
	vm, err := vmm.New(vmm.Config{
		MemoryBytes: mem,
		VCPUs:       c.Int("vcpus"),
		Cmdline:     w.Cmdline(c.Int("vcpus")),
		DirtyMode:   c.String("dirty"),
		RingEntries: c.Int("ring-size"),
		KVMDevice:   c.String("kvm"),
		Log:         log,
		Serial: serialLines(func(line string) {
			if note := clampNote(line, w); note != "" {
				log.Warn(note)
			}
		}),
	})
	if err != nil {
		return nil, err
	}
	if fill {
		guest.FillArena(vm.Memory(), mix, c.Uint64("seed"))
	}
	return vm, nil
}

// noKVMHint is err, where it is vmm.ErrNoKVM (pagecast's own monitor
// without KVM), with what runs the guest instead: vm run's and demo's
// (walk 99: demo said only "KVM is not available").
func noKVMHint(c *cli.Context, err error) error {
	if !errors.Is(err, vmm.ErrNoKVM) {
		return err
	}
	// Said to --monitor pagecast too, which insisted (walk 86); auto
	// took pagecast's monitor for its flags (review 88: told to take
	// auto, which it had).
	if c.String("monitor") == monitorAuto && (c.IsSet("kvm") || c.IsSet("dirty")) {
		return fmt.Errorf("%w; --kvm and --dirty are pagecast's own monitor's, which auto took for them: without them --monitor auto runs the same guest under QEMU, with its TCG emulator where there is no KVM", err)
	}
	return fmt.Errorf("%w; --monitor qemu (or auto, the default) runs the same guest under QEMU, with its TCG emulator where there is no KVM", err)
}

// receive waits for an incoming migration into d and starts it. A
// connection that brings no valid handshake (a port scanner, a peer that
// is not pagecast, a refused source, a failed TLS handshake) is logged and
// the wait goes on; a migration that began and failed ends it.
// status, if set, is told the incoming migration's status as it goes
// (migrator.ReceiveConfig.Status); pause, if set, is QMP migrate-pause's
// (migrator.ReceiveConfig.Pause).
func receive(ctx context.Context, listener net.Listener, d migrator.Destination, tlsConfig *tls.Config, log *slog.Logger, status func(string), pause <-chan struct{}) (migrator.Received, error) {
	link := "plain TCP"
	if tlsConfig != nil {
		link = "mutual TLS" // as the QEMU destinations' line says (review walk 161)
	}
	log.Info("waiting for an incoming migration", "on", listener.Addr().String(), "link", link)
	if a, ok := listener.Addr().(*net.TCPAddr); ok && tlsConfig == nil && !a.IP.IsLoopback() {
		// Whoever reaches the port may send this destination a guest of
		// their own (found by a security walk): said, as the README's
		// "plain TCP is for trusted networks" was not at run time.
		log.Warn("waiting in plain TCP on an address other hosts may reach: anyone who connects first may send this destination a guest; keep the port to a trusted network, or give both ends --tls-cert, --tls-key and --tls-ca", "on", a.String())
	}
	// One migration at a time: another source that comes meanwhile is
	// told the destination is busy.
	l := migrator.NewDoorman(listener, log)
	defer l.Close()
	for {
		stop := context.AfterFunc(ctx, func() { l.Close() })
		// A QEMU that quits while it waits ends the wait.
		gone, unwatch := migrator.WatchGone(d, func(error) { l.Close() })
		conn, err := l.Accept()
		stop()
		unwatch()
		if err != nil {
			if gerr := gone(); gerr != nil {
				return migrator.Received{}, fmt.Errorf("%w while waiting for an incoming migration", gerr)
			}
			if ctx.Err() != nil {
				return migrator.Received{}, errStoppedWaiting
			}
			return migrator.Received{}, fmt.Errorf("accept the incoming migration: %w", err)
		}
		res, err := receiveOn(ctx, l, conn, d, tlsConfig, log, status, pause)
		if err != nil && status != nil {
			status("") // none comes now: the VM waits for another, or ends
		}
		if err != nil && !errors.Is(err, migrator.ErrNoHandshake) {
			// A QEMU that exits as a connection comes fails it, by its
			// QMP socket's reset or otherwise: say that it exited. (A
			// connection that brought no valid handshake failed before
			// anything asked QEMU: a flood of them does not wait here
			// half a second each.)
			if gerr := migrator.AwaitGone(d, 500*time.Millisecond); gerr != nil {
				if !strings.Contains(err.Error(), gerr.Error()) { // else the receiver said it (migrator.Receive watches too)
					err = fmt.Errorf("%w (%w)", gerr, err)
				}
				return res, err
			}
		}
		switch {
		case errors.Is(err, migrator.ErrNoHandshake) && ctx.Err() != nil:
			return res, errStoppedWaiting // during a handshake that never came
		case err != nil && ctx.Err() != nil:
			// Stopped mid-stream (it said "use of closed network
			// connection (context canceled)"); the source says what
			// became of its guest.
			return res, errStoppedReceiving
		case errors.Is(err, migrator.ErrQuietPeer):
			log.Debug("a connection closed without a word (a port probe); still waiting for the source", "from", conn.RemoteAddr().String())
			continue
		case errors.Is(err, migrator.ErrNoHandshake):
			l.Refused("refused a connection; still waiting for the source", "from", conn.RemoteAddr().String(), "err", err)
			continue
		case errors.Is(err, migrator.ErrNothingReceived):
			l.Refused("a source went before sending a page; still waiting for the source", "from", conn.RemoteAddr().String(), "err", err)
			continue
		}
		return res, err
	}
}

// errStoppedWaiting is receive's error when it is stopped (SIGINT,
// SIGTERM) before any migration began.
var errStoppedWaiting = errors.New("stopped while waiting for an incoming migration")

// errStoppedReceiving is receive's error when it is stopped (SIGINT,
// SIGTERM) while a migration came in.
var errStoppedReceiving = errors.New("stopped (SIGINT, SIGTERM or SIGHUP) during the incoming migration")

// tlsSet tells whether any of --tls-cert, --tls-key and --tls-ca is given.
func tlsSet(c *cli.Context) bool {
	return c.String("tls-cert") != "" || c.String("tls-key") != "" || c.String("tls-ca") != ""
}

// tlsConfig is the mutual TLS of --tls-cert, --tls-key and --tls-ca, for
// the listening end (server) or the dialling one; nil without them.
func tlsConfig(c *cli.Context, server bool) (*tls.Config, error) {
	files := migrator.TLSFiles{Cert: c.String("tls-cert"), Key: c.String("tls-key"), CA: c.String("tls-ca")}
	if !files.Enabled() {
		return nil, nil
	}
	return files.Config(server)
}

// overTLS says that a link is mutual TLS where cfg is set (walk 160: a
// listener's line read the same with it and without).
func overTLS(cfg *tls.Config) string {
	if cfg == nil {
		return ""
	}
	return ", mutual TLS (the source must show a certificate signed by --tls-ca)"
}

// tlsConfigs is tlsConfig for both ends, loaded once: the warnings about
// the files are said once (walk 68 saw each twice under vm run).
func tlsConfigs(c *cli.Context) (client, server *tls.Config, err error) {
	files := migrator.TLSFiles{Cert: c.String("tls-cert"), Key: c.String("tls-key"), CA: c.String("tls-ca")}
	if !files.Enabled() {
		return nil, nil, nil
	}
	return files.Configs()
}

// printReceived says on out that a migration arrived and the guest runs,
// or waits paused (--paused) for cont.
func printReceived(out io.Writer, res migrator.Received, paused bool) {
	guest := "guest running"
	switch {
	case paused:
		guest = "guest paused (--paused): QMP cont runs it"
	case res.HeldPaused:
		guest = "guest paused, as it was on the source when it left (stopped there during the migration): QMP cont runs it"
	}
	if res.Verified {
		fmt.Fprintf(out, "migration received, memory verified; %s\n", guest)
	} else {
		fmt.Fprintf(out, "migration received, memory not verified (the source's checksums did not come); %s\n", guest)
	}
}

// receiveOn runs one incoming migration on conn.
func receiveOn(ctx context.Context, l *migrator.Doorman, conn net.Conn, d migrator.Destination, tlsConfig *tls.Config, log *slog.Logger, status func(string), pause <-chan struct{}) (migrator.Received, error) {
	defer conn.Close()
	defer l.Idle()
	accepted := func() { l.Busy("an incoming migration from " + conn.RemoteAddr().String()) }
	// The listener stays open for a tsmc source that loses its link in
	// stage 3 and comes back.
	reconnect := func(ctx context.Context) (net.Conn, error) {
		stop := context.AfterFunc(ctx, func() { l.Close() })
		defer stop()
		return l.Accept()
	}
	res, err := migrator.Receive(ctx, conn, d, migrator.ReceiveConfig{TLS: tlsConfig, Log: log, Reconnect: reconnect, Accepted: accepted, Status: status, Pause: pause})
	if err != nil {
		return res, err
	}
	log.Info("migration received", "from", conn.RemoteAddr().String(), "mode", res.Mode, "rounds", res.Rounds,
		"pages", res.Pages, "zero-pages", res.ZeroPages, "bytes", res.Bytes, "elapsed", res.Elapsed.Round(time.Millisecond),
		"pulled", res.Pulled, "pushed", res.Pushed, "dropped-early", res.DroppedEarly, "guest-waited", res.Waited.Round(time.Millisecond), "verified", res.Verified)
	return res, nil
}

func vmCommand() *cli.Command {
	return &cli.Command{
		Name:  "vm",
		Usage: "run pagecast's guest, on pagecast's own KVM monitor or under QEMU (--monitor qemu)",
		Subcommands: []*cli.Command{{
			Name:  "run",
			Usage: "boot the pagecast guest (pagecast's KVM monitor, or QEMU with KVM or TCG) and serve QMP until quit",
			Description: "Boots the built-in guest, whose workload dirties memory in a chosen pattern, and serves a\n" +
				"QMP socket: on pagecast's own monitor a QMP-compatible one (query-status, stop, cont, quit,\n" +
				"calc-dirty-rate, query-dirty-rate, x-pagecast-*) so QEMU tooling and pagecast's profiler drive\n" +
				"it like QEMU; under QEMU (--monitor qemu, or auto without KVM) QEMU's own. Runs until the\n" +
				"quit command, SIGINT, SIGTERM or SIGHUP; while the guest migrates out (pagecast migrate, or\n" +
				"QEMU's own migration) a signal waits for the migration to end, and a second stops at once.\n\n" +
				"With --incoming the guest is not booted: the monitor waits for a migration (pagecast migrate, or\n" +
				"QMP migrate on the source), runs it, and checks its memory against the source's checksums; the\n" +
				"memory size, vCPU count and guest image must match the source's. A connection that brings no\n" +
				"valid handshake (a port scanner, another protocol, a refused source, a failed TLS handshake) is\n" +
				"logged and the wait goes on; a migration that began and failed exits with status 1 and leaves\n" +
				"the guest with the source. Plain TCP is for trusted networks: the first source with a valid\n" +
				"handshake supplies the guest's memory. Elsewhere use --tls-cert/--tls-key/--tls-ca on both ends.\n\n" +
				"With --monitor qemu, QEMU runs the same guest instead: under KVM where /dev/kvm works (with\n" +
				"the dirty ring pagecast's eBPF programs need), under QEMU's TCG emulator where it does not (with\n" +
				"pagecast's TCG plugin loaded), guest RAM in shared memory; it prints which it chose and why.\n" +
				"--qmp is then QEMU's own QMP socket. --incoming is pagecast's receiver in front of a QEMU\n" +
				"waiting with -incoming defer (pagecast's engine moves the RAM, QEMU's migration only the device\n" +
				"state); with --engine qemu it is QEMU's own -incoming, for QEMU's migration.\n\n" +
				"--monitor auto (the default) takes pagecast's own monitor where /dev/kvm opens (kvm-pvm's too: it\n" +
				"runs pagecast's guest at KVM's pace, where QEMU's --accel auto avoids it for Linux kernels) and QEMU\n" +
				"under TCG where it does not, unless a flag given is for one of them only; it logs which and why.\n\n" +
				"Example: pagecast vm run --memory 128M --workload hotset:hot=2048,p=0.9 --qmp unix:/tmp/pc.sock\n" +
				"         pagecast vm run --monitor qemu --memory 64M --qmp unix:/tmp/q.sock\n" +
				"         pagecast vm run --monitor qemu --memory 64M --incoming tcp:127.0.0.1:4444\n" +
				"         pagecast vm run --memory 128M --incoming tcp:127.0.0.1:4444 --qmp unix:/tmp/dst.sock",
			Flags: append(append(vmFlags(), qemuVMFlags()...),
				&cli.StringFlag{Name: "qmp", Usage: "QMP socket to serve: unix:PATH, for this user alone (mode 0600; QEMU's own, under --monitor qemu, 0700)"},
				&cli.StringFlag{Name: "qmp-extra", Usage: "--monitor qemu: a second QMP socket of QEMU's, unix:PATH, there from QEMU's start: QEMU serves one client a socket, and pagecast migrate holds --qmp's for the whole migration (a QMP stop or a watcher meanwhile goes here); pagecast's own monitor serves any number of clients on --qmp"},
				&cli.StringFlag{Name: "incoming", Usage: "wait for a migration on tcp:HOST:PORT instead of booting, then run the migrated guest (plain TCP: trusted networks only; see --tls-*)"},
				&cli.StringFlag{Name: "pidfile", Usage: "write the pid of the process that runs the VM to this file, as QEMU's -pidfile (with --background, the process left running); removed when vm run ends"},
				&cli.BoolFlag{Name: "background", Usage: "return once the VM is ready (its QMP socket served; with --incoming, its port listening; a --kernel guest once booted, or after 2 minutes without its start line), leaving it running in a session of its own, its log still on this stdout and stderr (so $(…) or a pipe would wait for the VM to end: send them to a file); exit 1 if it fails first, its error said. For scripts, in place of \"&\" and a loop waiting for the socket, which waits for good where the VM was refused. QMP quit or kill PID stops it"},
				&cli.BoolFlag{Name: "paused", Usage: "with --incoming: leave the guest paused once it has arrived, as QMP stop while it waits does (QMP cont runs it); under --monitor qemu with pagecast's engine a stop sent to QEMU is not seen, and this is the way"},
				&cli.StringFlag{Name: "tls-cert", Usage: "mutual TLS for migrations in and out (a QEMU VM's: in, with --incoming; pagecast migrate takes them for its migrations out): this end's certificate (PEM)"},
				&cli.StringFlag{Name: "tls-key", Usage: "mutual TLS: this end's private key (PEM)"},
				&cli.StringFlag{Name: "tls-ca", Usage: "mutual TLS: the CA that signed the other end's certificate (PEM)"},
				&cli.StringFlag{Name: "metrics", Usage: "pagecast's monitor: serve Prometheus metrics of the migrations out of this VM (pagecast_migration_*) on this address, e.g. 127.0.0.1:9472; needs --qmp. A QEMU VM's are served by pagecast migrate --metrics"},
				&cli.StringFlag{Name: "name", Action: checkName, Usage: "the VM's name: under --monitor qemu QEMU's -name, which profile, migrate and predict serve take for their vm label (as libvirt's domain name); on pagecast's own monitor the vm label of --metrics (default: the QMP socket's file name without its extension)"},
			),
			Action: holdsOnClosedOutput(runVM),
		}},
	}
}

func runVM(c *cli.Context) error {
	log := slog.Default()
	ctx, cancel := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer cancel()
	if err := checkVMFlags(c); err != nil {
		return err
	}
	if c.Bool("background") && !inChild {
		return runInBackground(c, "vm run")
	}
	if path := c.String("pidfile"); path != "" {
		remove, err := writePidfile(path)
		if err != nil {
			return err
		}
		defer remove()
	}
	m, err := resolveMonitor(c, log)
	if err != nil {
		return err
	}
	switch m {
	case monitorQEMU:
		if c.IsSet("metrics") {
			return errors.New("--metrics is for pagecast's monitor: a QEMU VM's migrations are driven, and exported, by pagecast migrate --metrics")
		}
		return runQEMU(ctx, c, log)
	case monitorPagecast:
		if c.IsSet("accel") {
			return errors.New("--accel is for --monitor qemu: pagecast's own monitor runs only on KVM")
		}
		if c.IsSet("qmp-extra") {
			return errors.New("--qmp-extra is for --monitor qemu, whose QEMU serves one client a socket: pagecast's own monitor serves any number on --qmp")
		}
		if c.IsSet("name") && !c.IsSet("metrics") {
			return errors.New("--name is, on pagecast's own monitor, the vm label of --metrics: give --metrics too, or leave --name out (under --monitor qemu it is QEMU's -name)")
		}
	}

	// The socket is claimed first, so a busy path fails before the VM is
	// built, but served only once its commands are registered. The server
	// outlives the VM so that quit's reply and the SHUTDOWN event reach
	// the client.
	if c.IsSet("metrics") && !c.IsSet("qmp") {
		return errors.New("--metrics needs --qmp: migrations are started through QMP")
	}
	var lis net.Listener
	if spec := c.String("qmp"); spec != "" {
		path, ok := strings.CutPrefix(spec, "unix:")
		if !ok {
			return fmt.Errorf("--qmp %q: want unix:PATH", spec)
		}
		l, err := qmpserver.Listen(path)
		if err != nil {
			return err
		}
		lis = l
		defer l.Close()
	}

	clientTLS, serverTLS, err := tlsConfigs(c)
	if err != nil {
		return err
	}
	var incoming net.Listener
	if uri := c.String("incoming"); uri != "" {
		l, err := migrator.Listen(uri, serverTLS)
		if err != nil {
			return fmt.Errorf("--incoming: %w", err)
		}
		incoming = l
		defer l.Close()
	}

	vm, err := newVM(c, log, incoming == nil)
	if err != nil {
		return noKVMHint(c, err)
	}
	defer vm.Close()
	if incoming != nil {
		vm.ExpectIncoming() // query-status says inmigrate, as QEMU's -incoming
		if c.Bool("paused") {
			if err := vm.Pause(); err != nil { // QEMU's stop under -incoming: it starts paused
				return err
			}
		}
	}
	var srv *qmpserver.Server
	if lis != nil {
		// Its events are told from the start: set after Start, a guest
		// failing at once lost its STOP, and the VM read the hook
		// unlocked as it was set (found by a review walk).
		srv = qmpserver.New(log, "pagecast")
		vm.OnEvent(srv.Emit)
	}
	if incoming == nil {
		// Started before QMP is served, as QEMU without -S is: a client
		// that connects as soon as the socket exists finds it running,
		// not in prelaunch (its connection waits in the listen queue).
		if err := vm.Start(); err != nil {
			return err
		}
	}
	var ctl *migrator.Controller
	if lis != nil {
		vm.RegisterQMP(srv, cancel)
		ctl = migrator.NewController(vm.Migratable(), log, clientTLS)
		ctl.SetChooser(ownChooser(log))
		ctl.Register(srv)
		// cont of the source while an outgoing migration holds its guest
		// paused (the switch-over, tsmc's stage 3, post-copy) ran the
		// guest here and on the destination at once, and the migration
		// said verified (found by a review walk). QEMU holds its monitor
		// for the stop-and-copy.
		dest := func(i migrator.Info) string {
			if i.Pagecast != nil && i.Pagecast.Destination != "" {
				return i.Pagecast.Destination
			}
			return "its destination"
		}
		vm.SetContGuard(func() error {
			m := ctl.Current()
			if m == nil {
				return nil
			}
			select {
			case <-m.Done():
				if i := m.Info(); i.Status == migrator.StatusCompleted {
					// Migrated away: QEMU's cont takes it back unasked, and
					// it ran in two places (walk 154).
					return fmt.Errorf("the guest migrated to %s (completed, verified %v): it runs there, and cont here would run it twice; "+
						"if the destination's copy is gone (check it: query-status), cont with x-pagecast-force true runs this one", dest(i), i.Pagecast != nil && i.Pagecast.Verified)
				}
				if m.HandedOver() {
					// Failed after its commit, or post-copy given up on:
					// the destination ran the guest (walk 45).
					return errors.New("the outgoing migration handed the guest over to its destination before it failed: it ran there, and cont here would run it twice " +
						"(or lose what it did there); this copy stays paused")
				}
				return nil
			default:
				return errors.New("the guest is paused by an outgoing migration, which runs it on the destination, or here again if the migration fails: " +
					"cont now would run it in both places; wait for the migration to end, or cancel it (migrate_cancel)")
			}
		})
		// Stopped while it migrates out, the VM waits for the migration
		// to end (cancelled where it can be) before it frees the memory
		// the migration reads: vm.Close under a running migration
		// crashed pagecast (SIGSEGV; found by a review walk).
		defer ctl.Close(nil, nil)
		if addr := c.String("metrics"); addr != "" {
			exp := migrationmetrics.New(vmName(c, strings.TrimPrefix(c.String("qmp"), "unix:"), nil))
			stop, err := serveCollectors(addr, exp)
			if err != nil {
				return err
			}
			defer stop()
			go followMigrations(ctx, ctl, exp, 200*time.Millisecond)
		}
		serveCtx, stopServing := context.WithCancel(context.Background())
		served := make(chan struct{})
		go func() {
			defer close(served)
			if err := srv.Serve(serveCtx, lis); err != nil && !errors.Is(err, context.Canceled) {
				log.Error("qmp server", "err", err)
			}
		}()
		defer func() { stopServing(); <-served }()
	}
	sayReady()
	if incoming != nil {
		var status func(string)
		var pause <-chan struct{}
		if ctl != nil {
			status, pause = ctl.Receiving, ctl.PauseRequests()
		}
		res, err := receive(ctx, incoming, vm.Migratable(), serverTLS, log, status, pause)
		if err != nil {
			return err
		}
		if ctl != nil {
			ctl.Received(res)
		}
	}
	workload := c.String("workload")
	if incoming != nil {
		// The guest's own, which came with it, not --workload's default.
		if st, err := vm.GuestStatus(); err == nil {
			workload = guest.WorkloadName(st.Workload)
		}
	}
	msg := "virtual machine running"
	if vm.RunState() == vmm.StatePaused {
		msg = "virtual machine paused (stopped while it waited, --paused, or paused on the source when it left; cont runs it)"
	}
	log.Info(msg, "memory", units.FormatBytes(float64(vm.MemoryBytes())),
		"vcpus", vm.VCPUs(), "workload", workload, "dirty", vm.DirtyMode(), "qmp", c.String("qmp"))
	<-ctx.Done()
	if ctl != nil {
		stopMigration(ctl, log)
	}
	st, guestErr := vm.State()
	log.Info("shutting down", "state", st)
	if err := vm.Close(); err != nil {
		return err
	}
	if guestErr != nil {
		return guestErr
	}
	return nil
}

// stopMigration ends ctl's outgoing migration before the VM it reads
// goes: cancelled, and waited for; where it cannot be cancelled (post-copy,
// or committed) it is waited for until a second SIGINT or SIGTERM, which
// aborts it.
func stopMigration(ctl *migrator.Controller, log *slog.Logger) {
	if m := ctl.Current(); m != nil {
		select {
		case <-m.Done():
		default:
			log.Info("stopping: the outgoing migration is cancelled, and waited for")
		}
	}
	again := make(chan os.Signal, 1)
	signal.Notify(again, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(again)
	force, closed := make(chan struct{}), make(chan struct{})
	defer close(closed)
	go func() {
		select {
		case <-again:
			close(force)
		case <-closed:
		}
	}()
	ctl.Close(force, func(err error) {
		log.Warn("stopping: the outgoing migration cannot be cancelled; waiting for it to end. "+
			"A second SIGINT or SIGTERM stops it anyway, and the guest on the destination loses what only this VM holds", "why", err)
	})
}

// resolveMonitor is --monitor, auto made pagecast or qemu: the one a flag
// given is only for (pagecast's: --kvm, --dirty; QEMU's: --accel,
// --kernel, --initrd, --append, --engine), else pagecast's own monitor
// where KVM is usable (qemu.KVMUsable) and QEMU, under TCG, where it is
// not; it logs why it took QEMU.
func resolveMonitor(c *cli.Context, log *slog.Logger) (string, error) {
	switch m := c.String("monitor"); m {
	case monitorPagecast, monitorQEMU:
		return m, nil
	case monitorAuto:
		if c.IsSet("kvm") || c.IsSet("dirty") {
			return monitorPagecast, nil
		}
		for _, f := range []string{"accel", "kernel", "initrd", "append", "engine"} {
			if c.IsSet(f) {
				return monitorQEMU, nil
			}
		}
		if err := qemu.KVMUsable(); err != nil {
			// Not "--monitor pagecast to insist": it opens the same
			// /dev/kvm, and fails as this did (walks 99 and 100).
			log.Info("running the guest under QEMU: pagecast's own monitor needs KVM, and /dev/kvm does not open", "why", err)
			return monitorQEMU, nil
		}
		log.Info("running the guest on pagecast's own KVM monitor (--monitor qemu for QEMU)", "why", "/dev/kvm opens")
		return monitorPagecast, nil
	default:
		return "", fmt.Errorf("--monitor %q: want auto, pagecast or qemu", m)
	}
}
