package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/pagecast/pagecast/internal/testutil"
	"github.com/pagecast/pagecast/qemu"
	"github.com/pagecast/pagecast/qmpclient"
)

// binary is pagecast built once for the tests that run it as a user would.
var binary string

// lastSocket is the QMP socket of the latest startVMRun.
var lastSocket string

// holdArea, set in its environment to a plugin area's path, makes this
// test binary a stand-in for a pagecast migrate holding that area (its
// argv as the test gives it), until killed.
const holdArea = "PAGECAST_TEST_HOLD_AREA"

func TestMain(m *testing.M) {
	if path := os.Getenv(holdArea); path != "" {
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil || syscall.Flock(int(f.Fd()), syscall.LOCK_EX) != nil {
			os.Exit(3)
		}
		time.Sleep(time.Minute)
		os.Exit(0)
	}
	dir, err := os.MkdirTemp("", "pagecast-test")
	if err != nil {
		panic(err)
	}
	// Runnable by an unprivileged user too (TestProfileErrors).
	if err := os.Chmod(dir, 0o755); err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "pagecast")
	// Built as the tests are: with the race detector under -race, and
	// without it where make test runs the tests too slow under it.
	build := []string{"build", "-o", binary, "."}
	if raceEnabled {
		build = []string{"build", "-race", "-o", binary, "."}
	}
	if out, err := exec.Command("go", build...).CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build pagecast: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// slowUnderRace skips t under the race detector, which makes it take
// several times as long: cmd/pagecast's tests took 821 of their 900 s
// under it on a CI run of 2026-12-05. make test runs it again without
// (the Makefile's second go test), where it takes what it says.
func slowUnderRace(t *testing.T, without string) {
	t.Helper()
	if raceEnabled {
		t.Skipf("%s without the race detector, several times that under it, which cmd/pagecast's share of make test cannot spare; make test runs it without", without)
	}
}

// startVMRun runs `pagecast vm run` with args and a QMP socket, and returns
// a connected go-qemu monitor.
func startVMRun(t *testing.T, args ...string) *qmpclient.Client {
	t.Helper()
	return startVMRunProc(t, args...).mon
}

// vmRun is a `pagecast vm run` process under test.
type vmRun struct {
	mon    *qmpclient.Client
	sock   string
	cmd    *exec.Cmd
	stderr *syncBuffer // read while the process writes it
	done   chan error  // receives the exit once
}

