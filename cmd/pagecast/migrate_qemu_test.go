package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pagecast/pagecast/guest"
	"github.com/pagecast/pagecast/internal/testutil"
	"github.com/pagecast/pagecast/migrator"
	"github.com/pagecast/pagecast/qemu"
	"github.com/pagecast/pagecast/qmpclient"
)

// `pagecast migrate` from QEMU to QEMU, as shipped: each mode through
// QEMU's own capabilities, with default flags.

func TestMigrateHelpExplainsQEMU(t *testing.T) {
	out, _, err := runApp(t, "migrate", "--help")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"--dest-qmp", "xbzrle", "auto-converge", "postcopy-ram", "migrate-start-postcopy",
		"On QEMU's migration predictive, MODE+mecom and MODE+postcopy other than precopy+postcopy are refused", "pagecast's engine where it can", "pagecast receive", "precopy+postcopy", "dirty-sync-count"} {
		if !strings.Contains(out, want) {
			t.Errorf("migrate --help lacks %q:\n%s", want, out)
		}
	}
}

// migrateQEMUMemory is small enough that QEMU's default bandwidth (128 MiB/s
// in Debian's 7.2) copies it in half a second.
const migrateQEMUMemory = 64 << 20

// startQEMU starts a TCG QEMU running the pagecast guest with workload;
// with incoming set it waits for a migration instead and is returned at
// once, else once its guest makes progress.
func startQEMU(t *testing.T, workload, incoming string) *qemu.VM {
	t.Helper()
	return startQEMUExtra(t, workload, incoming)
}

func qemuProgress(t *testing.T, vm *qemu.VM) uint64 {
	t.Helper()
	s, err := vm.GuestStatus()
	if err != nil {
		t.Fatal(err)
	}
	return s.TotalProgress()
}

// qemuQuery sends a command on the VM's own monitor and decodes its return.
func qemuQuery(t *testing.T, vm *qemu.VM, cmd string, ret any) {
	t.Helper()
	raw, err := vm.Monitor.Run([]byte(`{"execute":"` + cmd + `"}`))
	if err != nil {
		t.Fatalf("%s: %v", cmd, err)
	}
	reply := struct {
		Return any `json:"return"`
	}{ret}
	if err := json.Unmarshal(raw, &reply); err != nil {
		t.Fatalf("%s: %v in %s", cmd, err, raw)
	}
}

// wantProgress fails the test unless vm's guest makes progress within
// 300 ms; where says which guest, for the error.
func wantProgress(t *testing.T, vm *qemu.VM, where string) {
	t.Helper()
	p0 := qemuProgress(t, vm)
	time.Sleep(300 * time.Millisecond)
	if p1 := qemuProgress(t, vm); p1 <= p0 {
		t.Errorf("guest progress %s stuck at %d", where, p0)
	}
}

func qemuRunState(t *testing.T, vm *qemu.VM) string {
	t.Helper()
	var st struct {
		Status string `json:"status"`
	}
	qemuQuery(t, vm, "query-status", &st)
	return st.Status
}

func TestMigrateQEMU(t *testing.T) {
	if testing.Short() {
		t.Skip("boots QEMU; skipped in short mode")
	}
	testutil.RequiresQEMU(t)
	// precopy and mecom get a guest slowed enough for plain pre-copy to
	// converge; throttle and tsmc one at full TCG speed (millions of
	// writes a second over all of RAM), which plain pre-copy never
	// migrates, so that auto-converge throttles and post-copy takes over.
	const paced, fullSpeed = "hotset:delay=8000", "hotset"
	for _, tt := range []struct {
		mode, workload string
		summary        []string
	}{
		{migrator.ModePrecopy, paced, []string{"qemu capabilities  none"}},
		{migrator.MECOM, paced, []string{"qemu capabilities  xbzrle", "xbzrle-cache-size 64.0 MiB"}},
		{migrator.ModeThrottle, fullSpeed, []string{"qemu capabilities  auto-converge",
			"cpu-throttle-initial 50, cpu-throttle-increment 50, cpu-throttle-tailslow false", "cpu throttle  "}},
		{migrator.ModeTSMC, fullSpeed, []string{"qemu capabilities  postcopy-ram", "post-copy  ", "to post-copy: after the first full pass"}},
		{migrator.ModePrecopy + "+" + migrator.Postcopy, fullSpeed, []string{"qemu capabilities  postcopy-ram", "post-copy  ", "switched  ", "to post-copy: "}},
	} {
		t.Run(tt.mode, func(t *testing.T) {
			src := startQEMU(t, tt.workload, "")
			uri := freeTCP(t)
			dst := startQEMU(t, tt.workload, uri)
			// 128 MiB/s, QEMU 7.2's own default cap, which these ran at
			// until pagecast sent max-bandwidth 0 for no --bandwidth:
			// uncapped on loopback, plain pre-copy converges even at
			// full speed, before any throttle or switch.
			args := []string{"migrate", "--qmp", "unix:" + src.QMPPath, "--to", uri, "--mode", tt.mode, "--bandwidth", "128MiB/s"}
			if migrator.NeedsPostcopy(tt.mode) {
				// Post-copy needs its capability on the destination too.
				_, _, err := runApp(t, args...)
				if err == nil || !strings.Contains(err.Error(), "--dest-qmp") {
					t.Fatalf("%s without --dest-qmp: %v, want a refusal naming --dest-qmp", tt.mode, err)
				}
				args = append(args, "--dest-qmp", "unix:"+dst.QMPPath)
			}
			if tt.mode == migrator.ModePrecopy {
				_, _, err := runApp(t, "migrate", "--qmp", "unix:"+src.QMPPath, "--to", uri, "--mode", "predictive")
				// The destination is a QEMU of this host listening itself:
				// refused naming both ways out (review 88).
				if err == nil || !strings.Contains(err.Error(), `migration mode "predictive" needs pagecast's engine, and the destination QEMU listens on`) {
					t.Fatalf("predictive on QEMU: %v, want a refusal", err)
				}
			}
			if !migrator.NeedsPostcopy(tt.mode) && migrator.TCGLosesWrites(src.Monitor) != "" {
				// QEMU's migration loses writes here: auto does not
				// take it for a destination that takes nothing else
				// (walk 114); asked for by name, it runs, with the
				// warning.
				_, _, err := runApp(t, args...)
				if err == nil || !strings.Contains(err.Error(), "--engine auto does not take it") {
					t.Fatalf("%s with --engine auto under TCG before QEMU 9.0: %v, want a refusal", tt.mode, err)
				}
				if st := qemuRunState(t, dst); st != "inmigrate" {
					t.Fatalf("destination after the refusal: %s", st)
				}
				args = append(args, "--engine", "qemu")
			}
			start := time.Now()
			stdout, stderr, err := runApp(t, args...)
			if err != nil {
				t.Fatalf("pagecast %s: %v\n%s\n%s", strings.Join(args, " "), err, stdout, stderr)
			}
			elapsed := time.Since(start)
			t.Logf("pagecast migrate took %v:\n%s%s", elapsed.Round(time.Millisecond), stdout, stderr)
			// Under TCG, QEMU before 9.0 loses some of the guest's writes
			// (TestTCGLosesWrites): said, and nothing else.
			const tcgBug = "'s own migration of a guest under TCG loses some of its writes"
			var v struct {
				QEMU struct{ Major int } `json:"qemu"`
			}
			qemuQuery(t, src, "query-version", &v)
			if said := strings.Contains(stderr, tcgBug); said != (v.QEMU.Major < 9) {
				t.Errorf("QEMU %d under TCG: its lost writes said %v:\n%s", v.QEMU.Major, said, stderr)
			}
			if rest := regexp.MustCompile(`pagecast: warning: QEMU [^\n]*`+tcgBug+`[^\n]*\n`).ReplaceAllString(stderr, ""); strings.Contains(rest, "warning") {
				t.Errorf("default flags gave a warning: %s", rest)
			}
			for _, want := range append([]string{"status             completed", "mode               " + tt.mode + " (QEMU's migration)"}, tt.summary...) {
				if !strings.Contains(stdout, want) {
					t.Errorf("summary lacks %q", want)
				}
			}
			if migrator.NeedsPostcopy(tt.mode) {
				// Given the destination's monitor, the guest's own pause
				// (STOP to RESUME): under post-copy a few milliseconds,
				// the device state's move.
				m := regexp.MustCompile(`guest paused +(\S+) \(the source's STOP to the destination's RESUME\)`).FindStringSubmatch(stdout)
				if m == nil {
					t.Errorf("summary lacks the guest's pause:\n%s", stdout)
				} else if d, err := time.ParseDuration(m[1]); err != nil || d <= 0 || d > elapsed {
					t.Errorf("guest paused %q (%v): want a duration within the migration's %v", m[1], err, elapsed)
				}
			}
			var info migrator.Info
			qemuQuery(t, src, "query-migrate", &info)
			t.Logf("FIGURES %s: total %d ms, downtime %d ms, transferred %d bytes (%.1f MiB), dirty syncs %d, throttle %d%%, post-copy %d bytes, %d pages pulled",
				tt.mode, info.TotalTime, info.Downtime, info.RAM.Transferred, float64(info.RAM.Transferred)/(1<<20),
				info.RAM.DirtySyncCount, info.CPUThrottlePercentage, info.RAM.PostcopyBytes, info.RAM.PostcopyRequests)
			// What the guest lost: the throttle's time (polled), and with
			// the destination's monitor, post-copy's waits
			// (postcopy-vcpu-blocktime).
			m := regexp.MustCompile(`guest slowed +(<1|\d+)% of its vCPU time while it ran \(throttle (\S+), post-copy faults (\S+), over its one vCPU\)`).FindStringSubmatch(stdout)
			if m == nil {
				t.Errorf("summary lacks the guest's slowdown:\n%s", stdout)
			} else {
				throttled, _ := time.ParseDuration(m[2])
				faults, _ := time.ParseDuration(m[3])
				if (tt.mode == migrator.ModeThrottle) != (throttled > 0) {
					t.Errorf("%s: throttle %v", tt.mode, throttled)
				}
				if (migrator.NeedsPostcopy(tt.mode) && info.RAM.PostcopyRequests > 0) != (faults > 0) {
					t.Errorf("%s: post-copy faults %v with %d pages pulled", tt.mode, faults, info.RAM.PostcopyRequests)
				}
			}

			// The destination runs the guest, which carries on.
			waitDestRunning(t, dst)
			if st := qemuRunState(t, src); st != "postmigrate" {
				t.Errorf("source is %q, want postmigrate", st)
			}
			wantProgress(t, dst, "on the destination")
		})
	}
}

