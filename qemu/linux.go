package qemu

import (
	"bytes"
	"compress/bzip2"
	"compress/gzip"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
)

// A Linux guest: QEMU boots a kernel (Options.Kernel, typically Debian's,
// DebianKernel) with an initramfs (Options.Initrd, typically one
// BuildInitramfs makes from the host's static busybox) instead of the
// pagecast guest. Its console is the serial port; VM.WaitSerial waits for
// the lines /init prints. It has no status page: GuestStatus fails with
// ErrLinuxGuest, and what it writes is seen only through the dirty hooks
// (the TCG plugin, KVM's dirty ring) or by reading VM.Memory.

// Lines the initramfs's /init prints on the console, each followed by more
// words on the same line (see BuildInitramfs).
const (
	LinuxStartMarker = "pagecast-linux start" // the system is up; the command starts
	LinuxDoneMarker  = "pagecast-linux done"  // the command ended ("status=N" follows)
)

// LinuxAppend is a kernel command line that boots Debian's kernel quickly
// under TCG: no boot messages on the (emulated, slow) serial port, no
// speculation mitigations, no BIOS disk probing. Start puts console=ttyS0
// before any command line.
const LinuxAppend = "quiet mitigations=off edd=off"

// ErrLinuxGuest is returned by what only the pagecast guest has (its status
// page) when the VM runs a Linux kernel.
var ErrLinuxGuest = errors.New("the VM runs a Linux kernel, not the pagecast guest: it has no status page")

// linuxBootArgs are QEMU's options that boot o.Kernel: -kernel, -initrd,
// -append with the console on the serial port.
func linuxBootArgs(o Options) ([]string, error) {
	for _, f := range []struct{ what, path string }{{"kernel", o.Kernel}, {"initrd", o.Initrd}} {
		if f.path == "" {
			continue
		}
		if strings.Contains(f.path, ",") {
			return nil, fmt.Errorf("%s %q: QEMU options cannot hold ','", f.what, f.path)
		}
		r, err := os.Open(f.path)
		if err != nil {
			return nil, fmt.Errorf("linux %s: %w", f.what, err)
		}
		r.Close()
	}
	args := []string{"-kernel", o.Kernel, "-append", strings.TrimSpace("console=ttyS0 " + o.Append)}
	if o.Initrd != "" {
		args = append(args, "-initrd", o.Initrd)
	}
	return args, nil
}

// ErrNoKernel is wrapped by DebianKernel's error when /boot holds no kernel.
var ErrNoKernel = errors.New("no kernel in /boot (Debian package linux-image-amd64)")

// DebianKernel is the path of the newest /boot/vmlinuz-* (by version), the
// host distribution's kernel, checked to be readable (Debian makes it
// readable by all; other distributions by root only).
func DebianKernel() (string, error) {
	return newestKernel("/boot")
}

func newestKernel(dir string) (string, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "vmlinuz-*"))
	if err != nil {
		return "", err
	}
	if len(paths) == 0 {
		return "", fmt.Errorf("%w: %s/vmlinuz-* matches nothing", ErrNoKernel, dir)
	}
	slices.SortFunc(paths, compareVersions)
	newest := paths[len(paths)-1]
	f, err := os.Open(newest)
	if err != nil {
		return "", fmt.Errorf("linux kernel: %w", err)
	}
	f.Close()
	return newest, nil
}

// compareVersions orders strings as version numbers do: runs of digits
// compare by value ("6.10" after "6.9"), the rest byte by byte.
func compareVersions(a, b string) int {
	for a != "" && b != "" {
		da, db := digitRun(a), digitRun(b)
		if da > 0 && db > 0 {
			na, nb := strings.TrimLeft(a[:da], "0"), strings.TrimLeft(b[:db], "0")
			if c := len(na) - len(nb); c != 0 {
				return c
			}
			if c := strings.Compare(na, nb); c != 0 {
				return c
			}
			a, b = a[da:], b[db:]
			continue
		}
		if a[0] != b[0] {
			return int(a[0]) - int(b[0])
		}
		a, b = a[1:], b[1:]
	}
	return len(a) - len(b)
}

func digitRun(s string) int {
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	return i
}

