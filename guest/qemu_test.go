package guest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/digitalocean/go-qemu/qmp"
)

const qemuMemory = 64 << 20

// qemuGuest is the embedded image booted under QEMU, watched through its
// serial log and QMP.
type qemuGuest struct {
	dir        string
	serial     string
	mon        *qmp.SocketMonitor
	statusAddr uint64
}

// requireQEMU skips the test unless QEMU and KVM are there to boot the guest.
func requireQEMU(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("boots QEMU; skipped in short mode")
	}
	path, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Skipf("needs qemu-system-x86_64 (Debian: qemu-system-x86): %v", err)
	}
	kvm, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("needs KVM: %v", err)
	}
	kvm.Close()
	return path
}

// startQEMU boots the guest with a command line and extra QEMU arguments,
// and connects to its QMP socket. QEMU is killed when the test ends.
func startQEMU(t *testing.T, cmdline string, extra ...string) *qemuGuest {
	qemu := requireQEMU(t)
	k, err := Load(Image())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	g := &qemuGuest{dir: dir, serial: filepath.Join(dir, "serial.log"), statusAddr: k.StatusAddr}
	kernel := filepath.Join(dir, "pagecast-guest.elf")
	if err := os.WriteFile(kernel, Image(), 0o644); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "qmp.sock")
	args := append([]string{
		"-enable-kvm", "-machine", "pc", "-m", fmt.Sprint(qemuMemory >> 20),
		"-nographic", "-nodefaults",
		"-serial", "file:" + g.serial,
		"-qmp", "unix:" + sock + ",server=on,wait=off",
		"-kernel", kernel, "-append", cmdline,
	}, extra...)
	cmd := exec.Command(qemu, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("qemu %s\nstderr: %s", strings.Join(args, " "), stderr.String())
		}
	})

	deadline := time.Now().Add(5 * time.Second)
	for {
		g.mon, err = qmp.NewSocketMonitor("unix", sock, 2*time.Second)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("connect to QMP: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := g.mon.Connect(); err != nil {
		t.Fatalf("connect to QMP: %v", err)
	}
	t.Cleanup(func() { g.mon.Disconnect() })
	return g
}