// qemuPair starts a TCG QEMU source running workload and a destination
// QEMU waiting at a free port with QEMU's own -incoming, for tests that
// drive QEMU's migration through pagecast migrate.
func qemuPair(t *testing.T, workload string) (src, dst *qemu.VM, uri string) {
	t.Helper()
	if testing.Short() {
		t.Skip("boots QEMU; skipped in short mode")
	}
	testutil.RequiresQEMU(t)
	src = startQEMU(t, workload, "")
	uri = freeTCP(t)
	return src, startQEMU(t, "hotset", uri), uri
}

// waitDestRunning waits up to 10 s for the destination QEMU dst to run
// the guest a migration brought.
func waitDestRunning(t *testing.T, dst *qemu.VM) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for st := qemuRunState(t, dst); st != "running"; st = qemuRunState(t, dst) {
		if time.Now().After(deadline) {
			t.Fatalf("destination is %q after the migration, want running", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitQuery polls the source's query-migrate until until says so; a
// migration that ends first, or a minute, fails the test, with what the
// running migrate (cmd) printed so far in out.
func waitQuery(t *testing.T, src *qemu.VM, cmd *exec.Cmd, out *syncBuffer, what string, until func(migrator.Info) bool) {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var info migrator.Info
		qemuQuery(t, src, "query-migrate", &info)
		if until(info) {
			return
		}
		if time.Now().After(deadline) || info.Status == migrator.StatusCompleted || info.Status == migrator.StatusFailed {
			cmd.Process.Kill()
			t.Fatalf("no %s seen (status %q):\n%s", what, info.Status, out.String())
		}
	}
}

// TestMigrateQEMUPostcopyInterrupt: an interrupt once QEMU's post-copy has
// begun does not cancel it (that would leave the guest on the destination
// waiting for pages forever): migrate says why, the migration completes
// and the guest runs on at the destination.
func TestMigrateQEMUPostcopyInterrupt(t *testing.T) {
	src, dst, uri := qemuPair(t, "hotset")
	// 64 MiB at 8 MiB/s: the first pass takes 8 s, post-copy what the
	// guest wrote meanwhile.
	cmd := exec.Command(binary, "migrate", "--qmp", "unix:"+src.QMPPath, "--dest-qmp", "unix:"+dst.QMPPath, "--to", uri,
		"--mode", migrator.ModeTSMC, "--engine", "qemu", "--bandwidth", "8MiB/s")
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitQuery(t, src, cmd, &out, "post-copy", func(i migrator.Info) bool { return i.Status == migrator.StatusPostcopy })
	cmd.Process.Signal(os.Interrupt)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("pagecast migrate interrupted in post-copy: %v\n%s", err, out.String())
	}
	for _, want := range []string{"post-copy under way", "a cancel now would lose it", "status             completed"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("migrate's output lacks %q:\n%s", want, out.String())
		}
	}
	// The destination's post-copy capabilities, which the plan turned
	// on, are off again as they were: the VM it moved kept them.
	for _, c := range postcopyOn(t, dst) {
		t.Errorf("the destination keeps %s on after the migration", c)
	}
	waitDestRunning(t, dst)
	wantProgress(t, dst, "on the destination")
}

// postcopyOn is the post-copy capabilities QEMU vm has on.
func postcopyOn(t *testing.T, vm *qemu.VM) []string {
	t.Helper()
	var caps []struct {
		Capability string
		State      bool
	}
	qemuQuery(t, vm, "query-migrate-capabilities", &caps)
	var on []string
	for _, c := range caps {
		if c.State && strings.HasPrefix(c.Capability, "postcopy") {
			on = append(on, c.Capability)
		}
	}
	return on
}

// TestMigrateQEMUPostcopyRefusedRestoresDest: a tsmc whose link nobody
// takes (--to a port nobody listens on) fails before anything is sent,
// and the destination QEMU, still waiting, gets back the post-copy
// capabilities the plan set there (walk 165: it kept postcopy-ram on, and
// the next guest moved there with pre-copy carried it). The plan turns
// them on for tsmc (TestMigrateQEMU's "qemu capabilities  postcopy-ram");
// on the code before the mend this test found both on.
func TestMigrateQEMUPostcopyRefusedRestoresDest(t *testing.T) {
	src, dst, _ := qemuPair(t, "hotset")
	nobody := freeTCP(t)
	out, err := exec.Command(binary, "migrate", "--qmp", "unix:"+src.QMPPath, "--dest-qmp", "unix:"+dst.QMPPath, "--to", nobody,
		"--mode", migrator.ModeTSMC, "--engine", "qemu", "--quiet").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "the guest keeps running on the source") {
		t.Fatalf("tsmc to %s, where nobody listens: %v\n%s", nobody, err, out)
	}
	for _, c := range postcopyOn(t, dst) {
		t.Errorf("the destination, still waiting, keeps %s on after the failed migration:\n%s", c, out)
	}
	if st := qemuRunState(t, dst); st != "inmigrate" {
		t.Errorf("destination %s after the failed migration, want inmigrate (waiting)", st)
	}
	if st := qemuRunState(t, src); st != "running" {
		t.Errorf("source %s after the failed migration, want running", st)
	}
}

// TestMigrateQEMUDestinationDies: QEMU's own migration to a destination
// QEMU killed midway fails, the guest keeps running on the source, and the
// error says the destination went away, not taken for a pagecast receiver
// that hung up at once (QEMU's
// failed reply has no ram; the last reply's counts are carried into it,
// and before they were, the megabytes sent were not counted).
func TestMigrateQEMUDestinationDies(t *testing.T) {
	src, dst, uri := qemuPair(t, "hotset")
	cmd := exec.Command(binary, "migrate", "--qmp", "unix:"+src.QMPPath, "--dest-qmp", "unix:"+dst.QMPPath, "--to", uri, "--engine", "qemu", "--bandwidth", "8MiB/s", "--quiet", "--json")
	var out, stdout syncBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitQuery(t, src, cmd, &out, "4 MiB sent", func(i migrator.Info) bool { return i.RAM != nil && i.RAM.Transferred > 4<<20 })
	syscall.Kill(dst.PID(), syscall.SIGKILL)
	if err := cmd.Wait(); err == nil {
		t.Fatalf("migrate to a killed destination succeeded:\n%s", out.String())
	}
	// Given --dest-qmp, it says the destination went away, as pagecast's
	// engine does (walk 123: QEMU's "Bad file descriptor" alone).
	if strings.Contains(out.String(), "hung up at once") || !strings.Contains(out.String(), "the guest keeps running on the source") ||
		!strings.Contains(out.String(), "the destination went away: its QEMU no longer answers on --dest-qmp") {
		t.Errorf("migrate's error for a destination killed midway:\n%s", out.String())
	}
	// --json: the same, for a script.
	o := outcomeOf(t, stdout.String())
	if o.Status != migrator.StatusFailed || !strings.Contains(o.Error, "the guest keeps running on the source") || o.Engine != engineQEMU || o.Guest != guestSource ||
		o.Mode != migrator.ModePrecopy || o.QEMU == nil || o.QEMU.Parameters.MaxBandwidth != 8<<20 || o.Info == nil ||
		o.Source != "unix:"+src.QMPPath || o.Destination != uri {
		t.Errorf("--json outcome: %s", stdout.String())
	}
	if st := qemuRunState(t, src); st != "running" {
		t.Errorf("source after the failed migration: %s, want running", st)
	}
}

// TestMigratePausedQEMUSource: a source paused by QMP stop is refused by
// pagecast's engine with what to do (it said only "virtual machine is
// paused, not running"), and QEMU's engine toward a pagecast receiver
// fails saying the guest stays paused on the source (it said it "keeps
// running").
func TestMigratePausedQEMUSource(t *testing.T) {
	if testing.Short() {
		t.Skip("boots QEMU; skipped in short mode")
	}
	testutil.RequiresQEMU(t)
	src := startQEMURun(t, "--memory", "32M", "--workload", "hotset:delay=8000")
	// A destination that hangs up on the stream (a pagecast receiver of
	// this host is now refused before a byte goes).
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Read(make([]byte, 64))
			c.Close()
		}
	}()
	uri := "tcp:" + l.Addr().String()
	// QEMU serves one QMP client at a time.
	qmpOnce := func(cmd string) map[string]any {
		mon, err := dialQMP(src.sock)
		if err != nil {
			t.Fatal(err)
		}
		defer mon.Disconnect()
		return run(t, mon, cmd, nil)
	}
	qmpOnce("stop")
	out, err := exec.Command(binary, "migrate", "--qmp", "unix:"+src.sock, "--to", uri, "--mode", "precopy", "--bandwidth", "64MiB/s").CombinedOutput()
	if want := "virtual machine is paused, not running: pagecast's engine migrates a running guest only; resume it (QMP cont), or migrate it paused with --engine qemu"; err == nil || !strings.Contains(string(out), want) {
		t.Errorf("pagecast's engine from a paused source: %v\n%s\nwant %q", err, out, want)
	}
	out, err = exec.Command(binary, "migrate", "--qmp", "unix:"+src.sock, "--to", uri, "--mode", "precopy", "--bandwidth", "64MiB/s",
		"--engine", "qemu", "--quiet").CombinedOutput()
	if want := "the guest was paused before the migration and stays paused on the source"; err == nil || !strings.Contains(string(out), want) || strings.Contains(string(out), "keeps running") {
		t.Errorf("QEMU's engine from a paused source to a destination that hangs up: %v\n%s\nwant %q", err, out, want)
	}
	if st := qmpOnce("query-status")["status"]; st != "paused" {
		t.Errorf("source after the failed migration: %s, want paused", st)
	}
}