func startVMRunProc(t *testing.T, args ...string) *vmRun {
	t.Helper()
	testutil.RequiresKVM(t)
	sock := filepath.Join(t.TempDir(), "qmp.sock")
	lastSocket = sock
	cmd := exec.Command(binary, append([]string{"vm", "run", "--monitor", "pagecast", "--qmp", "unix:" + sock}, args...)...)
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	exited := make(chan struct{})
	go func() { done <- cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			t.Errorf("pagecast vm run did not stop on SIGINT")
		}
		if t.Failed() {
			t.Logf("pagecast stderr:\n%s", stderr.String())
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			break
		}
		select {
		case <-exited:
			t.Fatalf("pagecast vm run exited: %v\n%s", <-done, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no QMP socket after 10s\n%s", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	mon, err := qmpclient.Dial("unix", sock, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := mon.Connect(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mon.Disconnect() })
	return &vmRun{mon: mon, sock: sock, cmd: cmd, stderr: &stderr, done: done}
}

// run sends a QMP command and decodes its "return" into a map.
func run(t *testing.T, mon *qmpclient.Client, cmd string, args any) map[string]any {
	t.Helper()
	raw, err := runErr(mon, cmd, args)
	if err != nil {
		t.Fatalf("%s: %v", cmd, err)
	}
	var reply struct {
		Return map[string]any `json:"return"`
	}
	if err := json.Unmarshal(raw, &reply); err != nil {
		t.Fatalf("%s: %v in %s", cmd, err, raw)
	}
	return reply.Return
}

func runErr(mon *qmpclient.Client, cmd string, args any) ([]byte, error) {
	req := map[string]any{"execute": cmd}
	if args != nil {
		req["arguments"] = args
	}
	b, _ := json.Marshal(req)
	return mon.Run(b)
}

func progress(t *testing.T, mon *qmpclient.Client) float64 {
	t.Helper()
	return run(t, mon, "x-pagecast-query-guest", nil)["progress"].(float64)
}

func TestVMRunQMP(t *testing.T) {
	mon := startVMRun(t, "--memory", "64M", "--workload", "sweep")
	if st := run(t, mon, "query-status", nil); st["status"] != "running" || st["running"] != true {
		t.Fatalf("query-status = %v, want running", st)
	}
	waitProgress := func(above float64) float64 {
		deadline := time.Now().Add(10 * time.Second)
		for {
			if p := progress(t, mon); p > above {
				return p
			}
			if time.Now().After(deadline) {
				t.Fatalf("guest progress stuck at or below %v", above)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitProgress(0)

	run(t, mon, "stop", nil)
	if st := run(t, mon, "query-status", nil); st["status"] != "paused" {
		t.Fatalf("after stop, status %v", st["status"])
	}
	frozen := progress(t, mon)
	time.Sleep(300 * time.Millisecond)
	if p := progress(t, mon); p != frozen {
		t.Fatalf("progress advanced while stopped: %v -> %v", frozen, p)
	}
	run(t, mon, "cont", nil)
	waitProgress(frozen)

	if mem := run(t, mon, "query-memory-size-summary", nil); mem["base-memory"] != float64(64<<20) {
		t.Fatalf("query-memory-size-summary = %v", mem)
	}
	if _, err := runErr(mon, "calc-dirty-rate", map[string]any{"calc-time": 1, "mode": "dirty-bitmap-nope"}); err == nil {
		t.Fatal("calc-dirty-rate accepted an unknown mode")
	}
	if _, err := runErr(mon, "query-status", map[string]any{"verbose": true}); err == nil || !strings.Contains(err.Error(), "Parameter 'verbose' is unexpected") {
		t.Fatalf("query-status with an argument it does not take: %v, want QEMU's error", err)
	}
	if _, err := runErr(mon, "calc-dirty-rate", map[string]any{}); err == nil || !strings.Contains(err.Error(), "Parameter 'calc-time' is missing") {
		t.Fatalf("calc-dirty-rate without calc-time: %v, want QEMU's error", err)
	}
	// A window past the range is said as asked (walk 128: 99999999999 s
	// wrapped to "2157299h53m50s").
	if _, err := runErr(mon, "calc-dirty-rate", map[string]any{"calc-time": 99999999999}); err == nil || !strings.Contains(err.Error(), "calc-time 99999999999 second out of range 0.1s..60s") {
		t.Fatalf("calc-dirty-rate of 99999999999 s: %v", err)
	}
	// QEMU 8.2's calc-time-unit: the window is reported in the unit asked.
	run(t, mon, "calc-dirty-rate", map[string]any{"calc-time": 500, "calc-time-unit": "millisecond"})
	if r := run(t, mon, "query-dirty-rate", nil); r["calc-time"] != 500.0 || r["calc-time-unit"] != "millisecond" {
		t.Fatalf("query-dirty-rate after a 500 ms calc-dirty-rate: %v", r)
	}
	for deadline := time.Now().Add(10 * time.Second); run(t, mon, "query-dirty-rate", nil)["status"] != "measured"; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the 500 ms dirty rate measurement did not end")
		}
	}

	// Dirty logging held open by a QMP client.
	raw, err := runErr(mon, "x-pagecast-query-memslots", nil)
	if err != nil || !bytes.Contains(raw, []byte(`"dirty-logging": false`)) || !bytes.Contains(raw, []byte(`"dirty-mode": "ring"`)) {
		t.Fatalf("memslots before dirty-log-start: %s %v", raw, err)
	}
	run(t, mon, "x-pagecast-dirty-log-start", nil)
	time.Sleep(200 * time.Millisecond)
	h := run(t, mon, "x-pagecast-dirty-log-harvest", map[string]any{"pages": true})
	ranges, _ := h["ranges"].([]any)
	listed := 0.0
	for _, r := range ranges {
		listed += r.([]any)[1].(float64)
	}
	if n := h["dirty-pages"].(float64); n < 100 || n != listed {
		t.Fatalf("harvest after 200ms of sweep: %v pages, %v in %d ranges", n, listed, len(ranges))
	}
	raw, _ = runErr(mon, "x-pagecast-query-memslots", nil)
	if !bytes.Contains(raw, []byte(`"dirty-logging": true`)) {
		t.Fatalf("memslots while logging: %s", raw)
	}
	// A second client's log is its own: the first one's stop leaves it
	// on (it closed the log the second was harvesting, which then read 0
	// pages an epoch), and its hang-up without a stop closes it.
	mon2, err := qmpclient.Dial("unix", lastSocket, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := mon2.Connect(); err != nil {
		t.Fatal(err)
	}
	run(t, mon2, "x-pagecast-dirty-log-start", nil)
	run(t, mon, "x-pagecast-dirty-log-stop", nil)
	if _, err := runErr(mon, "x-pagecast-dirty-log-harvest", nil); err == nil {
		t.Fatal("harvest after dirty-log-stop succeeded")
	}
	run(t, mon2, "x-pagecast-dirty-log-harvest", nil)
	time.Sleep(200 * time.Millisecond)
	if n := run(t, mon2, "x-pagecast-dirty-log-harvest", nil)["dirty-pages"].(float64); n < 100 {
		t.Fatalf("the second client harvested %v pages after 200ms of sweep, with the first's log stopped", n)
	}
	mon2.Disconnect()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		raw, _ = runErr(mon, "x-pagecast-query-memslots", nil)
		if bytes.Contains(raw, []byte(`"dirty-logging": false`)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("dirty logging still on after its only client hung up: %s", raw)
		}
	}
}

// TestVMRunQuit checks that QMP quit ends pagecast vm run with status 0.
func TestVMRunQuit(t *testing.T) {
	testutil.RequiresKVM(t)
	sock := filepath.Join(t.TempDir(), "qmp.sock")
	cmd := exec.Command(binary, "vm", "run", "--monitor", "pagecast", "--memory", "16M", "--workload", "idle", "--qmp", "unix:"+sock)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	var mon *qmpclient.Client
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var err error
		if mon, err = qmpclient.Dial("unix", sock, time.Second); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no QMP socket: %v\n%s", err, stderr.String())
		}
	}
	if err := mon.Connect(); err != nil {
		t.Fatal(err)
	}
	if _, err := mon.Run([]byte(`{"execute":"quit"}`)); err != nil {
		t.Fatalf("quit: %v", err)
	}
	switch exited, err := waitExit(cmd, 10*time.Second); {
	case !exited:
		t.Fatal("pagecast vm run still running 10s after quit")
	case err != nil:
		t.Fatalf("pagecast vm run after quit: %v\n%s", err, stderr.String())
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("QMP socket left behind: %v", err)
	}
}

// TestCalcDirtyRate measures the sweep workload's dirty rate with QEMU's
// calc-dirty-rate in both KVM modes and compares it with the distinct
// pages per second the guest's own progress counter shows it wrote (sweep
// writes each page once per pass; the delay keeps a pass longer than the
// window, so every write is a distinct page).
func TestCalcDirtyRate(t *testing.T) {
	for _, mode := range []struct{ dirty, rateMode string }{
		{"ring", "dirty-ring"},
		{"bitmap", "dirty-bitmap"},
	} {
		t.Run(mode.rateMode, func(t *testing.T) {
			// 256 MiB: the sweep must not wrap its arena within the 2 s window, even
			// when an idle machine runs the guest fast (at delay=40, 16 000 pages/s
			// seen, then 40 000 on 2026-12-06's kvm-pvm, which wrapped it; at 100,
			// 2.5 times fewer).
			mon := startVMRun(t, "--memory", "256M", "--dirty", mode.dirty, "--workload", "sweep:delay=100")
			// Let the sweep get going before measuring.
			time.Sleep(300 * time.Millisecond)

			p0, t0 := progress(t, mon), time.Now()
			run(t, mon, "calc-dirty-rate", map[string]any{"calc-time": 2, "mode": mode.rateMode})
			var r map[string]any
			for {
				r = run(t, mon, "query-dirty-rate", nil)
				if r["status"] == "measured" {
					break
				}
				if time.Since(t0) > 10*time.Second {
					t.Fatalf("no measurement after 10s: %v", r)
				}
				time.Sleep(10 * time.Millisecond)
			}
			p1, t1 := progress(t, mon), time.Now()
			guestPagesPerSec := (p1 - p0) / t1.Sub(t0).Seconds()
			arena := run(t, mon, "x-pagecast-query-guest", nil)["arena-pages"].(float64)
			if 2*guestPagesPerSec > arena {
				t.Fatalf("guest wrote %.0f pages/s: the sweep wraps its %v-page arena within the window", guestPagesPerSec, arena)
			}

			mibPerSec := r["dirty-rate"].(float64)
			measured := r["x-pagecast-dirty-pages-per-second"].(float64)
			guestMiB := guestPagesPerSec * 4096 / (1 << 20)
			t.Logf("%s: calc-dirty-rate %v MiB/s (%.0f pages/s); guest progress %.0f pages/s (%.1f MiB/s)",
				mode.rateMode, mibPerSec, measured, guestPagesPerSec, guestMiB)
			if guestMiB < 5 {
				t.Fatalf("guest dirty rate %.1f MiB/s too low to compare", guestMiB)
			}
			// QEMU reports whole MiB/s, truncated: allow that on top of 20%.
			if d := mibPerSec - guestMiB; d > 0.2*guestMiB || d < -0.2*guestMiB-1 {
				t.Errorf("dirty-rate %v MiB/s is not within 20%% of the guest's %.1f MiB/s", mibPerSec, guestMiB)
			}
			if d := measured/guestPagesPerSec - 1; d > 0.2 || d < -0.2 {
				t.Errorf("dirty pages/s %.0f is not within 20%% of the guest's %.0f", measured, guestPagesPerSec)
			}
		})
	}
}

// TestMonitorAuto: vm run's default --monitor auto takes pagecast's own
// monitor where KVM is usable and QEMU where it is not, which the error
// for a flag only pagecast's monitor takes (--metrics without --qmp) shows
// without starting a VM; an unknown monitor is named.
func TestMonitorAuto(t *testing.T) {
	want := "--metrics needs --qmp"
	if err := qemu.KVMUsable(); err != nil {
		want = "--metrics is for pagecast's monitor"
	}
	for i, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"vm", "run", "--metrics", "127.0.0.1:0"}, want},
		{[]string{"vm", "run", "--monitor", "bogus"}, `--monitor "bogus": want auto, pagecast or qemu`},
		// Found before a monitor is chosen and said on a line before,
		// so on one line.
		{[]string{"vm", "run", "--memory", "64"}, "--memory 64: 64 B is below the guest's minimum of 8 MiB (a size without a unit is in bytes"},
		{[]string{"vm", "run", "--workload", "replay"}, "--workload replay plays a table of pages that only a program driving pagecast's guest writes"},
		{[]string{"vm", "run", "--monitor", "pagecast", "--name", "web1"}, "--name is, on pagecast's own monitor, the vm label of --metrics"},
		{[]string{"vm", "run", "--monitor", "pagecast", "--engine", "qemu", "--incoming", "tcp:127.0.0.1:1"}, "--engine is for --monitor qemu --incoming"},
		{[]string{"vm", "run", "--engine", "qemu"}, "--engine is which migration --incoming waits for"},
		{[]string{"vm", "run", "--paused"}, "--paused keeps a migrated guest paused once it has arrived: give --incoming too"},
		{[]string{"vm", "run", "web1"}, `vm run takes no arguments (got "web1")`},
	} {
		out, err := exec.Command(binary, tc.args...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), tc.want) || i >= 2 && strings.Count(string(out), "\n") > 1 {
			t.Errorf("pagecast %s: %v, %q; want one line containing %q", strings.Join(tc.args, " "), err, out, tc.want)
		}
	}
}

