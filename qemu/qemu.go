package qemu

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pagecast/pagecast/guest"
	"github.com/pagecast/pagecast/internal/scratch"
	"github.com/pagecast/pagecast/qmpclient"
)

// Options describe a QEMU virtual machine running the pagecast guest.
type Options struct {
	Binary      string // default: qemu-system-x86_64 from PATH
	Machine     string // QEMU machine type: default pc; q35 keeps less RAM below 4 GiB (MachineLayout)
	MemoryBytes uint64
	Cmdline     string    // guest command line (guest.Workload.Cmdline)
	Mix         guest.Mix // initial arena content; zero value: DefaultMix
	Seed        uint64
	// Accel is the accelerator: AccelKVM, AccelTCG, or "" / AccelAuto for
	// KVM where /dev/kvm opens and TCG elsewhere.
	Accel         string
	DirtyRingSize int    // KVM dirty ring entries per vCPU; 0: QEMU's default (dirty bitmap); ignored under TCG
	Dir           string // where sockets and files go (no ',' or '='); default: a temporary directory in /dev/shm (guest RAM is a file there), removed by Close
	QMP           string // path of the QMP socket left free for other clients; default: qmp.sock in Dir
	// Plugin is the value of a -plugin option: QEMU loads that TCG plugin
	// (tcg.PluginArg builds pagecast's). Only under TCG.
	Plugin   string
	Incoming string // if set, -incoming URI ("tcp:127.0.0.1:4444"): wait for a migration, whose RAM overwrites the arena
	// Name is the guest's name (-name guest=NAME), which QMP query-name
	// reports, as libvirt gives QEMU its domain's; "" for none.
	Name  string
	Extra []string
	// VCPUs is the number of virtual CPUs (-smp); 0 is 1. The pagecast
	// guest runs on the first alone (it brings up others only under
	// pagecast's own monitor); a Linux guest (Kernel) uses them all.
	VCPUs int
	// Kernel, if set, is a Linux kernel QEMU boots instead of the pagecast
	// guest, with the ramdisk Initrd (BuildInitramfs) and the command line
	// "console=ttyS0 "+Append (LinuxAppend); Cmdline, Mix and Seed do not
	// apply (see linux.go).
	Kernel, Initrd, Append string
}

// MaxVCPUs is the most vCPUs Start gives a guest: pagecast's --vcpus
// range, well within the pc machine's 255.
const MaxVCPUs = guest.MaxCPUs

// Accelerators QEMU can run the guest with.
const (
	AccelAuto = "auto" // KVM where /dev/kvm opens read-write and runs guests natively, else TCG
	AccelKVM  = "kvm"  // hardware virtualization; dirty pages through KVM's dirty ring
	AccelTCG  = "tcg"  // QEMU's emulator; dirty pages through pagecast's TCG plugin
)

// ResolveAccel turns an --accel value into the accelerator to use, and says
// why it was chosen.
func ResolveAccel(accel string) (chosen, why string, err error) {
	switch accel {
	case "", AccelAuto:
		if err := KVMUsable(); err != nil {
			return AccelTCG, fmt.Sprintf("no usable KVM (%v)", err), nil
		}
		if KVMEmulates() {
			return AccelTCG, "/dev/kvm is kvm-pvm, which runs a guest kernel not built for PVM by emulating its instructions, some 100-700 times slower than TCG, and whose dirty ring stops a QEMU guest that fills it; --accel kvm uses it anyway", nil
		}
		return AccelKVM, "/dev/kvm works", nil
	case AccelKVM:
		if err := KVMUsable(); err != nil {
			return "", "", fmt.Errorf("--accel kvm: %w", err)
		}
		if KVMEmulates() {
			// Said only by profile before: a user of --accel kvm met the
			// stall first (found by a new-user walk).
			return AccelKVM, "asked for; /dev/kvm is kvm-pvm, which emulates the guest's instructions, some 100-700 times slower than TCG, " +
				"and whose KVM dirty ring (profile, pagecast's engine) stops a QEMU guest writing fast once it fills", nil
		}
		return AccelKVM, "asked for", nil
	case AccelTCG:
		return AccelTCG, "asked for", nil
	}
	return "", "", fmt.Errorf("unknown accelerator %q: want auto, kvm or tcg", accel)
}