// TestMigrateQEMUForcedSays: QEMU's migration forced to switch over at
// the round cap says what its stop-and-copy sent, which QEMU does not
// hold to --bandwidth (the summary showed a short downtime and no word of
// it).
func TestMigrateQEMUForcedSays(t *testing.T) {
	src, _, uri := qemuPair(t, "hotset:hot=8192,p=0.5")
	out, err := exec.Command(binary, "migrate", "--qmp", "unix:"+src.QMPPath, "--to", uri, "--engine", "qemu",
		"--bandwidth", "32MiB/s", "--max-rounds", "1", "--quiet").CombinedOutput()
	if err != nil {
		t.Fatalf("pagecast migrate: %v\n%s", err, out)
	}
	for _, want := range []string{"round cap: switch-over forced", "sent while the guest was stopped, not held to --bandwidth"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
}

// migrateUnderway starts a 64 MiB hot-set guest and a destination
// waiting for it under vm run, and a pre-copy migration between them at
// bandwidth, and returns once the destination has accepted it, with
// migrate's output so far.
func migrateUnderway(t *testing.T, bandwidth string, extra ...string) (src, dst *qemuRun, migrate *exec.Cmd, out *syncBuffer) {
	t.Helper()
	uri := freeTCP(t)
	src = startQEMURun(t, "--memory", "64M", "--workload", "hotset:delay=8000")
	dst = startQEMURun(t, "--memory", "64M", "--incoming", uri)
	migrate = exec.Command(binary, append([]string{"migrate", "--qmp", "unix:" + src.sock, "--to", uri, "--mode", "precopy", "--bandwidth", bandwidth, "--quiet"}, extra...)...)
	out = new(syncBuffer)
	migrate.Stdout, migrate.Stderr = out, out
	if err := migrate.Start(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(dst.stderr.String(), "incoming migration accepted"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the destination never accepted the migration:\n%s", dst.stderr.String())
		}
	}
	return src, dst, migrate, out
}

// TestIncomingStopped: a destination stopped with SIGTERM midway says so
// on one line (it said "use of closed network connection (context
// canceled)"), and the source's guest runs on.
func TestIncomingStopped(t *testing.T) {
	_, dst, cmd, out := migrateUnderway(t, "8MiB/s")
	time.Sleep(500 * time.Millisecond) // midway: 64 MiB at 8 MiB/s take 8 s
	dst.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-dst.exited:
	case <-time.After(15 * time.Second):
		t.Fatal("the destination did not stop on SIGTERM")
	}
	// The source is told why (it said "write: broken pipe").
	if err := cmd.Wait(); err == nil || !strings.Contains(out.String(), "the guest keeps running on the source") ||
		!strings.Contains(out.String(), "the destination aborted: the destination was stopped") {
		t.Errorf("migrate to a destination stopped midway: %v\n%s", err, out.String())
	}
	if got := dst.stderr.String(); !strings.Contains(got, "pagecast: stopped (SIGINT, SIGTERM or SIGHUP) during the incoming migration\n") || strings.Contains(got, "closed network connection") {
		t.Errorf("the destination stopped midway said:\n%s", got)
	}
}

// TestIncomingQEMUKilled: a destination whose QEMU is killed midway is
// said to have exited, at the source too (it said "qmp query-status: write
// unix …: write: broken pipe").
//
// And at once, not at the end of the round, when the receiver next asked
// the VM ("after round 1 the virtual machine is no longer waiting"):
// round 1 of 64 MiB at 8 MiB/s takes 8 s.
func TestIncomingQEMUKilled(t *testing.T) {
	_, dst, cmd, out := migrateUnderway(t, "8MiB/s")
	syscall.Kill(dst.qemuPID, syscall.SIGKILL)
	err := cmd.Wait()
	want := fmt.Sprintf("the destination QEMU (pid %d) has exited", dst.qemuPID)
	if err == nil || !strings.Contains(out.String(), want) || !strings.Contains(out.String(), "the guest keeps running on the source") || strings.Contains(out.String(), "after round") {
		t.Errorf("migrate to a destination whose QEMU was killed: %v\n%s", err, out.String())
	}
	if got := dst.stderr.String(); strings.Count(got, want) != 1 {
		t.Errorf("the destination said:\n%s", got)
	}
}

// TestSourceQEMUKilled: a source whose QEMU is killed midway fails the
// migration at once, and both ends say that the source went, and the
// guest with it. The engine went on sending from the guest memory left
// mapped until the switch-over's pause failed, some 6 s later, and then
// both ends said the destination went away and the guest ran on at the
// source.
func TestSourceQEMUKilled(t *testing.T) {
	src, dst, cmd, out := migrateUnderway(t, "8MiB/s", "--json")
	syscall.Kill(src.qemuPID, syscall.SIGKILL)
	err := cmd.Wait()
	// --json says the guest is lost, not where it runs (walk 65).
	if i := strings.Index(out.String(), "{"); i < 0 || outcomeOf(t, strings.SplitAfter(out.String()[i:], "\n")[0]).Guest != guestLost {
		t.Errorf("--json for a source killed midway:\n%s", out.String())
	}
	want := fmt.Sprintf("the source QEMU (pid %d) has exited", src.qemuPID)
	if got := out.String(); err == nil || !strings.Contains(got, want+" during the migration, and the guest with it: the destination did not start it") ||
		strings.Contains(got, "keeps running") || strings.Contains(got, "destination went away") || strings.Contains(got, "stop the guest") {
		t.Errorf("migrate from a source whose QEMU was killed: %v\n%s", err, got)
	}
	for deadline := time.Now().Add(15 * time.Second); !strings.Contains(dst.stderr.String(), want+", and the guest with it"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the destination did not say the source went:\n%s", dst.stderr.String())
		}
	}
}

// TestEngineFollowsDestination: given --dest-qmp, or where it is a QEMU of
// this host listening on --to's port, engine auto sees a destination QEMU
// that listens with its own -incoming and runs QEMU's migration, which
// that QEMU takes (it ran pagecast's engine, and the destination QEMU
// exited on "Not a migration stream"; without --dest-qmp until walk 86);
// --engine pagecast and --mode auto there are refused before anything is
// sent, and the destination waits on; so is engine auto where QEMU's
// migration loses writes (under TCG before QEMU 9.0).
func TestEngineFollowsDestination(t *testing.T) {
	src, dst, uri := qemuPair(t, "hotset:delay=8000")
	for _, given := range [][]string{{"--dest-qmp", "unix:" + dst.QMPPath}, nil} {
		out, err := exec.Command(binary, append([]string{"migrate", "--qmp", "unix:" + src.QMPPath, "--to", uri,
			"--engine", "pagecast", "--mode", "precopy", "--quiet"}, given...)...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "the destination QEMU listens on "+uri+" with its own -incoming") || !strings.Contains(string(out), "give --engine qemu") {
			t.Fatalf("--engine pagecast to a QEMU listening itself (%q): %v\n%s", given, err, out)
		}
		if st := qemuRunState(t, dst); st != "inmigrate" {
			t.Fatalf("destination after the refusal (%q): %s", given, st)
		}
		// Mode auto runs pagecast's engine: refused before its probe of
		// --to, which the QEMU would take for a stream and exit on.
		out, err = exec.Command(binary, append([]string{"migrate", "--qmp", "unix:" + src.QMPPath, "--to", uri,
			"--mode", "auto", "--bandwidth", "64MiB/s", "--quiet"}, given...)...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "--mode auto runs pagecast's engine, and the destination QEMU listens on "+uri) {
			t.Fatalf("--mode auto to a QEMU listening itself (%q): %v\n%s", given, err, out)
		}
		if st := qemuRunState(t, dst); st != "inmigrate" {
			t.Fatalf("destination after auto's refusal (%q): %s", given, st)
		}
	}
	// A mode only pagecast's engine runs: refused saying both ways out,
	// not sent to QEMU's plan, which said to take pagecast's engine
	// (review 88: the advice looped).
	out, err := exec.Command(binary, "migrate", "--qmp", "unix:"+src.QMPPath, "--to", uri, "--mode", "predictive", "--quiet").CombinedOutput()
	if err == nil || !strings.Contains(string(out), `migration mode "predictive" needs pagecast's engine, and the destination QEMU listens on `+uri) ||
		!strings.Contains(string(out), "give a mode QEMU's migration runs (precopy, throttle, tsmc, mecom, precopy+postcopy)") {
		t.Fatalf("predictive to a QEMU listening itself: %v\n%s", err, out)
	}
	if st := qemuRunState(t, dst); st != "inmigrate" {
		t.Fatalf("destination after predictive's refusal: %s", st)
	}
	out, err = exec.Command(binary, "migrate", "--qmp", "unix:"+src.QMPPath, "--to", uri,
		"--mode", "precopy", "--bandwidth", "64MiB/s", "--quiet").CombinedOutput()
	if lose := migrator.TCGLosesWrites(src.Monitor); lose != "" {
		// Not where QEMU's migration loses writes (walk 114: the
		// guest's kernel crashed on the destination, twice).
		if err == nil || !strings.Contains(string(out), "the destination QEMU listens on "+uri+" with its own -incoming, which takes QEMU's migration only, and "+lose) ||
			!strings.Contains(string(out), "--engine auto does not take it") {
			t.Fatalf("engine auto to a QEMU listening itself under TCG before 9.0: %v\n%s", err, out)
		}
		if st := qemuRunState(t, dst); st != "inmigrate" {
			t.Fatalf("destination after auto's refusal: %s", st)
		}
		return
	}
	if err != nil || !strings.Contains(string(out), "engine: qemu (the destination QEMU listens on "+uri) || !regexp.MustCompile(`(?m)^status +completed$`).Match(out) {
		t.Fatalf("engine auto to a QEMU listening itself, no --dest-qmp: %v\n%s", err, out)
	}
}