// TestVersion: pagecast --version says which pagecast it is (walk 119:
// there was no way to tell, to cite or reproduce a figure).
func TestVersion(t *testing.T) {
	out, err := exec.Command(binary, "--version").CombinedOutput()
	if err != nil || !regexp.MustCompile(`^pagecast version (devel|v[0-9])[^\n]*\n$`).Match(out) {
		t.Errorf("pagecast --version: %v, %q", err, out)
	}
}

// TestCLIErrorsAnywhere: bad input that needs no KVM to check is named,
// with a non-zero exit status: a command that does not exist (urfave/cli
// said "No help topic"), vCPUs out of range under QEMU (it said only to
// use 1), a fractional plugin size (it said the size, within range, was
// out of it).
func TestCLIErrorsAnywhere(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"vmrun"}, `no command "vmrun": the commands are vm, profile, demo`},
		{[]string{"vm", "run", "--monitor", "qemu", "--vcpus", "17"}, "--vcpus 17: want 1 to 16"},
		{[]string{"plugin", "--dir", t.TempDir(), "--memory", "3.5G"}, `--memory "3.5G": want a size from 4K to 262142G, such as 4G: size "3.5G": want a whole number`},
		// Stray arguments are refused, not ignored, by every command
		// that takes none.
		{[]string{"report", "--out", t.TempDir(), "extra"}, `report takes no arguments (got "extra"): every value is a flag's`},
		{[]string{"predict", "serve", "awk.pct"}, `predict serve takes no arguments (got "awk.pct")`},
		{[]string{"predict", "serve", "--trace", "awk.pct", "--trace", "tar.pct", "--name", "web1"}, "--name names one VM: the --collector's, or a single --trace's"},
		{[]string{"profile", "web1"}, `profile takes no arguments (got "web1"): the VM is --qmp or --pid`},
		{[]string{"simulate", "awk.pct"}, `simulate takes no arguments (got "awk.pct"): the workload goes in --trace or --synthetic`},
		// A flag given no value took the next flag as its value, and the
		// error named another flag.
		{[]string{"report", "--out", "--dashboard", "migrations"}, `--out was given "--dashboard" as its value: --out needs a value before the next flag`},
		{[]string{"simulate", "--trace", "--mode=precopy"}, `--trace was given "--mode=precopy" as its value`},
		{[]string{"report", "--var", "-o", "x"}, `--var was given "-o" as its value`},
		// pagecast's own monitor's flags under QEMU: the demo took them
		// unsaid (walk 86); under auto they take pagecast's own monitor,
		// as vm run's auto does (review 88: the demo refused --kvm PATH
		// under QEMU where /dev/kvm did not open).
		{[]string{"vm", "run", "--monitor", "qemu", "--dirty", "bitmap"}, "--dirty chooses KVM's dirty log on pagecast's own monitor; with --monitor qemu"},
		{[]string{"demo", "--monitor", "qemu", "--dirty", "bitmap"}, "--dirty chooses KVM's dirty log on pagecast's own monitor; with --monitor qemu"},
		{[]string{"demo", "--monitor", "qemu", "--kvm", "/dev/kvm"}, "--kvm is pagecast's own monitor's KVM device"},
		{[]string{"demo", "--kvm", "/nonexistent/kvm", "--no-migrate"}, "KVM is not available: open /nonexistent/kvm: no such file or directory; --kvm and --dirty are pagecast's own monitor's, which auto took for them"},
		{[]string{"demo", "--monitor", "pagecast", "--kvm", "/nonexistent/kvm", "--no-migrate"}, "KVM is not available: open /nonexistent/kvm: no such file or directory; --monitor qemu (or auto, the default) runs the same guest under QEMU"},
	} {
		if _, _, err := runApp(t, tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("pagecast %s: %v, want %q", strings.Join(tc.args, " "), err, tc.want)
		}
	}
}

