package main

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pagecast/pagecast/collector"
	"github.com/pagecast/pagecast/internal/testutil"
	"github.com/pagecast/pagecast/qemu"
	"github.com/pagecast/pagecast/trace"
)

// TestProfile runs `pagecast profile` against `pagecast vm run` as a user
// would, and reads the trace it wrote.
func TestProfile(t *testing.T) {
	testutil.RequiresBPF(t)
	startVMRun(t, "--memory", "32M", "--workload", "phased:hot=256,period=20000")
	sock := lastSocket
	out := filepath.Join(t.TempDir(), "vm.pct")
	cmd := exec.Command(binary, "profile", "--qmp", "unix:"+sock, "--duration", "2s", "--out", out)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("pagecast profile: %v\n%s%s", err, stdout.String(), stderr.String())
	}
	text := stdout.String()
	for _, want := range []string{"profiling pagecast VM", "with tp_btf/kvm_dirty_ring_push", "epochs    1-10 ", "hottest 0x", "0 dropped"} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q:\n%s", want, text)
		}
	}
	meta, epochs, damage, err := trace.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if meta.MemoryBytes != 32<<20 || meta.Hook != "tp_btf/kvm_dirty_ring_push" || meta.Epoch != 100*time.Millisecond {
		t.Errorf("trace meta %+v", meta)
	}
	if len(epochs) < 15 || len(damage) != 0 {
		t.Fatalf("trace has %d epochs and damage %v, want at least 15 and none", len(epochs), damage)
	}
	for _, e := range epochs {
		if len(e.Pages) < 100 {
			t.Errorf("epoch %d has %d pages: the guest writes thousands per epoch", e.Index, len(e.Pages))
		}
	}
	checkProfileLines(t, text, epochs, 10)
}

// TestProfileBitmapBlind: profiling a VM with a dirty bitmap on kvm-pvm,
// whose kvm_page_fault tracepoint never fires, is refused saying why where
// profile would choose that hook (walk 128: it recorded an empty trace
// and exited 0); given by name, the hook is tried, and within 2 s a
// warning says that it sees nothing and why.
func TestProfileBitmapBlind(t *testing.T) {
	testutil.RequiresBPF(t)
	if !qemu.KVMEmulates() {
		t.Skip("needs kvm-pvm's KVM, whose kvm_page_fault tracepoint never fires")
	}
	startVMRun(t, "--memory", "32M", "--workload", "zipf", "--dirty", "bitmap")
	trc := filepath.Join(t.TempDir(), "x.pct")
	if out, err := exec.Command(binary, "profile", "--qmp", "unix:"+lastSocket, "--duration", "3s", "--quiet", "--out", trc).CombinedOutput(); err == nil ||
		!strings.Contains(string(out), "never fires under this host's KVM, kvm-pvm's: profile a VM with a dirty ring") {
		t.Errorf("profile choosing the bitmap hook on kvm-pvm: %v\n%s", err, out)
	}
	if _, err := os.Stat(trc); !os.IsNotExist(err) {
		t.Errorf("the refused profile left a trace: %v", err)
	}
	cmd := exec.Command(binary, "profile", "--qmp", "unix:"+lastSocket, "--duration", "3s", "--quiet", "--hook", bitmapHook)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("pagecast profile: %v\n%s%s", err, stdout.String(), stderr.String())
	}
	if !strings.Contains(stderr.String(), "saw no page dirtied in the first 2s: this host's KVM is kvm-pvm's") {
		t.Errorf("no warning:\n%s%s", stdout.String(), stderr.String())
	}
}

// checkProfileLines holds profile's printed lines of several epochs each
// (--interval over --epoch, per) to the trace it wrote: each line's pages
// are the distinct pages of its epochs.
func checkProfileLines(t *testing.T, text string, epochs []trace.Epoch, per int) {
	t.Helper()
	lines := regexp.MustCompile(`(?m)^epochs +(\d+)-(\d+) +(\d+) pages`).FindAllStringSubmatch(text, -1)
	if len(lines) == 0 {
		t.Fatalf("no line of several epochs:\n%s", text)
	}
	byIndex := map[uint64][]uint64{}
	for _, e := range epochs {
		byIndex[e.Index] = e.Pages
	}
	for _, l := range lines {
		from, _ := strconv.ParseUint(l[1], 10, 64)
		to, _ := strconv.ParseUint(l[2], 10, 64)
		pages, _ := strconv.Atoi(l[3])
		if int(to-from+1) > per || (int(to-from+1) < per && l[0] != lines[len(lines)-1][0]) {
			t.Errorf("line %q: want %d epochs a line (only the last may have fewer)", l[0], per)
		}
		distinct := map[uint64]bool{}
		for i := from; i <= to; i++ {
			for _, p := range byIndex[i] {
				distinct[p] = true
			}
		}
		if pages != len(distinct) || pages == 0 {
			t.Errorf("line %q: the trace's epochs %d to %d dirtied %d distinct pages", l[0], from, to, len(distinct))
		}
	}
}