// TestIncomingQEMUPostcopySays: a destination under QEMU's own -incoming
// says when QEMU's migration goes post-copy (the guest runs there, part of
// its memory still at the source), and that the migration was received
// only once it has all of it (it said "received; guest running" as
// post-copy began).
func TestIncomingQEMUPostcopySays(t *testing.T) {
	uri := freeTCP(t)
	src := startQEMURun(t, "--memory", "32M", "--workload", "hotset")
	dst := startQEMURun(t, "--memory", "32M", "--incoming", uri, "--engine", "qemu")
	out, err := exec.Command(binary, "migrate", "--qmp", "unix:"+src.sock, "--dest-qmp", "unix:"+dst.sock, "--to", uri,
		"--mode", "tsmc", "--bandwidth", "8MiB/s", "--quiet").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "pages pulled by the destination") {
		t.Fatalf("tsmc by QEMU's post-copy: %v\n%s", err, out)
	}
	dst.saysAfterMigration(t, "QEMU's migration is in post-copy: the guest runs here, part of its memory still at the source (stopping this VM now loses the guest)")
	dst.saysAfterMigration(t, "QEMU's migration received; guest running")
}

// TestIncomingQEMUStoppedWaiting: a destination under QEMU's own
// -incoming stopped (SIGTERM) before any migration came says so and exits
// with status 1, as one with pagecast's engine (it exited 0, silent).
func TestIncomingQEMUStoppedWaiting(t *testing.T) {
	dst := startQEMURun(t, "--memory", "32M", "--incoming", freeTCP(t), "--engine", "qemu")
	// Its first line names the dirty hook as one for profiles only (walk
	// 78 read it as used by QEMU's migration).
	if len(dst.head) == 0 || !strings.Contains(dst.head[0], "QEMU's migration tracks its own dirty pages") {
		t.Errorf("vm run --engine qemu --incoming begins %q", dst.head)
	}
	dst.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-dst.exited:
	case <-time.After(30 * time.Second):
		t.Fatal("vm run --engine qemu --incoming did not exit on SIGTERM")
	}
	if code := dst.cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(dst.stderr.String(), "pagecast: stopped while waiting for an incoming migration\n") {
		t.Fatalf("stopped while waiting: exit status %d\n%s", code, dst.stderr.String())
	}
}

// TestIncomingQEMUQuitWaiting: a destination under QEMU's own -incoming
// whose QEMU is told to quit (QMP quit on its socket) before any migration
// came says so and exits with status 1 (it said "QEMU's migration
// received; guest " and exited 0: found by a review walk).
func TestIncomingQEMUQuitWaiting(t *testing.T) {
	dst := startQEMURun(t, "--memory", "32M", "--incoming", freeTCP(t), "--engine", "qemu")
	mon, err := qmpclient.Dial("unix", dst.sock, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer mon.Disconnect()
	if err := mon.Connect(); err != nil {
		t.Fatal(err)
	}
	if _, err := mon.Run([]byte(`{"execute":"quit"}`)); err != nil {
		t.Fatalf("quit: %v", err)
	}
	select {
	case <-dst.exited:
	case <-time.After(30 * time.Second):
		t.Fatal("vm run --engine qemu --incoming did not exit when its QEMU quit")
	}
	if code := dst.cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(dst.stderr.String(), "QEMU quit (QMP quit, or a signal) before a migration came: stopped while waiting for an incoming migration") {
		t.Fatalf("QEMU quit while waiting: exit status %d\n%s", code, dst.stderr.String())
	}
}

// TestIncomingQEMUStoppedInPostcopy: a destination stopped in QEMU's
// post-copy says the guest is lost, and migrate, given --dest-qmp, says
// the destination is gone and there is nothing to recover (it suggested
// migrate-recover on a destination QEMU that no longer existed), and that
// the source QEMU will not run its copy either.
func TestIncomingQEMUStoppedInPostcopy(t *testing.T) {
	_, dst, cmd, out := qemuPostcopyUnderway(t)
	dst.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-dst.exited:
	case <-time.After(15 * time.Second):
		t.Fatal("the destination did not stop on SIGTERM")
	}
	if got := dst.stderr.String(); !strings.Contains(got, "stopped during QEMU's post-copy: the guest ran here with part of its memory still at the source, and is lost") {
		t.Errorf("the destination stopped in post-copy said:\n%s", got)
	}
	// Nor can the source's copy run again: QEMU refuses cont there ("it
	// said cont there would lose what it did since").
	if err := cmd.Wait(); err == nil || !strings.Contains(out.String(), "the destination QEMU no longer answers on --dest-qmp") || strings.Contains(out.String(), "migrate-recover") ||
		!strings.Contains(out.String(), "the guest is lost on both sides") {
		t.Errorf("migrate whose destination went in post-copy: %v\n%s", err, out.String())
	}
	// The source QEMU keeps the plan's settings, its migration never
	// ending (postcopy-paused, migrate_cancel leaving it cancelling); as
	// it will not run the guest again and is to be quit, migrate does not
	// say to set them back "once it has ended" (walk 165; walks 46 and 47
	// had it said, before migrate said the guest was lost).
	if strings.Contains(out.String(), `"migrate-set-capabilities"`) || strings.Contains(out.String(), "once it has ended") {
		t.Errorf("migrate said to set settings back on QEMUs it says to quit:\n%s", out.String())
	}
}

// TestSourceQEMUKilledWhileAutoWatches: a source QEMU killed while mode
// auto watches its guest is said to have exited, nothing migrated (auto
// watched on, chose, and then said "virtual machine is qmp query-status:
// write …: broken pipe, not running").
func TestSourceQEMUKilledWhileAutoWatches(t *testing.T) {
	uri := freeTCP(t)
	src := startQEMURun(t, "--memory", "64M", "--workload", "hotset:delay=8000")
	startQEMURun(t, "--memory", "64M", "--incoming", uri)
	cmd := exec.Command(binary, "migrate", "--qmp", "unix:"+src.sock, "--to", uri, "--mode", "auto", "--bandwidth", "8MiB/s", "--observe", "40", "--quiet")
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Into the 4 s watch: the engine is chosen (said at once) and the
	// watch begun. (A second after the start alone, a loaded machine's
	// migrate was still choosing.)
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(out.String(), "engine: pagecast"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no engine chosen in 30 s:\n%s", out.String())
		}
	}
	time.Sleep(time.Second)
	syscall.Kill(src.qemuPID, syscall.SIGKILL)
	want := fmt.Sprintf("the source QEMU (pid %d) has exited while auto watched the guest: nothing was migrated, and the guest went with it", src.qemuPID)
	if err := cmd.Wait(); err == nil || !strings.Contains(out.String(), want) || strings.Contains(out.String(), "not running") {
		t.Errorf("migrate --mode auto from a source killed while it watched: %v\n%s", err, out.String())
	}
}

// TestSourceQEMUKilledInPostcopy: a source QEMU killed in QEMU's
// post-copy is said to have taken the pages the destination's guest still
// needed (it said the guest runs on the destination).
func TestSourceQEMUKilledInPostcopy(t *testing.T) {
	src, dst, cmd, out := qemuPostcopyUnderway(t)
	syscall.Kill(src.qemuPID, syscall.SIGKILL)
	if err := cmd.Wait(); err == nil || !strings.Contains(out.String(), "after the switch to post-copy the source's QMP connection closed") {
		t.Errorf("migrate whose source went in post-copy: %v\n%s", err, out.String())
	}
	// The destination QEMU pauses its post-copy, and says so (it said
	// nothing more).
	select {
	case line := <-dst.lines:
		if !strings.HasPrefix(line, "QEMU's post-copy is paused: the link to the source broke") {
			t.Errorf("the destination said %q, want post-copy paused", line)
		}
	case <-time.After(10 * time.Second):
		t.Errorf("the destination said nothing in 10 s after its source QEMU was killed in post-copy:\n%s", dst.stderr.String())
	}
}

// qemuPostcopyUnderway starts a 32 MiB guest writing a 16 MiB hot set and
// a destination waiting with QEMU's own -incoming under vm run, and a tsmc
// migration between them at 4 MiB/s by QEMU's post-copy, and returns once
// the destination says post-copy has begun, with migrate's output so far.
func qemuPostcopyUnderway(t *testing.T) (src, dst *qemuRun, migrate *exec.Cmd, out *syncBuffer) {
	t.Helper()
	uri := freeTCP(t)
	src = startQEMURun(t, "--memory", "32M", "--workload", "hotset:hot=4096")
	dst = startQEMURun(t, "--memory", "32M", "--incoming", uri, "--engine", "qemu")
	migrate = exec.Command(binary, "migrate", "--qmp", "unix:"+src.sock, "--dest-qmp", "unix:"+dst.sock, "--to", uri,
		"--mode", "tsmc", "--bandwidth", "4MiB/s", "--quiet")
	out = new(syncBuffer)
	migrate.Stdout, migrate.Stderr = out, out
	if err := migrate.Start(); err != nil {
		t.Fatal(err)
	}
	select {
	case line := <-dst.lines:
		if !strings.HasPrefix(line, "QEMU's migration is in post-copy") {
			t.Fatalf("the destination said %q, want post-copy", line)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("no post-copy in 60 s:\n%s", out.String())
	}
	return src, dst, migrate, out
}

// TestMigrateQEMUPostcopyDetached: a second interrupt in QEMU's post-copy
// stops migrate following it, which says how to set back by hand what it
// set on both QEMUs (after a second SIGTERM it named the source's settings
// only, and the destination kept postcopy-ram; walk 59).
func TestMigrateQEMUPostcopyDetached(t *testing.T) {
	_, _, cmd, out := qemuPostcopyUnderway(t)
	cmd.Process.Signal(syscall.SIGTERM)
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(out.String(), "post-copy under way"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("migrate did not answer the first signal in post-copy:\n%s", out.String())
		}
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err == nil {
		t.Fatalf("migrate stopped following post-copy exited 0:\n%s", out.String())
	}
	for _, want := range []string{
		`the source QEMU keeps this migration's settings`,
		`the destination QEMU, if it lives on, keeps the post-copy capabilities pagecast set there: once the migration has ended, send it {"execute":"migrate-set-capabilities","arguments":{"capabilities":[{"capability":"postcopy-ram","state":false},{"capability":"postcopy-blocktime","state":false}]}}`,
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("migrate's error lacks %q:\n%s", want, out.String())
		}
	}
}