// TestCLIErrors checks that bad input gets one line naming the problem and
// a non-zero exit status.
func TestCLIErrors(t *testing.T) {
	testutil.RequiresKVM(t)
	busy := filepath.Join(t.TempDir(), "busy.sock")
	l, err := net.Listen("unix", busy)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"unknown workload", []string{"vm", "run", "--monitor", "pagecast", "--workload", "bogus"}, `unknown workload "bogus"`},
		{"bad parameter", []string{"vm", "run", "--monitor", "pagecast", "--workload", "hotset:hot=x"}, "hot"},
		{"memory below minimum", []string{"vm", "run", "--monitor", "pagecast", "--memory", "4M"}, "below the guest's minimum of 8 MiB"},
		{"bad size", []string{"vm", "run", "--monitor", "pagecast", "--memory", "lots"}, `size "lots"`},
		// Walk 128: a whole number past 2^64 read as not one, 9E as
		// trillions of MiB, and --kvm /dev/null's -1 as 2^64-1.
		{"huge size", []string{"vm", "run", "--monitor", "pagecast", "--memory", "99999999999999999999"}, `--memory: size "99999999999999999999" is too large`},
		{"past the monitor's memory", []string{"vm", "run", "--monitor", "pagecast", "--memory", "9E"}, "memory 9663676416 GiB is above the 3072 MiB this monitor maps below the PCI hole (vm run --monitor qemu runs larger guests)"},
		{"not kvm", []string{"vm", "run", "--monitor", "pagecast", "--kvm", "/dev/null"}, "/dev/null: KVM_GET_API_VERSION failed (inappropriate ioctl for device): not a KVM device"},
		{"socket in use", []string{"vm", "run", "--monitor", "pagecast", "--qmp", "unix:" + busy}, "in use"},
		// Auto took pagecast's monitor for --kvm: told to drop it, not to
		// take auto (review 88).
		{"no kvm", []string{"vm", "run", "--kvm", "/nonexistent/kvm"}, "KVM is not available: open /nonexistent/kvm: no such file or directory; --kvm and --dirty are pagecast's own monitor's, which auto took for them: without them --monitor auto runs the same guest under QEMU"},
		// Insisted on, it is told the way too (walk 86).
		{"no kvm, pagecast's monitor", []string{"vm", "run", "--monitor", "pagecast", "--kvm", "/nonexistent/kvm"}, "KVM is not available: open /nonexistent/kvm: no such file or directory; --monitor qemu (or auto, the default) runs the same guest under QEMU"},
		{"unknown flag", []string{"vm", "run", "--frobnicate"}, "frobnicate"},
		{"no vcpus", []string{"vm", "run", "--monitor", "pagecast", "--vcpus", "0"}, "--vcpus 0: want 1 to 16"},
		{"too many vcpus", []string{"vm", "run", "--monitor", "pagecast", "--vcpus", "17"}, "--vcpus 17: want 1 to 16"},
		{"small ring", []string{"vm", "run", "--monitor", "pagecast", "--ring-size", "256"}, "dirty ring size 256: want a power of two of at least 4096"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(binary, tc.args...)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			if err == nil {
				t.Fatalf("exit status 0; stderr %q", stderr.String())
			}
			msg := strings.TrimRight(stderr.String(), "\n")
			if strings.Count(msg, "\n") != 0 || !strings.HasPrefix(msg, "pagecast: ") || !strings.Contains(msg, tc.want) {
				t.Fatalf("stderr %q: want one line starting \"pagecast: \" containing %q", msg, tc.want)
			}
		})
	}
}