// TestProfileErrors: what is missing is named, on one line, exit status 1.
func TestProfileErrors(t *testing.T) {
	testutil.RequiresBPF(t)
	startVMRun(t, "--memory", "16M", "--workload", "idle")
	sock := "unix:" + lastSocket
	for _, tc := range []struct {
		name   string
		args   []string
		nobody bool
		want   string
	}{
		{"no target", []string{"profile"}, false, "give --qmp"},
		{"no socket", []string{"profile", "--qmp", "unix:/nonexistent/qmp.sock"}, false, "connect to QMP socket /nonexistent/qmp.sock"},
		{"refused hook", []string{"profile", "--qmp", sock, "--hook", "fentry/mark_page_dirty_in_slot"}, false,
			"no usable KVM dirty tracking hook for dirty ring mode; fentry/mark_page_dirty_in_slot: load fentry/mark_page_dirty_in_slot: the kernel refused it"},
		{"hook of the other mode", []string{"profile", "--qmp", sock, "--hook", "tracepoint/kvm/kvm_page_fault"}, false,
			"hook tracepoint/kvm/kvm_page_fault does not see writes in dirty ring mode"},
		{"unknown hook", []string{"profile", "--qmp", sock, "--hook", "kprobe/nope"}, false, `unknown hook "kprobe/nope"`},
		{"no epoch", []string{"profile", "--qmp", sock, "--epoch", "0s"}, false, "--epoch 0s: want 10ms to 1h0m0s"},
		{"epoch under the collector's", []string{"profile", "--qmp", sock, "--epoch", "1ms"}, false, "--epoch 1ms: want 10ms to 1h0m0s"},
		{"year-long epoch", []string{"profile", "--qmp", sock, "--epoch", "8760h"}, false, "--epoch 8760h0m0s: want 10ms to 1h0m0s"},
		{"negative interval", []string{"profile", "--qmp", sock, "--interval", "-1s"}, false, "--interval -1s: want 0 or more"},
		{"negative duration", []string{"profile", "--qmp", sock, "--duration", "-5s"}, false, "--duration -5s: want a positive duration"},
		{"linger without metrics", []string{"profile", "--qmp", sock, "--metrics-linger", "10s"}, false, "--metrics-linger is how long --metrics serves after the end: give --metrics too"},
		{"not root", []string{"profile", "--qmp", sock}, true, "loading eBPF programs needs root"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name, args := binary, tc.args
			if tc.nobody {
				setpriv, err := exec.LookPath("setpriv")
				if err != nil {
					t.Skip("needs setpriv (util-linux) to drop root")
				}
				name, args = setpriv, append([]string{"--reuid=65534", "--regid=65534", "--clear-groups", binary}, args...)
				// The unprivileged user must reach the VM's socket (in
				// the test's own 0700 directories) to get as far as
				// loading the programs.
				openToAll(t, lastSocket)
			}
			cmd := exec.Command(name, args...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err := cmd.Run()
			msg := strings.TrimRight(stderr.String(), "\n")
			if err == nil || strings.Contains(msg, "\n") || !strings.Contains(msg, tc.want) {
				t.Fatalf("exit %v, stderr %q: want one line containing %q", err, msg, tc.want)
			}
		})
	}
}

// openToAll lets any user connect to the socket at path: it and the
// test's temporary directories above it are opened up.
func openToAll(t *testing.T, path string) {
	t.Helper()
	if err := os.Chmod(path, 0o666); err != nil {
		t.Fatal(err)
	}
	for d := filepath.Dir(path); d != os.TempDir() && d != "/" && d != "."; d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// TestProfileQEMUKVMStalls: profiling a QEMU KVM guest under kvm-pvm,
// whose dirty ring stops a guest once full, warns and says to profile
// under TCG.
func TestProfileQEMUKVMStalls(t *testing.T) {
	testutil.RequiresBPF(t)
	if !qemu.KVMEmulates() {
		t.Skip("needs kvm-pvm's KVM, whose dirty ring stops a QEMU guest once full")
	}
	if testing.Short() {
		t.Skip("boots QEMU under kvm-pvm; skipped in short mode")
	}
	vm := startQEMURunAccel(t, "kvm", "--memory", "32M", "--workload", "idle")
	cmd := exec.Command(binary, "profile", "--qmp", "unix:"+vm.sock, "--duration", "300ms", "--quiet")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("pagecast profile: %v\n%s%s", err, stdout.String(), stderr.String())
	}
	if !strings.Contains(stderr.String(), "under this host's kvm-pvm, QEMU's KVM dirty ring stops a guest for good once the ring fills") {
		t.Errorf("no warning:\n%s%s", stdout.String(), stderr.String())
	}
}