// TestAutoProbeEndsQEMUIncoming: without --dest-qmp, auto's check that
// something listens on --to ends a QEMU listening with its own -incoming
// (it exits on a stream that is not QEMU's); its migration's own connect
// then fails refused, and says why, where it said only "connection
// refused". Played by a listener that takes one connection and closes.
func TestAutoProbeEndsQEMUIncoming(t *testing.T) {
	src := startQEMURun(t, "--memory", "32M", "--workload", "hotset")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		if c, err := l.Accept(); err == nil {
			c.Close()
		}
		l.Close()
	}()
	out, err := exec.Command(binary, "migrate", "--qmp", "unix:"+src.sock, "--to", "tcp:"+l.Addr().String(),
		"--mode", "auto", "--quiet").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "connection refused") || !strings.Contains(string(out), "a QEMU listening with its own -incoming, which exits on a connection that is not QEMU's migration; from a QEMU source, give --dest-qmp") {
		t.Fatalf("auto to a destination gone after its check: %v\n%s", err, out)
	}
}

// TestIncomingQEMUCancelled: an --engine qemu destination whose migration
// the source cancels in pre-copy exits 1 saying the guest is still on the
// source (it gave QEMU's "Read section footer failed: -5" alone).
func TestIncomingQEMUCancelled(t *testing.T) {
	src := startQEMURun(t, "--memory", "64M", "--workload", "hotset:delay=8000")
	uri := freeTCP(t)
	dst := startQEMURun(t, "--memory", "64M", "--engine", "qemu", "--incoming", uri)
	cmd := exec.Command(binary, "migrate", "--qmp", "unix:"+src.sock, "--to", uri, "--engine", "qemu", "--bandwidth", "4MiB/s", "--quiet")
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second) // 8 MiB of 64 sent
	cmd.Process.Signal(os.Interrupt)
	if err := cmd.Wait(); err == nil || !strings.Contains(out.String(), "migrate_cancel sent") {
		t.Fatalf("migrate interrupted: %v\n%s", err, out.String())
	}
	select {
	case <-dst.exited:
	case <-time.After(15 * time.Second):
		t.Fatal("the destination still waits after the source cancelled")
	}
	if code := dst.cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(dst.stderr.String(), "the incoming migration failed before the guest ran here") ||
		!strings.Contains(dst.stderr.String(), "so the guest is where it was, on the source") {
		t.Errorf("the destination of a cancelled migration: exit status %d\n%s", code, dst.stderr.String())
	}
}

// startQEMUExtra is startQEMU with QEMU options of its own: extra.
func startQEMUExtra(t *testing.T, workload, incoming string, extra ...string) *qemu.VM {
	t.Helper()
	return startQEMUAccel(t, qemu.AccelTCG, workload, incoming, extra...)
}

// startQEMUAccel is startQEMUExtra under the accelerator accel.
func startQEMUAccel(t *testing.T, accel, workload, incoming string, extra ...string) *qemu.VM {
	t.Helper()
	w, err := guest.ParseWorkload(workload)
	if err != nil {
		t.Fatal(err)
	}
	vm, err := qemu.Start(qemu.Options{Accel: accel, MemoryBytes: migrateQEMUMemory, Cmdline: w.Cmdline(1),
		Seed: 1, Incoming: incoming, Extra: extra})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { vm.Close() })
	if incoming == "" {
		for deadline := time.Now().Add(time.Minute); qemuProgress(t, vm) == 0; time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("guest made no progress in a minute")
			}
		}
	}
	return vm
}

// TestMigrateQEMUDestinationRefusesState: QEMU's own migration to a
// destination QEMU that refuses the state once it has come (a device the
// source has and it lacks) and exits fails, and the guest runs on at the
// source, resumed (it said completed, and left the guest in postmigrate,
// running nowhere: walk 56). One of other vCPUs is refused before
// anything starts.
func TestMigrateQEMUDestinationRefusesState(t *testing.T) {
	if testing.Short() {
		t.Skip("boots QEMU; skipped in short mode")
	}
	testutil.RequiresQEMU(t)
	// A device not on PCI, which --dest-qmp's comparison of devices
	// (SameDevices) leaves to QEMU, is refused by the destination QEMU
	// only once the state has come.
	src := startQEMUExtra(t, "hotset", "", "-smp", "2", "-device", "isa-serial")
	uri := freeTCP(t)
	dst := startQEMUExtra(t, "hotset", uri, "-smp", "1")
	out, err := exec.Command(binary, "migrate", "--qmp", "unix:"+src.QMPPath, "--dest-qmp", "unix:"+dst.QMPPath, "--to", uri,
		"--engine", "qemu", "--mode", "precopy", "--quiet").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "the destination QEMU (--dest-qmp) has 1 vCPU, the source 2") || !strings.Contains(string(out), "-smp 2") {
		t.Errorf("migrate to a destination of 1 vCPU from one of 2: %v\n%s", err, out)
	}
	dst.Close()
	uri = freeTCP(t)
	dst = startQEMUExtra(t, "hotset", uri, "-smp", "2")
	cmd := exec.Command(binary, "migrate", "--qmp", "unix:"+src.QMPPath, "--dest-qmp", "unix:"+dst.QMPPath, "--to", uri,
		"--engine", "qemu", "--mode", "precopy", "--quiet", "--json")
	var stdout, stderr syncBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	out = []byte(stderr.String())
	if err == nil || !strings.Contains(string(out), "the destination QEMU no longer answers on --dest-qmp") ||
		!strings.Contains(string(out), "the guest runs on at the source again (pagecast sent it cont)") {
		t.Errorf("migrate to a destination that refused the state: %v\n%s", err, out)
	}
	// --json: failed, though QEMU's source said completed (review 63).
	if o := outcomeOf(t, stdout.String()); o.Status != migrator.StatusFailed || o.Info == nil || o.Info.Status != migrator.StatusCompleted || o.Guest != guestSource {
		t.Errorf("--json: %s", stdout.String())
	}
	if st := qemuRunState(t, src); st != "running" {
		t.Fatalf("source after the destination refused the state: %s, want running", st)
	}
	wantProgress(t, src, "on the source after it was resumed")

	// Without --dest-qmp, a destination QEMU of this host that exits on
	// what came is seen by its listening port: the migration fails,
	// saying the source holds the guest paused, where it said completed,
	// exit 0 (walk 74).
	uri = freeTCP(t)
	dst = startQEMUExtra(t, "hotset", uri, "-smp", "2")
	var stdout2, stderr2 syncBuffer
	cmd = exec.Command(binary, "migrate", "--qmp", "unix:"+src.QMPPath, "--to", uri, "--engine", "qemu", "--mode", "precopy", "--quiet", "--json")
	cmd.Stdout, cmd.Stderr = &stdout2, &stderr2
	if err := cmd.Run(); err == nil {
		t.Errorf("migrate without --dest-qmp to a destination that refused the state succeeded:\n%s", stderr2.String())
	}
	if o := outcomeOf(t, stdout2.String()); o.Status != migrator.StatusFailed || o.Guest != guestSource || !strings.Contains(o.Error, "exited just after") || !strings.Contains(o.Error, "send the source QMP cont") {
		t.Errorf("--json without --dest-qmp: %s\n%s", stdout2.String(), stderr2.String())
	}
	if st := qemuRunState(t, src); st != "postmigrate" {
		t.Fatalf("source after the destination refused the state, no --dest-qmp: %s, want postmigrate", st)
	}
	qemuQuery(t, src, "cont", nil)
	wantProgress(t, src, "on the source after cont")
}

// TestMigrateQEMUKVMToTCG: QEMU's own migration of a guest under KVM to a
// destination QEMU under TCG (--dest-qmp) is refused before a page goes,
// the guest running on at the source (the destination took every page,
// then refused the state: walk 69).
func TestMigrateQEMUKVMToTCG(t *testing.T) {
	if testing.Short() {
		t.Skip("boots QEMU; skipped in short mode")
	}
	testutil.RequiresQEMUWithKVM(t)
	src := startQEMUAccel(t, qemu.AccelKVM, "hotset", "")
	uri := freeTCP(t)
	dst := startQEMUExtra(t, "hotset", uri)
	cmd := exec.Command(binary, "migrate", "--qmp", "unix:"+src.QMPPath, "--dest-qmp", "unix:"+dst.QMPPath, "--to", uri,
		"--engine", "qemu", "--mode", "precopy", "--quiet", "--json")
	var stdout, stderr syncBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err == nil || !strings.Contains(stderr.String(), "start the destination with --accel kvm") {
		t.Errorf("migrate from KVM to TCG: %v\n%s", err, stderr.String())
	}
	if o := outcomeOf(t, stdout.String()); o.Guest != guestSource || o.Status != "none" {
		t.Errorf("--json: %s", stdout.String())
	}
	var q struct {
		Status string `json:"status"`
	}
	qemuQuery(t, src, "query-migrate", &q)
	if q.Status != "" && q.Status != "none" {
		t.Errorf("the source's query-migrate says %q: a migration began", q.Status)
	}
	if st := qemuRunState(t, src); st != "running" {
		t.Fatalf("source after the refusal: %s, want running", st)
	}
	wantProgress(t, src, "on the source after the refusal")
}