// TestOutputLost: a command whose result cannot be written to standard
// output (a full disk: /dev/full) exits 1 saying so, where it exited 0
// with an empty file (walk 72); a reader that stops early ("| head") is
// no failure.
func TestOutputLost(t *testing.T) {
	full, err := os.OpenFile("/dev/full", os.O_WRONLY, 0)
	if err != nil {
		t.Skip(err)
	}
	defer full.Close()
	for _, args := range [][]string{{"trace", "info", simTrace}, {"simulate", "--trace", simTrace, "--mode", "precopy"}} {
		cmd := exec.Command(binary, args...)
		var stderr strings.Builder
		cmd.Stdout, cmd.Stderr = full, &stderr
		err := cmd.Run()
		if err == nil || !strings.Contains(stderr.String(), "pagecast: write standard output: write /dev/stdout: no space left on device") {
			t.Errorf("%v to a full disk: %v, stderr %q", args, err, stderr.String())
		}
	}
	cmd := exec.Command("sh", "-c", binary+" trace info "+simTrace+" | head -c 10 >/dev/null")
	if out, err := cmd.CombinedOutput(); err != nil || len(out) > 0 {
		t.Errorf("trace info | head: %v, %q", err, out)
	}
}

// TestOutputLostSaysOutcome: where a command that moved a guest could not
// write its output, the failure says what it did (review 75: a migration
// that completed, its summary lost, read as failed); a reader gone early
// (EPIPE) is no failure.
func TestOutputLostSaysOutcome(t *testing.T) {
	full, err := os.OpenFile("/dev/full", os.O_WRONLY, 0)
	if err != nil {
		t.Skip(err)
	}
	defer full.Close()
	o := &outputCheck{w: full}
	app := &cli.App{Writer: o}
	sayOutcome(cli.NewContext(app, nil, nil), "the migration's status is completed, the guest on the destination")
	fmt.Fprintln(o, "status completed")
	if err := o.failed(); err == nil || !strings.HasSuffix(err.Error(), "incomplete; the migration's status is completed, the guest on the destination") {
		t.Errorf("a summary lost: %v", err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	defer w.Close()
	gone := &outputCheck{w: w} // not fd 1 or 2: EPIPE, and no signal
	fmt.Fprintln(gone, "x")
	if err := gone.failed(); err != nil {
		t.Errorf("a reader gone: %v", err)
	}
}

// waitExit waits up to d for cmd, started, to exit and returns true and
// its Wait's error; once d has passed it kills cmd, reaps it and returns
// false.
func waitExit(cmd *exec.Cmd, d time.Duration) (exited bool, err error) {
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return true, err
	case <-time.After(d):
		cmd.Process.Kill()
		<-done
		return false, nil
	}
}