// TestProfileFailedStart: a profile that fails to start leaves an existing
// trace as it was (a --metrics port in use left 142 bytes, no epoch), and
// -o and --metrics are checked before the VM is attached to.
func TestProfileFailedStart(t *testing.T) {
	keep := importTrace(t)
	before, err := os.ReadFile(keep)
	if err != nil {
		t.Fatal(err)
	}
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	dir := t.TempDir()
	run := func(t *testing.T, want string, args ...string) {
		t.Helper()
		if err := os.WriteFile(keep, before, 0o644); err != nil { // as it was, whatever a case before did
			t.Fatal(err)
		}
		cmd := exec.Command(binary, append([]string{"profile", "--duration", "2s"}, args...)...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		msg := strings.TrimRight(stderr.String(), "\n")
		if err == nil || !strings.Contains(msg, want) {
			t.Fatalf("exit %v, stderr %q: want an error containing %q", err, msg, want)
		}
		if after, err := os.ReadFile(keep); err != nil || !bytes.Equal(after, before) {
			t.Fatalf("%s was %d bytes, is %d (%v)", keep, len(before), len(after), err)
		}
	}
	noVM := "unix:" + filepath.Join(dir, "absent.sock")
	t.Run("port in use, no VM", func(t *testing.T) {
		run(t, "--metrics: listen tcp "+busy.Addr().String()+": bind: address already in use",
			"--qmp", noVM, "--metrics", busy.Addr().String(), "-o", keep)
	})
	t.Run("out a directory, no VM", func(t *testing.T) {
		run(t, "--out "+dir+": is a directory", "--qmp", noVM, "-o", dir)
	})

	testutil.RequiresBPF(t)
	startVMRun(t, "--memory", "16M", "--workload", "idle")
	sock := "unix:" + lastSocket
	for _, tc := range []struct {
		name string
		want string
		args []string
	}{
		{"port in use", "address already in use", []string{"--metrics", busy.Addr().String()}},
		{"bad port", "--metrics: listen tcp: address 99999: invalid port", []string{"--metrics", "127.0.0.1:99999"}},
		{"unknown hook", `unknown hook "kprobe/nope"`, []string{"--hook", "kprobe/nope"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			run(t, tc.want, append([]string{"--qmp", sock, "-o", keep}, tc.args...)...)
		})
	}
}

// TestDroppedWhy: profile's last line says why writes were dropped, not
// only how many (66 672 dropped while a Linux guest booted, unexplained).
func TestDroppedWhy(t *testing.T) {
	if got := droppedWhy(collector.Stats{Dropped: map[string]uint64{"out_of_range": 0, "beyond_ram": 0}}); got != "" {
		t.Errorf("none dropped: %q", got)
	}
	got := droppedWhy(collector.Stats{Dropped: map[string]uint64{"out_of_range": 66672, "beyond_ram": 0, "new_reason": 3}})
	if want := " (new_reason: 3; out_of_range: 66672, stores past the pages the hook records: under TCG, the firmware's own memory, written while the guest boots)"; got != want {
		t.Errorf("%q, want %q", got, want)
	}
}

// TestMigrateDirtyLogBusyKVM: under KVM, where no plugin area keeps a
// second pagecast off a QEMU, one whose dirty log a pagecast migrate
// holds (a stand-in holding its lock file, this test binary with
// pagecast's argv) is refused by a second migrate with either engine. A
// second migrate's engine ran its rounds beside the first, and its dirty
// log's open lifted the first's throttle (found when /dev/kvm came back).
func TestMigrateDirtyLogBusyKVM(t *testing.T) {
	testutil.RequiresQEMUWithKVM(t)
	testutil.RequiresBPF(t)
	if testing.Short() {
		t.Skip("boots QEMU under KVM; skipped in short mode")
	}
	src := startQEMURunAccel(t, "kvm", "--memory", "32M", "--workload", "hotset")
	f, err := qemu.OpenLock("dirty-log", src.qemuPID)
	if err != nil {
		t.Fatal(err)
	}
	lock := f.Name()
	f.Close()
	holder := exec.Command(os.Args[0])
	holder.Args = []string{"pagecast", "--log-level", "warn", "migrate", "--qmp", "unix:" + src.sock}
	holder.Env = append(os.Environ(), holdArea+"="+lock)
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { holder.Process.Kill(); holder.Wait() }()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		b, _ := os.ReadFile("/proc/locks")
		if strings.Contains(string(b), fmt.Sprintf(" %d ", holder.Process.Pid)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the stand-in never held the lock")
		}
	}
	_, stderr, err := runApp(t, "migrate", "--qmp", "unix:"+src.sock, "--to", freeTCP(t), "--mode", "precopy", "--bandwidth", "32MiB/s")
	if err == nil || !strings.Contains(err.Error(), "dirty log is in use") || !strings.Contains(err.Error(), fmt.Sprintf("process %d (pagecast", holder.Process.Pid)) {
		t.Errorf("migrate --engine auto beside pagecast's engine: %v\n%s", err, stderr)
	}
	_, stderr, err = runApp(t, "migrate", "--qmp", "unix:"+src.sock, "--to", freeTCP(t), "--engine", "qemu", "--mode", "precopy", "--bandwidth", "32MiB/s")
	if err == nil || !strings.Contains(err.Error(), "pagecast's engine is migrating this VM already") {
		t.Errorf("migrate --engine qemu beside pagecast's engine: %v\n%s", err, stderr)
	}
}