// waitSerial waits for a serial line starting with prefix and returns it.
func (g *qemuGuest) waitSerial(t *testing.T, prefix string) string {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		log, _ := os.ReadFile(g.serial)
		if _, line, ok := bytes.Cut(log, []byte(prefix)); ok {
			if line, _, ok := bytes.Cut(line, []byte("\n")); ok {
				return prefix + string(line)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	log, _ := os.ReadFile(g.serial)
	t.Fatalf("no serial line %q in 15 s; serial log:\n%s", prefix, log)
	return ""
}

// readMemory copies guest memory out through QMP's pmemsave.
func (g *qemuGuest) readMemory(t *testing.T, addr, size uint64) []byte {
	t.Helper()
	path := filepath.Join(g.dir, "pmem")
	cmd := fmt.Sprintf(`{"execute":"pmemsave","arguments":{"val":%d,"size":%d,"filename":%q}}`, addr, size, path)
	if _, err := g.mon.Run([]byte(cmd)); err != nil {
		t.Fatalf("pmemsave: %v", err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// status reads the status page through QMP.
func (g *qemuGuest) status(t *testing.T) Status {
	t.Helper()
	mem := make([]byte, g.statusAddr+PageSize)
	copy(mem[g.statusAddr:], g.readMemory(t, g.statusAddr, PageSize))
	s, err := ReadStatus(mem, g.statusAddr)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestQEMUSweep(t *testing.T) {
	t.Parallel()
	w, err := ParseWorkload("sweep")
	if err != nil {
		t.Fatal(err)
	}
	g := startQEMU(t, w.Cmdline(1))
	banner := g.waitSerial(t, "pagecast-guest ")
	if !strings.HasPrefix(banner, "pagecast-guest v1 workload=sweep cpus=1 ") {
		t.Errorf("banner %q", banner)
	}

	before := g.status(t)
	start := time.Now()
	time.Sleep(time.Second)
	after := g.status(t)
	elapsed := time.Since(start)
	if after.State != StateRunning || WorkloadName(after.Workload) != "sweep" || after.CPUs != 1 {
		t.Errorf("status %v, want sweep running on 1 CPU", after)
	}
	if after.ArenaFirstPage != ArenaStart/PageSize || after.ArenaPages < (qemuMemory-MinMemory)/PageSize {
		t.Errorf("arena %d+%d pages, want it from 4 MiB to about 64 MiB", after.ArenaFirstPage, after.ArenaPages)
	}
	writes := after.TotalProgress() - before.TotalProgress()
	if writes == 0 {
		t.Fatalf("progress stuck at %d", after.TotalProgress())
	}
	t.Logf("sweep: %.0f writes/s", float64(writes)/elapsed.Seconds())
}

// TestQEMUArenaContent boots a gated hotset with the arena content loaded by
// QEMU's loader device and guest memory shared with the test through a
// file: the content must arrive, the guest must wait at the gate until
// Release, then write.
func TestQEMUArenaContent(t *testing.T) {
	t.Parallel()
	requireQEMU(t)
	dir := t.TempDir()
	arena := filepath.Join(dir, "arena.raw")
	if err := WriteArenaFile(arena, qemuMemory, DefaultMix, 42); err != nil {
		t.Fatal(err)
	}
	memFile := filepath.Join(dir, "memory")
	w, err := ParseWorkload("hotset:hot=16,p=1,gate=1")
	if err != nil {
		t.Fatal(err)
	}
	g := startQEMU(t, w.Cmdline(1),
		"-object", fmt.Sprintf("memory-backend-file,id=mem,size=%d,mem-path=%s,share=on", qemuMemory, memFile),
		"-machine", "memory-backend=mem",
		"-device", fmt.Sprintf("loader,file=%s,addr=%#x,force-raw=on", arena, ArenaStart))
	g.waitSerial(t, "pagecast-guest v1 workload=hotset ")

	// Arena pages 64 to 127: far from the 16 hot pages the guest writes.
	want := make([]byte, qemuMemory)
	FillArena(want, DefaultMix, 42)
	addr := uint64(ArenaStart + 64*PageSize)
	if got := g.readMemory(t, addr, 64*PageSize); !bytes.Equal(got, want[addr:addr+64*PageSize]) {
		t.Error("arena content read back through pmemsave differs from FillArena's")
	}

	mem := mapFile(t, memFile, qemuMemory)
	s, err := ReadStatus(mem, g.statusAddr)
	if err != nil {
		t.Fatal(err)
	}
	if s.State != StateWaiting || s.TotalProgress() != 0 {
		t.Fatalf("status %v, want waiting at the gate with no writes", s)
	}
	if err := Release(mem, g.statusAddr); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(3 * time.Second)
	for s.TotalProgress() == 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		if s, err = ReadStatus(mem, g.statusAddr); err != nil {
			t.Fatal(err)
		}
	}
	if s.State != StateRunning || s.TotalProgress() == 0 {
		t.Errorf("status %v after Release, want running with writes", s)
	}
}

// mapFile maps a file shared, to see the guest memory QEMU keeps in it.
func mapFile(t *testing.T, path string, size int) []byte {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	mem, err := syscall.Mmap(int(f.Fd()), 0, size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Munmap(mem) })
	return mem
}

func TestQEMUBadParameter(t *testing.T) {
	t.Parallel()
	g := startQEMU(t, "workload=sweep colour=blue")
	if line := g.waitSerial(t, "pagecast-guest "); line != `pagecast-guest error: unknown parameter in "colour=blue"` {
		t.Errorf("serial line %q, want the error", line)
	}
	if s := g.status(t); s.State != StateFailed || s.Error != ErrorCmdline {
		t.Errorf("status %v, want failed with error cmdline", s)
	}
}