// PVHKernel returns a kernel QEMU boots without decompressing it in the
// guest: for a bzImage (/boot/vmlinuz-*), the vmlinux it carries,
// decompressed on the host into dir/vmlinux, an ELF QEMU starts at its
// PVH entry point (Linux's CONFIG_PVH, on in Debian's kernels). Under TCG
// the guest's own decompression of Debian's XZ kernel takes most of a
// boot (about 9 of 13 s here, 50 s with the TCG plugin); the host does it
// in about a second. A kernel that already is an ELF is returned as is.
// Gzip and bzip2 payloads are decompressed in Go; XZ and zstd (Debian's)
// with the host's xz or zstd.
func PVHKernel(kernel, dir string) (string, error) {
	img, err := os.ReadFile(kernel)
	if err != nil {
		return "", fmt.Errorf("pvh kernel: %w", err)
	}
	if bytes.HasPrefix(img, []byte(elf.ELFMAG)) {
		if err := checkPVH(img); err != nil {
			return "", fmt.Errorf("pvh kernel %s: %w", kernel, err)
		}
		return kernel, nil
	}
	payload, err := bzImagePayload(img)
	if err != nil {
		return "", fmt.Errorf("pvh kernel %s: %w", kernel, err)
	}
	vmlinux, err := decompress(payload)
	if err != nil {
		return "", fmt.Errorf("pvh kernel %s: %w", kernel, err)
	}
	if err := checkPVH(vmlinux); err != nil {
		return "", fmt.Errorf("pvh kernel %s: %w", kernel, err)
	}
	path := filepath.Join(dir, "vmlinux")
	if err := os.WriteFile(path, vmlinux, 0o644); err != nil {
		return "", fmt.Errorf("pvh kernel: %w", err)
	}
	return path, nil
}

// bzImagePayload is the compressed vmlinux inside a bzImage: the setup
// header (Documentation/arch/x86/boot.rst) gives the setup sectors, after
// which the protected-mode part starts, and the payload's offset in it and
// length.
func bzImagePayload(img []byte) ([]byte, error) {
	if len(img) < 0x250 || string(img[0x202:0x206]) != "HdrS" {
		return nil, errors.New("not a bzImage (no HdrS setup header)")
	}
	if version := binary.LittleEndian.Uint16(img[0x206:]); version < 0x208 {
		return nil, fmt.Errorf("boot protocol %#x, before payload_offset (2.08)", version)
	}
	setupSects := int(img[0x1f1])
	if setupSects == 0 {
		setupSects = 4
	}
	off := (setupSects+1)*512 + int(binary.LittleEndian.Uint32(img[0x248:]))
	n := int(binary.LittleEndian.Uint32(img[0x24c:]))
	if off+n > len(img) {
		return nil, fmt.Errorf("payload [%d, %d) past the file's %d bytes", off, off+n, len(img))
	}
	return img[off : off+n], nil
}

// decompress undoes a bzImage payload's compression, told by its magic.
// The payload may end with the decompressed size (4 bytes), which the
// decompressors here ignore.
func decompress(p []byte) ([]byte, error) {
	tool := func(name, pkg string, args ...string) ([]byte, error) {
		path, err := exec.LookPath(name)
		if err != nil {
			return nil, fmt.Errorf("kernel payload compressed with %s: %w (Debian package %s)", name, err, pkg)
		}
		cmd := exec.Command(path, args...)
		cmd.Stdin = bytes.NewReader(p)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return nil, fmt.Errorf("decompress kernel payload with %s: %w: %s", name, err, strings.TrimSpace(stderr.String()))
		}
		return out, nil
	}
	switch {
	case bytes.HasPrefix(p, []byte("\x1f\x8b")):
		r, err := gzip.NewReader(bytes.NewReader(p))
		if err != nil {
			return nil, fmt.Errorf("decompress kernel payload: %w", err)
		}
		r.Multistream(false)
		return io.ReadAll(r)
	case bytes.HasPrefix(p, []byte("BZh")):
		return io.ReadAll(bzip2.NewReader(bytes.NewReader(p)))
	case bytes.HasPrefix(p, []byte("\xfd7zXZ\x00")):
		return tool("xz", "xz-utils", "-dc", "--single-stream")
	case bytes.HasPrefix(p, []byte("\x28\xb5\x2f\xfd")):
		return tool("zstd", "zstd", "-dc")
	}
	return nil, fmt.Errorf("kernel payload in an unknown compression (magic % x): want gzip, bzip2, xz or zstd", p[:min(6, len(p))])
}

// checkPVH says whether an ELF kernel has Xen's PHYS32_ENTRY note, the
// PVH entry point QEMU needs to boot an uncompressed kernel.
func checkPVH(img []byte) error {
	f, err := elf.NewFile(bytes.NewReader(img))
	if err != nil {
		return err
	}
	const xenElfnotePhys32Entry = 18
	for _, p := range f.Progs {
		if p.Type != elf.PT_NOTE {
			continue
		}
		notes, err := io.ReadAll(p.Open())
		if err != nil {
			return err
		}
		for len(notes) >= 12 {
			namesz := int(binary.LittleEndian.Uint32(notes))
			descsz := int(binary.LittleEndian.Uint32(notes[4:]))
			typ := binary.LittleEndian.Uint32(notes[8:])
			name := notes[12:min(len(notes), 12+namesz)]
			if string(bytes.TrimRight(name, "\x00")) == "Xen" && typ == xenElfnotePhys32Entry {
				return nil
			}
			next := 12 + (namesz+3)&^3 + (descsz+3)&^3
			if next > len(notes) {
				break
			}
			notes = notes[next:]
		}
	}
	return errors.New("no PVH entry point (Xen ELF note PHYS32_ENTRY): a kernel built without CONFIG_PVH")
}