// TestProfileMigratedAway: a profile of a VM that is paused says so once,
// and one of a VM that migrates away ends, saying why, with its trace
// kept; it went on recording empty epochs until stopped (found by a
// new-user walk).
func TestProfileMigratedAway(t *testing.T) {
	testutil.RequiresBPF(t)
	uri := freeTCP(t)
	src := startVMRunProc(t, "--memory", "32M", "--workload", "hotset")
	startVMRunProc(t, "--memory", "32M", "--incoming", uri)
	out := filepath.Join(t.TempDir(), "vm.pct")
	prof := exec.Command(binary, "profile", "--qmp", "unix:"+src.sock, "--duration", "60s", "--out", out)
	var stdout, stderr syncBuffer
	prof.Stdout, prof.Stderr = &stdout, &stderr
	if err := prof.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- prof.Wait() }()
	defer prof.Process.Kill()
	time.Sleep(time.Second)
	if _, err := src.mon.Run([]byte(`{"execute":"stop"}`)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2500 * time.Millisecond)
	if _, err := src.mon.Run([]byte(`{"execute":"cont"}`)); err != nil {
		t.Fatal(err)
	}
	if b, err := exec.Command(binary, "migrate", "--qmp", "unix:"+src.sock, "--to", uri).CombinedOutput(); err != nil {
		t.Fatalf("migrate: %v\n%s", err, b)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("profile: %v\n%s%s", err, stdout.String(), stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("profile still runs 10 s after its VM migrated away:\n%s%s", stdout.String(), stderr.String())
	}
	for _, want := range []string{"the VM's run state is paused", "the VM has migrated away (run state postmigrate)"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("profile's stderr lacks %q:\n%s", want, stderr.String())
		}
	}
	if _, epochs, damage, err := trace.ReadFile(out); err != nil || len(damage) != 0 || len(epochs) < 30 {
		t.Errorf("trace: %d epochs, damage %v, %v", len(epochs), damage, err)
	}
}