// TestMigrateQEMUDestinationStartedPaused: a destination QEMU started with
// -S, as libvirt starts one, holds the migrated guest paused; pagecast
// says so and what runs it (it was left paused, the guest running
// nowhere, unsaid: walk 56), and does not resume it itself, as it cannot
// tell -S from an operator's stop on the source (review 60).
func TestMigrateQEMUDestinationStartedPaused(t *testing.T) {
	if testing.Short() {
		t.Skip("boots QEMU; skipped in short mode")
	}
	testutil.RequiresQEMU(t)
	src := startQEMUExtra(t, "hotset", "")
	uri := freeTCP(t)
	dst := startQEMUExtra(t, "hotset", uri, "-S")
	out, err := exec.Command(binary, "migrate", "--qmp", "unix:"+src.QMPPath, "--dest-qmp", "unix:"+dst.QMPPath, "--to", uri,
		"--engine", "qemu", "--mode", "precopy", "--quiet").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "the destination QEMU holds the migrated guest paused (paused): it was started with -S") ||
		!strings.Contains(string(out), "it runs once the destination gets QMP cont") {
		t.Errorf("migrate to a destination started with -S: %v\n%s", err, out)
	}
	if st := qemuRunState(t, dst); st != "paused" {
		t.Fatalf("destination after the migration: %s, want paused, as -S holds it", st)
	}
	qemuQuery(t, dst, "cont", nil)
	wantProgress(t, dst, "on the destination")
}

// fakeQMP answers query-status with what state returns and records the
// other commands it is sent.
type fakeQMP struct {
	state func() (string, error)
	sent  []string
}

func (f *fakeQMP) Run(cmd []byte) ([]byte, error) {
	var c struct {
		Execute string `json:"execute"`
	}
	json.Unmarshal(cmd, &c)
	if c.Execute != "query-status" {
		f.sent = append(f.sent, c.Execute)
		return []byte(`{"return":{}}`), nil
	}
	st, err := f.state()
	if err != nil {
		return nil, err
	}
	return []byte(`{"return":{"status":"` + st + `"}}`), nil
}

// settleDestination resumes the source only where the destination's
// process is known to have exited and nothing says the guest ran there; a
// destination that stops answering but may live on (review 58: a
// forwarded socket whose tunnel dropped) is never taken for gone.
func TestSettleDestination(t *testing.T) {
	exited := exec.Command("true")
	if err := exited.Run(); err != nil {
		t.Fatal(err)
	}
	lost := func() (string, error) { return "", errors.New("qmp query-status: connection lost") }
	never := func(time.Duration) bool { return false }
	for _, tc := range []struct {
		name       string
		dst        func() (string, error)
		st         settled
		srcSent    string // the command the source got, if any
		dstSent    string
		want, note string
		guest      string // destGone's, where the destination exited (review 66)
	}{
		{"gone", lost, settled{source: "running", destPID: exited.Process.Pid, ranThere: never}, "cont", "", "the guest runs on at the source again", "", guestSource},
		{"not of this host", lost, settled{source: "running", ranThere: never}, "", "", "cannot tell whether it runs the guest", "", ""},
		{"alive", lost, settled{source: "running", destPID: os.Getpid(), ranThere: never}, "", "", "yet its process (pid", "", ""},
		{"resumed there", lost, settled{source: "running", destPID: exited.Process.Pid, ranThere: func(time.Duration) bool { return true }}, "", "", "the guest had run there (RESUME)", "", guestLost},
		{"post-copy", lost, settled{source: "running", postcopy: true, destPID: exited.Process.Pid, ranThere: never}, "", "", "post-copy was started, which may have run the guest there", "", guestUnknown},
		{"paused before", lost, settled{source: "paused", destPID: exited.Process.Pid, ranThere: never}, "", "", "the guest was paused on the source when the migration began", "", guestSource},
		// Started with -S, or paused by the operator on the source after
		// the migration began: said, not resumed (review 60).
		{"-S", func() (string, error) { return "paused", nil }, settled{source: "running", ranThere: never}, "", "", "", "it runs once the destination gets QMP cont", ""},
		{"paused by the operator", func() (string, error) { return "paused", nil }, settled{source: "paused", ranThere: never}, "", "", "", "holds the guest paused, as the source had it", ""},
		{"running", func() (string, error) { return "running", nil }, settled{source: "running", ranThere: never}, "", "", "", "", ""},
		{"panicked", func() (string, error) { return "guest-panicked", nil }, settled{source: "running", ranThere: never}, "", "", "is guest-panicked, not running", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src, dst := &fakeQMP{}, &fakeQMP{state: tc.dst}
			note, err := settleDestination(context.Background(), src, dst, tc.st, time.Second)
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Errorf("error %v, want %q", err, tc.want)
			}
			if tc.note == "" && note != "" || !strings.Contains(note, tc.note) {
				t.Errorf("note %q, want %q", note, tc.note)
			}
			if gone := (destGone{}); errors.As(err, &gone) != (tc.guest != "") || gone.guest != tc.guest {
				t.Errorf("destGone %v, guest %q; want guest %q", errors.As(err, &gone), gone.guest, tc.guest)
			}
			if got := strings.Join(src.sent, " "); got != tc.srcSent {
				t.Errorf("the source was sent %q, want %q", got, tc.srcSent)
			}
			if got := strings.Join(dst.sent, " "); got != tc.dstSent {
				t.Errorf("the destination was sent %q, want %q", got, tc.dstSent)
			}
		})
	}
	// Interrupted while the destination loads: neither is resumed.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	src := &fakeQMP{}
	_, err := settleDestination(ctx, src, &fakeQMP{state: func() (string, error) { return "inmigrate", nil }}, settled{source: "running", ranThere: never}, time.Minute)
	if err == nil || !strings.Contains(err.Error(), "interrupted while the destination QEMU loaded") || len(src.sent) != 0 {
		t.Errorf("interrupted: %v, the source sent %v", err, src.sent)
	}
}