// KVMUsable says whether /dev/kvm opens read-write.
func KVMUsable() error {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return err
	}
	return f.Close()
}

// sysModule is where the kernel lists its loaded modules.
var sysModule = "/sys/module"

// KVMEmulates says whether /dev/kvm belongs to kvm-pvm (module kvm_pvm, with
// neither kvm_intel nor kvm_amd loaded): a KVM for hosts that are themselves
// guests without nested virtualization, which runs a guest not built for
// PVM (the pagecast guest, a Debian kernel) by emulating its instructions.
// Measured on such a host: the pagecast guest in QEMU wrote 46 pages a second
// under KVM against 33 000 under TCG (hotset:delay=25000), 48 000 against
// 4.6 M without the delay.
func KVMEmulates() bool {
	has := func(m string) bool {
		_, err := os.Stat(filepath.Join(sysModule, m))
		return err == nil
	}
	return has("kvm_pvm") && !has("kvm_intel") && !has("kvm_amd")
}

// ErrNoQEMU is returned when the QEMU binary is not installed.
var ErrNoQEMU = errors.New("qemu-system-x86_64 not found (Debian package qemu-system-x86)")

// VM is a running QEMU.
type VM struct {
	Monitor *qmpclient.Client // this package's own QMP connection
	// QMPPath is a second QMP socket, free for other clients (a QEMU QMP
	// socket serves one client at a time).
	QMPPath string
	// Binary is the QEMU that runs: Options.Binary, else
	// qemu-system-x86_64 as found on PATH.
	Binary string

	cmd        *exec.Cmd
	stderr     *lockedBuffer
	exited     chan struct{}
	waitErr    error  // how QEMU exited; set before exited closes
	mem        []byte // guest RAM, shared with QEMU through a file
	statusAddr uint64
	accel      string // AccelKVM or AccelTCG
	linux      bool   // a Linux kernel, not the pagecast guest
	serial     string
	tmp        string // removed by Close
	ramPath    string // the guest RAM file
	closeOnce  sync.Once
}