// TestServeMigratedAway: predict serve --collector on a VM that migrates
// away ends, exit status 1, saying why, as a profile of it does: it went
// on serving a guest that wrote nothing, and the dashboards' alert that
// the predictor is down never fired (walk 129).
func TestServeMigratedAway(t *testing.T) {
	testutil.RequiresBPF(t)
	uri := freeTCP(t)
	src := startVMRunProc(t, "--memory", "32M", "--workload", "hotset")
	startVMRunProc(t, "--memory", "32M", "--incoming", uri)
	listen := freeAddr(t)
	serve := exec.Command(binary, "predict", "serve", "--collector", "unix:"+src.sock, "--listen", listen)
	var stderr syncBuffer
	serve.Stderr = &stderr
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { serve.Process.Kill(); serve.Wait() }()
	scrape(t, "http://"+listen+"/v1/vms", `"epochs_observed"`)
	if b, err := exec.Command(binary, "migrate", "--qmp", "unix:"+src.sock, "--to", uri).CombinedOutput(); err != nil {
		t.Fatalf("migrate: %v\n%s", err, b)
	}
	exited, err := waitExit(serve, 10*time.Second)
	if !exited {
		t.Fatalf("predict serve still runs 10 s after its VM migrated away:\n%s", stderr.String())
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(stderr.String(), "the VM has migrated away (run state postmigrate)") {
		t.Errorf("predict serve, its VM migrated away: %v, want exit status 1 saying why:\n%s", err, stderr.String())
	}
}

// TestProfileIncoming: a profile of a destination waiting for its
// migration says so; it said "give --pid", and with one recorded empty
// epochs (found by a new-user walk).
func TestProfileIncoming(t *testing.T) {
	testutil.RequiresBPF(t)
	dst := startVMRunProc(t, "--memory", "32M", "--incoming", freeTCP(t))
	_, stderr, err := runApp(t, "profile", "--qmp", "unix:"+dst.sock, "--duration", "1s")
	if err == nil || !strings.Contains(err.Error(), "waiting for an incoming migration (run state inmigrate)") {
		t.Fatalf("profile of an incoming VM: %v\n%s", err, stderr)
	}
}

// TestProfileStoppedAttaching: a signal while profile waits for the VM's
// QMP greeting (another client holds QEMU's one connection) stops it at
// once, saying so, exit status 1: it waited out the 5 s greeting (walk 59).
func TestProfileStoppedAttaching(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "busy.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan struct{}, 1)
	go func() {
		for {
			c, err := l.Accept() // and never greet
			if err != nil {
				return
			}
			defer c.Close()
			select {
			case accepted <- struct{}{}:
			default:
			}
		}
	}()
	cmd := exec.Command(binary, "profile", "--qmp", "unix:"+sock, "--duration", "10s")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Once it has connected, waiting for the greeting (its signals are
	// caught before it dials): a fixed 500 ms was not always enough for it
	// to start, on a loaded host under CI (CI 57: killed by the SIGTERM).
	select {
	case <-accepted:
	case <-time.After(30 * time.Second):
		t.Fatal("profile did not connect in 30 s")
	}
	time.Sleep(100 * time.Millisecond)
	sent := time.Now()
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
	if took := time.Since(sent); took > 2*time.Second || cmd.ProcessState.ExitCode() != 1 ||
		!strings.Contains(stderr.String(), "stopped by a signal while attaching to the VM: nothing was profiled") {
		t.Errorf("profile stopped while attaching: exit %d after %v\n%s", cmd.ProcessState.ExitCode(), took, stderr.String())
	}
}

// TestStoppedWarning: a profile by a KVM hook on kvm-pvm whose guest wrote
// and then wrote nothing for its last 2 s says it may be stopped (walk 74:
// a guest frozen by the dirty ring read as idle); not under TCG, nor on
// another KVM, nor where it never wrote or wrote to the end.
func TestStoppedWarning(t *testing.T) {
	const epoch = 100 * time.Millisecond
	if w := stoppedWarning(4096, 30, 20, epoch, "tp_btf/kvm_dirty_ring_push", true); !strings.Contains(w, "wrote nothing in the last 3s, having written 4096 pages before: under kvm-pvm") {
		t.Errorf("a guest stopped under kvm-pvm: %q", w)
	}
	for _, tc := range []struct {
		pages, trailing uint64
		hook            string
		emulates        bool
	}{{4096, 30, collector.HookTCG, true}, {4096, 30, "tp_btf/kvm_dirty_ring_push", false}, {0, 30, "tp_btf/kvm_dirty_ring_push", true}, {4096, 19, "tp_btf/kvm_dirty_ring_push", true}} {
		if w := stoppedWarning(tc.pages, tc.trailing, 20, epoch, tc.hook, tc.emulates); w != "" {
			t.Errorf("%+v: %q, want no warning", tc, w)
		}
	}
}

// TestListHooks: --list-hooks says of each eBPF hook whether it can see
// anything here: on a host without /dev/kvm none is "ok" (walk 121).
func TestListHooks(t *testing.T) {
	stdout, _, err := runApp(t, "profile", "--list-hooks")
	if err != nil {
		t.Fatal(err)
	}
	_, statErr := os.Stat("/dev/kvm")
	noKVM := errors.Is(statErr, fs.ErrNotExist)
	rows := 0
	for _, line := range strings.Split(stdout, "\n") {
		f := strings.Fields(line)
		if len(f) < 3 || !strings.Contains(f[0], "/") { // the eBPF hooks' rows
			continue
		}
		rows++
		if noKVM && f[2] == "ok" {
			t.Errorf("no /dev/kvm here, and the hook is said ok: %q", line)
		}
		if !noKVM && strings.Contains(line, "no /dev/kvm here") {
			t.Errorf("/dev/kvm is here: %q", line)
		}
	}
	if rows < 4 || !strings.Contains(stdout, "tcg-plugin") {
		t.Errorf("--list-hooks lists %d eBPF hooks:\n%s", rows, stdout)
	}
}