// TestDestinationPIDForwarded: the destination QEMU's process is found
// through its own QMP socket, and not through a proxy to it: behind a
// forwarded socket the vCPU thread ids are another host's, and were
// trusted while they named a local QEMU's threads (here the same QEMU's).
func TestDestinationPIDForwarded(t *testing.T) {
	r := startQEMURun(t, "--memory", "32M")
	direct, err := qmpclient.Open(r.sock, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if pid := destinationPID(direct); pid != r.qemuPID {
		t.Errorf("through QEMU's own socket: pid %d, want QEMU's %d", pid, r.qemuPID)
	}
	direct.Disconnect()
	proxy := filepath.Join(t.TempDir(), "proxy.sock")
	l, err := net.Listen("unix", proxy)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		q, err := net.Dial("unix", r.sock)
		if err != nil {
			return
		}
		defer q.Close()
		go io.Copy(q, c)
		io.Copy(c, q)
	}()
	forwarded, err := qmpclient.Open(proxy, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer forwarded.Disconnect()
	if pid := destinationPID(forwarded); pid != 0 {
		t.Errorf("through a proxy (this process): pid %d, want 0 (not known)", pid)
	}
}

// TestMigrateTimeout: --timeout cancels a migration that has not completed
// in time, by either engine: exit 1, the guest running on at the source,
// and --json says failed (QEMU's reply cancelled), with why and what it
// had sent.
func TestMigrateTimeout(t *testing.T) {
	if testing.Short() {
		t.Skip("boots QEMUs; skipped in short mode")
	}
	check := func(t *testing.T, args []string, sourceState func() string) {
		t.Helper()
		// 32 MiB and more at 1 MiB/s: far over the 2 s.
		cmd := exec.Command(binary, append([]string{"--log-level", "warn", "migrate", "--bandwidth", "1MiB/s", "--timeout", "2s", "--json", "--quiet"}, args...)...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		start := time.Now()
		err := cmd.Run()
		took := time.Since(start)
		if err == nil {
			t.Fatalf("migrate with --timeout 2s at 1 MiB/s succeeded:\n%s", stderr.String())
		}
		o := outcomeOf(t, stdout.String())
		// Failed, as KubeVirt counts a migration past its completion
		// timeout (walk 89: cancelled, as a Ctrl-C, no alert fired);
		// QEMU's own reply says cancelled.
		if o.Status != migrator.StatusFailed || o.Info == nil || o.Info.Status != migrator.StatusCancelled || o.Guest != guestSource ||
			!strings.Contains(o.Error, "--timeout 2s reached before the migration completed") {
			t.Errorf("outcome: %s; want status failed, query-migrate's cancelled, guest source, the timeout", stdout.String())
		}
		// What it had sent by then (walk 89: QEMU's cancelled reply has
		// no counts, and --json said nothing was sent).
		if i := o.Info; i == nil || i.RAM == nil || i.RAM.Transferred < 1<<20 || i.TotalTime < 1000 {
			t.Errorf("outcome's query-migrate after the timeout: %s", stdout.String())
		}
		if !strings.Contains(stderr.String(), "--timeout 2s reached") {
			t.Errorf("stderr does not say the timeout:\n%s", stderr.String())
		}
		if took > 30*time.Second {
			t.Errorf("migrate took %v to end on a 2 s timeout", took)
		}
		if st := sourceState(); st != "running" {
			t.Errorf("source after the timeout: %s, want running", st)
		}
	}
	t.Run("qemu", func(t *testing.T) {
		src, _, uri := qemuPair(t, "hotset")
		check(t, []string{"--qmp", "unix:" + src.QMPPath, "--to", uri, "--engine", "qemu"}, func() string { return qemuRunState(t, src) })
	})
	t.Run("pagecast", func(t *testing.T) {
		src, _, to := enginePair(t, enginePagecast)
		check(t, []string{"--qmp", "unix:" + src.sock, "--to", to, "--engine", "pagecast"}, func() string { return qmpState(t, src.sock) })
	})
}

// TestQEMUToReceiverAuto: engine auto on a QEMU pagecast's engine cannot
// run on (no plugin, RAM not shared) takes QEMU's migration, which a
// pagecast receiver on --to refuses: refused before a byte goes, and not
// told to take pagecast's engine (a review walk). Under TCG before QEMU
// 9.0 auto takes no QEMU migration for want of pagecast's (review 115):
// refused, saying what pagecast's engine needs.
func TestQEMUToReceiverAuto(t *testing.T) {
	src := startQEMU(t, "hotset", "")
	to := freeTCP(t)
	receiver := startQEMURun(t, "--memory", "64M", "--incoming", to)
	out, err := exec.Command(binary, "migrate", "--qmp", "unix:"+src.QMPPath, "--to", to, "--mode", "precopy", "--quiet").CombinedOutput()
	if lose := migrator.TCGLosesWrites(src.Monitor); lose != "" {
		if err == nil || !strings.Contains(string(out), "--engine auto does not fall back to QEMU's own migration, and "+lose) ||
			!strings.Contains(string(out), "start the QEMU with pagecast's plugin (pagecast plugin) and its RAM in a shared file") {
			t.Errorf("auto for want of pagecast's engine under TCG before 9.0: %v\n%s", err, out)
		}
	} else if err == nil || !strings.Contains(string(out), "engine qemu: pagecast's engine cannot run on it: ") ||
		!strings.Contains(string(out), "; pagecast's engine, which it takes, cannot run on this source") || strings.Contains(string(out), "--engine pagecast") {
		t.Errorf("auto's QEMU migration to a pagecast receiver: %v\n%s", err, out)
	}
	if strings.Contains(receiver.stderr.String(), "refused a connection") {
		t.Errorf("the receiver was connected to:\n%s", receiver.stderr.String())
	}
	if st := qemuRunState(t, src); st != "running" {
		t.Errorf("source is %s after the refusal", st)
	}
}

// TestMigrateTimeoutPostcopy: --timeout reached in pre-copy in a mode
// that allows post-copy (precopy+postcopy, QEMU's) starts post-copy, as
// KubeVirt's completion timeout does with allowPostCopy, where it
// cancelled (walk 89): the migration completes, the guest runs on at the
// destination, and the summary says why post-copy began.
func TestMigrateTimeoutPostcopy(t *testing.T) {
	src, dst, uri := qemuPair(t, "hotset")
	// 64 MiB at 8 MiB/s: the first pass takes 8 s, and a pass that
	// converges before the switch is not met.
	out, err := exec.Command(binary, "--log-level", "warn", "migrate", "--qmp", "unix:"+src.QMPPath, "--dest-qmp", "unix:"+dst.QMPPath, "--to", uri,
		"--mode", migrator.ModePrecopy+"+postcopy", "--engine", "qemu", "--bandwidth", "8MiB/s", "--timeout", "2s", "--json", "--quiet").Output()
	o := outcomeOf(t, string(out))
	if err != nil || o.Status != migrator.StatusCompleted || o.Guest != guestDestination {
		t.Fatalf("--timeout 2s in precopy+postcopy: %v, status %s, guest %s; want completed at the destination:\n%s", err, o.Status, o.Guest, out)
	}
	if o.QEMU == nil || !strings.Contains(o.QEMU.Switched, "--timeout 2s reached before the migration completed in pre-copy: switched, not cancelled") {
		t.Errorf("switched-to-postcopy does not give the timeout:\n%s", out)
	}
	waitDestRunning(t, dst)
	wantProgress(t, dst, "on the destination")
}

// TestMigrateTimeoutPostcopyOwn: the same on pagecast's own monitor,
// which now takes migrate-start-postcopy: precopy+postcopy switches in its
// first pass at --timeout, where it was cancelled.
func TestMigrateTimeoutPostcopyOwn(t *testing.T) {
	uri := freeTCP(t)
	src := startVMRunProc(t, "--memory", "16M")
	startVMRunProc(t, "--memory", "16M", "--incoming", uri)
	// 16 MiB at 4 MiB/s: a first pass of some 4 s.
	out, err := exec.Command(binary, "--log-level", "warn", "migrate", "--qmp", "unix:"+src.sock, "--to", uri,
		"--mode", migrator.ModePrecopy+"+postcopy", "--bandwidth", "4MiB/s", "--timeout", "1s", "--json", "--quiet").Output()
	o := outcomeOf(t, string(out))
	if err != nil || o.Status != migrator.StatusCompleted || o.Guest != guestDestination {
		t.Fatalf("--timeout 1s in precopy+postcopy on pagecast's monitor: %v, status %s, guest %s; want completed at the destination:\n%s", err, o.Status, o.Guest, out)
	}
	if !strings.Contains(string(out), "migrate-start-postcopy in round 1") || !strings.Contains(string(out), `"verified":true`) {
		t.Errorf("the migration did not switch at the timeout, verified:\n%s", out)
	}
}

// TestPagecastMonitorToQEMUIncoming: pagecast's own monitor, which
// migrates with pagecast's engine only, is refused a QEMU of this host
// that listens with its own -incoming, in a mode or in auto, before a
// byte goes: sent, the QEMU exited on the stream, and auto's refusal told
// it to give a mode (review 88).
func TestPagecastMonitorToQEMUIncoming(t *testing.T) {
	if testing.Short() {
		t.Skip("boots VMs; skipped in short mode")
	}
	testutil.RequiresQEMU(t)
	src := startVMRunProc(t, "--memory", "32M")
	uri := freeTCP(t)
	dst := startQEMU(t, "hotset", uri)
	for _, mode := range []string{"precopy", "auto"} {
		out, err := exec.Command(binary, "migrate", "--qmp", "unix:"+src.sock, "--to", uri, "--mode", mode, "--bandwidth", "64MiB/s", "--quiet").CombinedOutput()
		if err == nil || !strings.Contains(string(out), "listens on "+uri+" with its own -incoming") || strings.Contains(string(out), "give a mode (") {
			t.Errorf("--mode %s from pagecast's monitor to a QEMU listening itself: %v\n%s", mode, err, out)
		}
		if st := qemuRunState(t, dst); st != "inmigrate" {
			t.Fatalf("destination after --mode %s's refusal: %s", mode, st)
		}
	}
}

// TestMigrateQEMUStallFailed: a QEMU migration whose link moved nothing
// for PrecopyStall, cancelled by pagecast, is counted failed, with what
// it had sent: it said cancelled, as a wish, with no counts, and raised
// no failure alert (review 90).
func TestMigrateQEMUStallFailed(t *testing.T) {
	src, dst, uri := qemuPair(t, "hotset")
	cmd := exec.Command(binary, "--log-level", "warn", "migrate", "--qmp", "unix:"+src.QMPPath, "--to", uri, "--engine", "qemu", "--bandwidth", "1MiB/s", "--quiet", "--json")
	var out, stdout syncBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitQuery(t, src, cmd, &out, "1 MiB sent", func(i migrator.Info) bool { return i.RAM != nil && i.RAM.Transferred > 1<<20 })
	syscall.Kill(dst.PID(), syscall.SIGSTOP)
	defer syscall.Kill(dst.PID(), syscall.SIGCONT)
	if err := cmd.Wait(); err == nil {
		t.Fatalf("migrate to a stopped destination succeeded:\n%s", out.String())
	}
	o := outcomeOf(t, stdout.String())
	if o.Status != migrator.StatusFailed || o.Guest != guestSource || !strings.Contains(o.Error, "moved nothing for") ||
		o.Info == nil || o.Info.Status != migrator.StatusCancelled || o.Info.RAM == nil || o.Info.RAM.Transferred < 1<<20 {
		t.Errorf("--json outcome: %s", stdout.String())
	}
	if st := qemuRunState(t, src); st != "running" {
		t.Errorf("source after the stall: %s, want running", st)
	}
}

// enginePair starts a 32 MiB QEMU guest whose pre-copy converges and a
// destination for engine's migration (pagecast's receiver, or QEMU's own
// -incoming), listening on to.
func enginePair(t *testing.T, engine string) (src, dst *qemuRun, to string) {
	t.Helper()
	src = startQEMURun(t, "--memory", "32M", "--workload", "hotset:hot=1024,p=0.95,delay=25000")
	to = "tcp:" + freeAddr(t)
	args := []string{"--memory", "32M", "--incoming", to}
	if engine == engineQEMU {
		args = append(args, "--engine", "qemu")
	}
	return src, startQEMURun(t, args...), to
}

// TestMigrateProgressTimeout: --progress-timeout cancels a migration whose
// destination stopped taking data (SIGSTOP), counted failed, by either
// engine, before the engine's own stall checks, the guest running on at
// the source.
func TestMigrateProgressTimeout(t *testing.T) {
	if testing.Short() {
		t.Skip("boots QEMUs; skipped in short mode")
	}
	for _, engine := range []string{engineQEMU, enginePagecast} {
		t.Run(engine, func(t *testing.T) {
			src, dst, to := enginePair(t, engine)
			stop := dst.cmd.Process.Pid // pagecast's receiver
			if engine == engineQEMU {
				stop = dst.qemuPID
			}
			cmd := exec.Command(binary, "--log-level", "warn", "migrate", "--qmp", "unix:"+src.sock, "--to", to, "--engine", engine,
				"--bandwidth", "4MiB/s", "--progress-timeout", "3s", "--json", "--quiet")
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			time.Sleep(2 * time.Second) // under way: 32 MiB at 4 MiB/s takes 8 s
			syscall.Kill(stop, syscall.SIGSTOP)
			defer syscall.Kill(stop, syscall.SIGCONT)
			stopped := time.Now()
			if err := cmd.Wait(); err == nil {
				t.Fatalf("a migration to a stopped destination, with --progress-timeout 3s, succeeded:\n%s", stderr.String())
			}
			took := time.Since(stopped)
			o := outcomeOf(t, stdout.String())
			if o.Status != migrator.StatusFailed || o.Guest != guestSource || !strings.Contains(o.Error, "--progress-timeout 3s reached: the data left to send") ||
				o.Info == nil || o.Info.RAM == nil || o.Info.RAM.Transferred < 1<<20 {
				t.Errorf("outcome after %v: %s", took, stdout.String())
			}
			t.Logf("ended %v after the destination stopped", took)
			// The error says the progress timeout ended it, not the
			// engine's stall check (10 s); the time only that it was not
			// early, cancelled while it moved (review 92), nor hung. The
			// data still goes into the socket's buffers for a while after
			// the stop, and a loaded machine's polls come late: 12.1 s in
			// CI 112, walk VMs beside it, 7.5 s alone.
			if took > 30*time.Second || took < 2*time.Second {
				t.Errorf("ended %v after the destination stopped: not by the 3 s progress timeout", took)
			}
			if st := qmpState(t, src.sock); st != "running" {
				t.Errorf("source after the progress timeout: %s, want running", st)
			}
		})
	}
}

// TestQEMUMigrationKeepsWritesTCG: QEMU's own pre-copy of a guest under
// TCG writing all the while (hotset:delay=8000: on 7.2.22, 1, 2 and 1
// pages differed in three runs, where delay=25000 gave 0 and 2) leaves the
// destination's memory equal to the source's, both paused after it (the destination started with -S). Before
// QEMU 9.0 it did not: its dirty-bitmap sync left the vCPUs' TLB entries
// of pages written since unreset, and writes through them went unseen
// (README, "QEMU's own migration under TCG loses writes before QEMU 9.0");
// there it is measured and logged, not asserted, as migrate warns of it.
func TestQEMUMigrationKeepsWritesTCG(t *testing.T) {
	if testing.Short() {
		t.Skip("boots QEMU; skipped in short mode")
	}
	testutil.RequiresQEMU(t)
	src := startQEMU(t, "hotset:delay=8000", "")
	uri := freeTCP(t)
	dst := startQEMUExtra(t, "hotset:delay=8000", uri, "-S")
	var v struct {
		QEMU struct{ Major, Minor, Micro int } `json:"qemu"`
	}
	qemuQuery(t, src, "query-version", &v)
	// 64 MiB/s: several rounds of a guest that writes all the while.
	stdout, stderr, err := runApp(t, "migrate", "--qmp", "unix:"+src.QMPPath, "--to", uri, "--engine", "qemu",
		"--mode", migrator.ModePrecopy, "--bandwidth", "64MiB/s", "--downtime-limit", "300ms")
	if err != nil {
		t.Fatalf("migrate --engine qemu: %v\n%s\n%s", err, stdout, stderr)
	}
	for _, vm := range []*qemu.VM{src, dst} {
		deadline := time.Now().Add(10 * time.Second)
		for st := qemuRunState(t, vm); st != "postmigrate" && st != "paused"; st = qemuRunState(t, vm) {
			if time.Now().After(deadline) {
				t.Fatalf("a QEMU is %q after the migration, want it paused", st)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	a, b := src.Memory(), dst.Memory()
	differ := 0
	for off := 0; off+4096 <= len(a); off += 4096 {
		if !bytes.Equal(a[off:off+4096], b[off:off+4096]) {
			differ++
		}
	}
	var info migrator.Info
	qemuQuery(t, src, "query-migrate", &info)
	t.Logf("QEMU %d.%d.%d: %d of %d pages differ after its own pre-copy (%d dirty syncs, %.1f MiB sent)",
		v.QEMU.Major, v.QEMU.Minor, v.QEMU.Micro, differ, len(a)/4096, info.RAM.DirtySyncCount, float64(info.RAM.Transferred)/(1<<20))
	// A pre-copy syncs at its setup, once little remains and at its end,
	// whatever it did between (review 113): a fourth is a round after the
	// first, where writes could be lost.
	if info.RAM.DirtySyncCount < 4 {
		t.Errorf("QEMU's migration synced the dirty log %d times: no round after the first to lose a write in", info.RAM.DirtySyncCount)
	}
	if v.QEMU.Major >= 9 && differ > 0 {
		t.Errorf("QEMU %d.%d's own migration under TCG: %d pages differ between the paused source and destination", v.QEMU.Major, v.QEMU.Minor, differ)
	}
}

// TestIncomingQEMUStoppedBefore: a destination under QEMU's own -incoming
// sent QMP stop while it waited keeps the guest paused once it arrives,
// and logs it so, as it says on stdout (walk 111: logged "virtual machine
// running").
func TestIncomingQEMUStoppedBefore(t *testing.T) {
	uri := freeTCP(t)
	src := startQEMURun(t, "--memory", "32M", "--workload", "hotset:delay=25000")
	dst := startQEMURun(t, "--memory", "32M", "--incoming", uri, "--engine", "qemu")
	mon, err := qmpclient.Dial("unix", dst.sock, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := mon.Connect(); err == nil {
		_, err = mon.Run([]byte(`{"execute":"stop"}`))
	}
	mon.Disconnect()
	if err != nil {
		t.Fatalf("stop: %v", err)
	}
	if out, err := exec.Command(binary, "migrate", "--qmp", "unix:"+src.sock, "--to", uri, "--engine", "qemu", "--quiet").CombinedOutput(); err != nil {
		t.Fatalf("migrate: %v\n%s", err, out)
	}
	dst.saysAfterMigration(t, "QEMU's migration received; guest paused")
	waitFor(t, "the destination's log of the paused guest", func() bool {
		return strings.Contains(dst.stderr.String(), `msg="virtual machine paused"`)
	})
	if strings.Contains(dst.stderr.String(), `msg="virtual machine running"`) {
		t.Errorf("a paused guest logged as running:\n%s", dst.stderr.String())
	}
}

// TestMigrateOtherDisk: a destination QEMU of this host whose disk is
// another file than the source's is refused before anything is sent (walk
// 114: a stale copy of the image; the migration completed, verified, and
// the guest's disk had lost the blocks written since the copy). The same
// file by another name is not.
func TestMigrateOtherDisk(t *testing.T) {
	if testing.Short() {
		t.Skip("boots QEMUs; skipped in short mode")
	}
	testutil.RequiresQEMU(t)
	dir := t.TempDir()
	disk, other, link := filepath.Join(dir, "disk.raw"), filepath.Join(dir, "copy.raw"), filepath.Join(dir, "link.raw")
	for _, f := range []string{disk, other} {
		if err := os.WriteFile(f, make([]byte, 1<<20), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(disk, link); err != nil {
		t.Fatal(err)
	}
	drive := func(f string) []string { return []string{"-drive", "file=" + f + ",format=raw,if=virtio"} }
	src := filepath.Join(dir, "src.qmp")
	startMemfdQEMU(t, src, nil, drive(disk)...)
	for i, file := range []string{other, link} {
		dst := filepath.Join(dir, fmt.Sprintf("dst%d.qmp", i))
		startMemfdQEMU(t, dst, nil, append(drive(file), "-incoming", "defer")...)
		_, stderr, err := runApp(t, "migrate", "--qmp", "unix:"+src, "--dest-qmp", "unix:"+dst, "--to", freeTCP(t), "--engine", "qemu", "--mode", "precopy")
		refused := err != nil && strings.Contains(err.Error(), "the destination QEMU (--dest-qmp) opens "+file+" for the disk of ")
		if refused != (file == other) {
			t.Errorf("destination on %s: %v\n%s", filepath.Base(file), err, stderr)
		}
		if file == other && (err == nil || !strings.Contains(err.Error(), ", the source "+disk+": a migration moves no disk") || qmpState(t, src) != "running") {
			t.Errorf("refusal %v; the source %s", err, qmpState(t, src))
		}
	}
}

// TestMigrateOtherDevices: given --dest-qmp, a destination QEMU that lacks
// one of the source's devices is refused before anything is sent, naming
// it, and the source runs on (walk 114: QEMU refused the state once the
// whole memory had gone); one with the same devices under other ids, given
// in another order, is not, and QEMU's migration to it completes.
func TestMigrateOtherDevices(t *testing.T) {
	if testing.Short() {
		t.Skip("boots QEMUs; skipped in short mode")
	}
	testutil.RequiresQEMU(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "src.qmp")
	startMemfdQEMU(t, src, nil, "-device", "virtio-balloon-pci,addr=0x5", "-device", "virtio-rng-pci,id=rng0,addr=0x6")
	for i, devs := range [][]string{
		{"-device", "virtio-balloon-pci,addr=0x5"},
		{"-device", "virtio-rng-pci,id=other,addr=0x6", "-device", "virtio-balloon-pci,id=b0,addr=0x5"},
	} {
		dst, to := filepath.Join(dir, fmt.Sprintf("dst%d.qmp", i)), freeTCP(t)
		startMemfdQEMU(t, dst, nil, append(devs, "-incoming", to)...)
		_, stderr, err := runApp(t, "migrate", "--qmp", "unix:"+src, "--dest-qmp", "unix:"+dst, "--to", to, "--engine", "qemu", "--mode", "precopy")
		refused := err != nil && strings.Contains(err.Error(), "the destination QEMU (--dest-qmp) has no ")
		if refused != (i == 0) {
			t.Errorf("destination %d: %v\n%s", i, err, stderr)
		}
		if i == 1 && (err != nil || qmpState(t, dst) != "running") {
			// QEMU took them: the ids and the order do not travel.
			t.Errorf("migration to the destination of the same devices: %v; the destination %s\n%s", err, qmpState(t, dst), stderr)
		}
		if i == 0 && (err == nil || !strings.Contains(err.Error(), "has no virtio-rng-pci at PCI pci.0/06.0, where the source has one (the destination has none there)") || qmpState(t, src) != "running") {
			t.Errorf("refusal %v; the source %s", err, qmpState(t, src))
		}
	}
}