// Start boots QEMU and connects to its QMP socket.
func Start(o Options) (_ *VM, err error) {
	bin := o.Binary
	if bin == "" {
		if bin, err = exec.LookPath("qemu-system-x86_64"); err != nil {
			return nil, ErrNoQEMU
		}
	}
	accel, _, err := ResolveAccel(o.Accel)
	if err != nil {
		return nil, err
	}
	if o.Kernel == "" && o.MemoryBytes < guest.MinMemory {
		return nil, fmt.Errorf("memory %d MiB is below the guest's minimum of %d MiB", o.MemoryBytes>>20, guest.MinMemory>>20)
	}
	if o.VCPUs < 0 || o.VCPUs > MaxVCPUs {
		return nil, fmt.Errorf("%d vCPUs: want 1 to %d", o.VCPUs, MaxVCPUs)
	}
	if o.Mix == (guest.Mix{}) {
		o.Mix = guest.DefaultMix
	}
	k, err := guest.Load(guest.Image())
	if err != nil {
		return nil, err
	}
	var linuxArgs []string
	if o.Kernel != "" {
		if linuxArgs, err = linuxBootArgs(o); err != nil {
			return nil, err
		}
	}
	if o.Plugin != "" && accel != AccelTCG {
		return nil, fmt.Errorf("a TCG plugin needs -accel tcg, not %s", accel)
	}
	tmp := ""
	if o.Dir == "" {
		// Guest RAM is a file in Dir: on tmpfs it is memory, as a memfd.
		if tmp, err = scratch.Dir(scratchBase(), ScratchPrefix); err != nil {
			return nil, fmt.Errorf("qemu work directory: %w", err)
		}
		o.Dir = tmp
	}
	// Until QEMU has started (then VM.Close removes it), a failure takes
	// the work directory away, with a RAM file half written in it (it
	// stayed, locked, for the life of the process; found by a review walk).
	started := false
	defer func() {
		if !started {
			scratch.Remove(tmp)
		}
	}()
	if strings.ContainsAny(o.Machine, ", ") {
		return nil, fmt.Errorf("machine type %q: want one type, such as pc or q35", o.Machine)
	}
	if strings.ContainsAny(o.Dir, ",=") {
		return nil, fmt.Errorf("qemu work directory %q: QEMU options cannot hold ',' or '='", o.Dir)
	}
	kernel := filepath.Join(o.Dir, "pagecast-guest.elf")
	memPath := filepath.Join(o.Dir, "ram")
	ownQMP := filepath.Join(o.Dir, "qmp-own.sock")
	v := &VM{
		Binary:     bin,
		QMPPath:    cmp.Or(o.QMP, filepath.Join(o.Dir, "qmp.sock")),
		serial:     filepath.Join(o.Dir, "serial.log"),
		ramPath:    memPath,
		statusAddr: k.StatusAddr,
		accel:      accel,
		linux:      o.Kernel != "",
		tmp:        tmp,
		stderr:     &lockedBuffer{},
		exited:     make(chan struct{}),
	}
	bootArgs := linuxArgs
	if !v.linux {
		bootArgs = []string{"-kernel", kernel, "-append", o.Cmdline}
		if err := os.WriteFile(kernel, guest.Image(), 0o644); err != nil {
			return nil, fmt.Errorf("write guest image: %w", err)
		}
		// The arena is written into the RAM file QEMU maps, which it
		// leaves as it finds it: one copy of the guest's memory, of any
		// size (QEMU's loader device kept a second and read at most
		// 2 GiB). A VM waiting for a migration gets its memory from it:
		// its file is left empty (QEMU makes it), holding nothing.
		if o.Incoming == "" {
			if err := guest.WriteRAMFile(memPath, o.MemoryBytes, LowMemoryOf(cmp.Or(o.Machine, "pc"), o.MemoryBytes), o.Mix, o.Seed); err != nil {
				if errors.Is(err, syscall.ENOSPC) {
					var fs unix.Statfs_t
					if unix.Statfs(o.Dir, &fs) == nil && fs.Blocks > 0 {
						err = fmt.Errorf("%w: the guest's RAM, %d MiB, is written in %s, whose file system holds %d MiB in all, %d MiB free now (a smaller --memory, or room there)",
							err, o.MemoryBytes>>20, o.Dir, fs.Blocks*uint64(fs.Bsize)>>20, fs.Bavail*uint64(fs.Bsize)>>20)
					}
				}
				return nil, err
			}
		}
	}
	accelArg := accel
	if accel == AccelKVM && o.DirtyRingSize > 0 {
		accelArg = fmt.Sprintf("kvm,dirty-ring-size=%d", o.DirtyRingSize)
	}
	args := []string{
		"-accel", accelArg, "-machine", cmp.Or(o.Machine, "pc") + ",memory-backend=ram",
		"-m", fmt.Sprintf("%dM", o.MemoryBytes>>20),
		"-object", fmt.Sprintf("memory-backend-file,id=ram,size=%d,mem-path=%s,share=on", o.MemoryBytes, memPath),
		"-nographic", "-nodefaults", "-serial", "file:" + v.serial,
		"-qmp", "unix:" + ownQMP + ",server=on,wait=off",
		// The user's socket as -chardev path=, its commas doubled: in
		// -qmp unix:PATH a path holding "=" (a Go test's directory:
		// TestX/case=1) or "," was taken for options, and QEMU exited.
		"-chardev", "socket,id=qmp-user,path=" + strings.ReplaceAll(v.QMPPath, ",", ",,") + ",server=on,wait=off",
		"-mon", "chardev=qmp-user,mode=control",
	}
	if o.VCPUs > 1 {
		args = append(args, "-smp", strconv.Itoa(o.VCPUs))
	}
	args = append(args, bootArgs...)
	if o.Plugin != "" {
		args = append(args, "-plugin", o.Plugin)
	}
	if o.Incoming != "" {
		args = append(args, "-incoming", o.Incoming)
	}
	if o.Name != "" {
		args = append(args, "-name", "guest="+strings.ReplaceAll(o.Name, ",", ",,"))
	}
	args = append(args, o.Extra...)
	// Through sh for umask 077: QEMU creates its QMP sockets (and serial
	// log) for this user alone, as pagecast's own monitor does; QMP
	// drives the VM. exec keeps the pid QEMU's.
	v.cmd = exec.Command("/bin/sh", append([]string{"-c", `umask 077 && exec "$0" "$@"`, bin}, args...)...)
	v.cmd.Stderr = v.stderr
	// QEMU must not outlive a test or tool that dies without Close.
	v.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := v.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start qemu: %w", err)
	}
	started = true
	go func() { v.waitErr = v.cmd.Wait(); close(v.exited) }()
	defer func() {
		if err != nil {
			v.Close()
		}
	}()

	deadline := time.Now().Add(10 * time.Second)
	for {
		v.Monitor, err = qmpclient.Dial("unix", ownQMP, 2*time.Second)
		if err == nil {
			break
		}
		select {
		case <-v.exited:
			return nil, fmt.Errorf("qemu exited: %s", strings.TrimSpace(v.stderr.String()))
		default:
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("connect to qemu's QMP socket: %w", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Within a while: a QEMU stuck before its main loop accepts on the
	// socket and never greets (Start waited for ever; found by a review
	// walk).
	if err := v.Monitor.Handshake(handshakeWait); err != nil {
		// A QEMU that exits at start (an -incoming port in use) may do
		// so after it has made its socket: its own words first (walk
		// 152 had them last, behind "connection reset by peer").
		select {
		case <-v.exited:
			return nil, fmt.Errorf("qemu exited: %s", strings.TrimSpace(v.stderr.String()))
		case <-time.After(time.Second):
		}
		return nil, fmt.Errorf("qemu's QMP socket %w (%s)", err, strings.TrimSpace(v.stderr.String()))
	}
	f, err := os.OpenFile(memPath, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("open qemu guest memory: %w", err)
	}
	defer f.Close()
	v.mem, err = unix.Mmap(int(f.Fd()), 0, int(o.MemoryBytes), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("map qemu guest memory: %w", err)
	}
	if short := v.RAMShort(); short != "" {
		slog.Warn(short + ": QEMU dies of SIGBUS if it is written (a migration's destination writes each page it receives)")
	}
	return v, nil
}

// LowMemory is how much of a pc (i440fx) machine's RAM of ramBytes lies
// below 4 GiB, from address 0, where a 32-bit guest sees it: all of it
// under 3.5 GiB, else 3 GiB (QEMU puts the rest from 4 GiB up; multiboot
// tells the guest only of the memory below). Measured with QEMU 7.2: a
// 3 GiB guest sees 3 GiB, a 3.5 GiB one 3 GiB. (q35 would keep 2.75 GiB
// or 2 GiB.)
func LowMemory(ramBytes uint64) uint64 {
	if ramBytes >= 0xe0000000 {
		return 0xc0000000
	}
	return ramBytes
}

// Done is closed when QEMU has exited.
func (v *VM) Done() <-chan struct{} { return v.exited }

// ExitErr is how QEMU exited (nil: status 0), once Done is closed.
func (v *VM) ExitErr() error {
	<-v.exited
	return v.waitErr
}

// Stderr is what QEMU has written to its standard error so far.
func (v *VM) Stderr() string { return v.stderr.String() }

// PID is QEMU's process id.
func (v *VM) PID() int { return v.cmd.Process.Pid }

// Accel is the accelerator QEMU runs the guest with: AccelKVM or AccelTCG.
func (v *VM) Accel() string { return v.accel }

// Memory is the guest's RAM, shared with QEMU.
func (v *VM) Memory() []byte { return v.mem }

// GuestStatus reads the guest's status page.
func (v *VM) GuestStatus() (guest.Status, error) {
	if v.linux {
		return guest.Status{}, ErrLinuxGuest
	}
	return guest.ReadStatus(v.mem, v.statusAddr)
}

// scratchBase is where the work directories go: /dev/shm (a test's seam).
var scratchBase = scratch.Base

// ScratchPrefix begins the names of the work directories (in /dev/shm)
// that hold a QEMU VM's RAM file and serial log, one a VM.
const ScratchPrefix = "pagecast-qemu-"

// handshakeWait bounds Start's QMP handshake, once QEMU's socket accepts.
var handshakeWait = 30 * time.Second

// RemoveStale removes the work directories of VMs whose pagecast died
// without removing its own (SIGKILL): a guest's RAM stays in /dev/shm
// until then. Starting a VM does it too.
func RemoveStale() []string { return scratch.Sweep(scratch.Base(), ScratchPrefix) }

// WaitBanner waits for the guest's banner on the serial port (QEMU boots
// its firmware first, which takes seconds here).
func (v *VM) WaitBanner(timeout time.Duration) (string, error) {
	return v.WaitSerialContext(context.Background(), "pagecast-guest ", timeout)
}

// WaitBannerContext is WaitBanner ended early by ctx (a signal).
func (v *VM) WaitBannerContext(ctx context.Context, timeout time.Duration) (string, error) {
	return v.WaitSerialContext(ctx, "pagecast-guest ", timeout)
}

// RunsPagecastGuest says whether the guest of the QEMU behind mon is
// pagecast's own: its status page, where pagecast's image keeps it, holds
// the magic the guest writes there as it boots. It reads guest memory
// through QMP (HMP's xp), so it tells the guest that runs, not the image
// QEMU was started with: a destination started with pagecast's image and
// then given a Linux guest by a migration reads false. A guest that has
// not yet booted that far, or booted another image, reads false too.
func RunsPagecastGuest(mon Runner) (bool, error) {
	k, err := guest.Load(guest.Image())
	if err != nil {
		return false, err
	}
	var out string
	if err := QMP(mon, "human-monitor-command", map[string]any{"command-line": fmt.Sprintf("xp /1wx %#x", k.StatusAddr)}, &out); err != nil {
		return false, fmt.Errorf("read the guest's status page: %w", err)
	}
	// "0000000000105000: 0x54534350"
	_, word, ok := strings.Cut(strings.TrimSpace(out), ": ")
	if !ok {
		return false, fmt.Errorf("read the guest's status page: xp said %q", out)
	}
	v, err := strconv.ParseUint(strings.TrimSpace(word), 0, 32)
	if err != nil {
		return false, fmt.Errorf("read the guest's status page: xp said %q", out)
	}
	return v == guest.StatusMagic, nil
}

// HoldsPagecastGuest is RunsPagecastGuest on the guest's RAM itself (a
// memory backend shared with pagecast, indexed by offset, which is the
// physical address below 2 GiB where the status page lies).
func HoldsPagecastGuest(mem []byte) bool {
	k, err := guest.Load(guest.Image())
	if err != nil {
		return false
	}
	st, err := guest.ReadStatus(mem, k.StatusAddr)
	return err == nil && st.Magic == guest.StatusMagic
}

// kernelPanic starts the line a Linux kernel prints when it panics (the
// rest says why: "VFS: Unable to mount root fs on …").
const kernelPanic = "Kernel panic - not syncing"

// ErrKernelPanic marks WaitSerial's error for a Linux guest whose kernel
// panicked: the line it waits for will never come.
var ErrKernelPanic = errors.New("the guest's kernel panicked")

// WaitSerial waits until the guest has printed substr on the serial port,
// and returns the output from substr to the end of that line (without the
// line ending). It reads the whole serial log each time: the first line
// holding substr wins, however long ago it was printed. A kernel panic on
// the serial port before substr ends the wait (ErrKernelPanic).
func (v *VM) WaitSerial(substr string, timeout time.Duration) (string, error) {
	return v.WaitSerialContext(context.Background(), substr, timeout)
}

// WaitSerialContext is WaitSerial ended early by ctx: a signal to the
// command waiting stops the wait (vm run and demo waited out their minutes
// after SIGTERM; found by a review walk).
func (v *VM) WaitSerialContext(ctx context.Context, substr string, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	for {
		var exited bool
		select {
		case <-v.exited: // the guest's last words are in the log now
			exited = true
		default:
		}
		log, _ := os.ReadFile(v.serial)
		if _, rest, ok := bytes.Cut(log, []byte(substr)); ok {
			if line, _, ok := bytes.Cut(rest, []byte("\n")); ok {
				return substr + strings.TrimSuffix(string(line), "\r"), nil
			}
		}
		if before, rest, ok := bytes.Cut(log, []byte(kernelPanic)); ok {
			why, _, _ := bytes.Cut(rest, []byte("\n"))
			return "", fmt.Errorf("%w before %q on the serial port: %s%s%s", ErrKernelPanic, substr,
				kernelPanic, strings.TrimSpace(string(why)), linesBefore(before, 4))
		}
		if exited {
			return "", fmt.Errorf("qemu exited before %q on the serial port: %s%s",
				substr, strings.TrimSpace(v.stderr.String()), serialTail(log))
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("no %q on qemu's serial port after %s%s", substr, timeout, serialTail(log))
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("waiting for %q on qemu's serial port: %w", substr, context.Cause(ctx))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// SerialPath is the file QEMU writes the guest's serial port to.
func (v *VM) SerialPath() string { return v.serial }

// linesBefore is the last n lines of the serial log before a kernel's
// panic, where the kernel says what went wrong before it gives up (an
// initramfs it could not unpack, a root it could not find); its stack
// trace follows the panic line and says nothing a user can act on.
func linesBefore(log []byte, n int) string {
	var lines []string
	for _, l := range strings.Split(terminalCodes.ReplaceAllString(string(log), ""), "\n") {
		if l = strings.TrimSpace(l); l != "" && !timestampOnly.MatchString(l) {
			lines = append(lines, l)
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	if len(lines) == 0 {
		return ""
	}
	return "; the lines before it: " + strings.Join(lines, "; ")
}

// terminalCodes are the firmware's terminal escapes and carriage returns
// on the serial port; timestampOnly, the kernel's time stamp that begins
// the panic line.
var (
	terminalCodes = regexp.MustCompile(`\x1b(\[[0-9;?]*[A-Za-z]|c)|\r`)
	timestampOnly = regexp.MustCompile(`^\[\s*\d+\.\d+\]$`)
)

// serialTail is the end of the serial log, for errors.
func serialTail(log []byte) string {
	const max = 600
	log = bytes.TrimSpace(log)
	if len(log) == 0 {
		return " (serial port silent)"
	}
	if len(log) > max {
		log = log[len(log)-max:]
	}
	return "; serial port's last output: " + strings.ReplaceAll(string(log), "\r", "")
}

// Close stops QEMU.
func (v *VM) Close() error {
	v.closeOnce.Do(func() {
		if v.Monitor != nil {
			v.Monitor.Disconnect()
		}
		v.cmd.Process.Kill()
		<-v.exited
		if v.mem != nil {
			unix.Munmap(v.mem)
		}
		if v.tmp != "" {
			scratch.Remove(v.tmp)
		}
	})
	return nil
}

// lockedBuffer is QEMU's standard error, written by exec's copier and read
// while QEMU runs.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