// InitramfsOptions describe the initramfs BuildInitramfs makes.
type InitramfsOptions struct {
	// Busybox is a statically linked busybox; default: /bin/busybox
	// (Debian package busybox-static).
	Busybox string
	// Command is a busybox sh script /init runs once the system is up, its
	// output on the console, for example a loop that writes memory:
	//	while :; do dd if=/dev/zero of=/dev/shm/x bs=1M count=64; done
	// Empty: none (the markers follow each other).
	Command string
	// Stay keeps the guest running after Command ends (/init sleeps
	// forever); by default /init powers the machine off, and QEMU exits.
	Stay bool
	// Files are host files copied into the initramfs, by their path in it
	// ("/bin/stress": "/usr/local/bin/stress-static"); they keep their
	// permissions. Static binaries, as the initramfs holds no libraries.
	Files map[string]string
}

// ErrNoBusybox is wrapped by BuildInitramfs's error when busybox is missing.
var ErrNoBusybox = errors.New("no static busybox (Debian package busybox-static)")

// initScript is /init: busybox sh as PID 1. It mounts the usual file
// systems (tmpfs on /dev/shm and /tmp, for workloads that write memory
// through files), prints LinuxStartMarker with the kernel release and the
// memory the kernel sees, runs /pagecast/command, prints LinuxDoneMarker
// with its exit status, and powers off (or sleeps, with Stay).
const initScript = `#!/bin/sh
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/shm /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /tmp
echo "` + LinuxStartMarker + ` $(uname -r) $(awk '/^MemTotal/ {print $2 $3}' /proc/meminfo)"
sh /pagecast/command
echo "` + LinuxDoneMarker + ` status=$?"
%s
`

const (
	initPowerOff = "sync\npoweroff -f\nwhile :; do sleep 3600; done # if the machine cannot power off"
	initStay     = "while :; do sleep 3600; done"
)

// BuildInitramfs writes dir/initramfs.cpio.gz, a gzip'd newc cpio archive
// the kernel unpacks as its root file system: busybox as /bin/busybox
// with a symbolic link for each of its applets (busybox --list-full), the
// /init script (see initScript) running o.Command, /dev/console (the
// kernel opens it for /init before devtmpfs is mounted) and o.Files. It
// returns the archive's path.
func BuildInitramfs(dir string, o InitramfsOptions) (string, error) {
	bb := o.Busybox
	if bb == "" {
		bb = "/bin/busybox"
	}
	busybox, err := os.ReadFile(bb)
	if errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("%w: %s is missing", ErrNoBusybox, bb)
	}
	if err != nil {
		return "", fmt.Errorf("read busybox: %w", err)
	}
	if !isStaticELF(busybox) {
		return "", fmt.Errorf("%w: %s is dynamically linked or not an ELF executable", ErrNoBusybox, bb)
	}
	list, err := exec.Command(bb, "--list-full").Output()
	if err != nil {
		return "", fmt.Errorf("list busybox applets (%s --list-full): %w", bb, err)
	}

	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	c := newCPIOWriter(gz)
	for _, d := range []string{"bin", "sbin", "usr/bin", "usr/sbin", "proc", "sys", "dev", "tmp", "root", "etc", "pagecast"} {
		c.Dir(d, 0o755)
	}
	c.CharDev("dev/console", 0o600, 5, 1)
	c.CharDev("dev/null", 0o666, 1, 3)
	c.File("bin/busybox", 0o755, busybox)
	for _, applet := range strings.Fields(string(list)) {
		applet = cpioName(applet)
		if applet == "bin/busybox" {
			continue
		}
		c.Symlink(applet, "/bin/busybox")
	}
	if !slices.Contains(strings.Fields(string(list)), "bin/sh") {
		c.Symlink("bin/sh", "/bin/busybox")
	}
	end := initPowerOff
	if o.Stay {
		end = initStay
	}
	c.File("init", 0o755, fmt.Appendf(nil, initScript, end))
	c.File("pagecast/command", 0o644, []byte(o.Command+"\n"))
	names := make([]string, 0, len(o.Files))
	for name := range o.Files {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		host := o.Files[name]
		data, err := os.ReadFile(host)
		if err != nil {
			return "", fmt.Errorf("initramfs file %s: %w", name, err)
		}
		st, err := os.Stat(host)
		if err != nil {
			return "", fmt.Errorf("initramfs file %s: %w", name, err)
		}
		c.File(name, st.Mode().Perm(), data)
	}
	if err := c.Close(); err != nil {
		return "", fmt.Errorf("write initramfs: %w", err)
	}
	if err := gz.Close(); err != nil {
		return "", fmt.Errorf("write initramfs: %w", err)
	}
	path := filepath.Join(dir, "initramfs.cpio.gz")
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		return "", fmt.Errorf("write initramfs: %w", err)
	}
	return path, nil
}

// isStaticELF says whether b is an ELF executable without a PT_INTERP
// program header: it needs no dynamic loader and no libraries.
func isStaticELF(b []byte) bool {
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		return false
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return false
		}
	}
	return f.Type == elf.ET_EXEC || f.Type == elf.ET_DYN
}
