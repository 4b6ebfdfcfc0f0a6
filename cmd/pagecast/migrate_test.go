package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pagecast/pagecast/internal/testutil"
	"github.com/pagecast/pagecast/migrator"
	"github.com/pagecast/pagecast/migrator/mecom"
	"github.com/pagecast/pagecast/simulate"
	"github.com/pagecast/pagecast/trace"
)

func freeTCP(t *testing.T) string {
	t.Helper()
	return "tcp:" + freeAddr(t)
}

func status(t *testing.T, r *vmRun) string {
	t.Helper()
	return run(t, r.mon, "query-status", nil)["status"].(string)
}

// TestMigrateCLI migrates one `pagecast vm run` into another with
// `pagecast migrate`, as the README shows.
func TestMigrateCLI(t *testing.T) {
	for _, mode := range []string{"precopy", "predictive", "throttle", "tsmc", "mecom"} {
		t.Run(mode, func(t *testing.T) {
			uri := freeTCP(t)
			src := startVMRunProc(t, "--memory", "32M", "--workload", "hotset:hot=512")
			// --paused does what stop while waiting does (tsmc's).
			args := []string{"--memory", "32M", "--incoming", uri}
			if mode == "tsmc" {
				args = append(args, "--paused")
			}
			dst := startVMRunProc(t, args...)
			if st := status(t, dst); st != "inmigrate" {
				t.Fatalf("destination waiting for a migration is %q", st)
			}
			// stop and cont while waiting are taken, as QEMU's under
			// -incoming: after stop the guest stays paused once it has
			// come (here for precopy, and for tsmc by --paused, whose
			// stage 3 runs with the guest paused), after cont it runs.
			if mode != "tsmc" {
				if _, err := runErr(dst.mon, "stop", nil); err != nil || status(t, dst) != "inmigrate" {
					t.Fatalf("stop on the waiting destination: %v, then %s", err, status(t, dst))
				}
			}
			held := mode == "precopy" || mode == "tsmc"
			if !held {
				if _, err := runErr(dst.mon, "cont", nil); err != nil || status(t, dst) != "inmigrate" {
					t.Fatalf("cont on the waiting destination: %v, then %s", err, status(t, dst))
				}
			}
			if mode == "precopy" {
				refusedAs(t, dst, "virtual machine is inmigrate: it is a destination waiting for an incoming migration", "none")
			}
			args = []string{"migrate", "--qmp", "unix:" + src.sock, "--to", uri, "--mode", mode, "--bandwidth", "64MiB/s"}
			if !held {
				// The guest's own pause, from the destination's RESUME
				// (walk 139: --dest-qmp was ignored here).
				args = append(args, "--dest-qmp", "unix:"+dst.sock)
			}
			out, err := exec.Command(binary, args...).CombinedOutput()
			if err != nil {
				t.Fatalf("pagecast migrate: %v\n%s", err, out)
			}
			if paused := strings.Contains(string(out), "guest paused     "); paused == held {
				t.Errorf("summary's guest paused line: %v, want it with --dest-qmp only:\n%s", paused, out)
			}
			for _, want := range []string{"status           completed", "verified         true", "mode             " + mode} {
				if !strings.Contains(string(out), want) {
					t.Errorf("summary lacks %q:\n%s", want, out)
				}
			}
			if st := status(t, src); st != "postmigrate" {
				t.Errorf("source after migration: %s, want postmigrate as QEMU says", st)
			}
			// The destination's query-migrate says it completed, as
			// QEMU's does, and what it took (walk 138: {}).
			var in struct {
				Status   string
				Pagecast struct {
					Incoming struct {
						Mode     string
						Verified bool
						Bytes    uint64
					}
				} `json:"x-pagecast"`
			}
			if b, err := json.Marshal(run(t, dst.mon, "query-migrate", nil)); err != nil || json.Unmarshal(b, &in) != nil {
				t.Fatalf("the destination's query-migrate: %s, %v", b, err)
			}
			if got := in.Pagecast.Incoming; in.Status != "completed" || got.Mode != mode || !got.Verified || got.Bytes == 0 {
				t.Errorf("the destination's query-migrate: %+v, want completed, mode %s, verified, bytes", in, mode)
			}
			if mode == "precopy" {
				// Migrating it again is refused saying what it is, not to
				// cont it (walk 128: it was told to, and its guest ran
				// twice).
				refusedAs(t, src, "virtual machine is postmigrate: it has migrated away already", "elsewhere")
			}
			if held {
				if st := status(t, dst); st != "paused" {
					t.Fatalf("destination stopped while it waited is %s after migration, want paused", st)
				}
				p0 := progress(t, dst.mon)
				time.Sleep(300 * time.Millisecond)
				if p1 := progress(t, dst.mon); p1 != p0 {
					t.Errorf("guest progress on the paused destination moved: %v -> %v", p0, p1)
				}
				run(t, dst.mon, "cont", nil)
			}
			if st := status(t, dst); st != "running" {
				t.Fatalf("destination after migration: %s", st)
			}
			p0 := progress(t, dst.mon)
			time.Sleep(300 * time.Millisecond)
			if p1 := progress(t, dst.mon); p1 <= p0 {
				t.Errorf("guest progress on the destination stuck at %v", p0)
			}
		})
	}
}

// refusedAs checks that migrating vm is refused with an error saying want,
// and that --json's outcome says where its guest is: guest (the JSON
// said "source" of a destination yet to receive its guest, walk 128).
func refusedAs(t *testing.T, vm *vmRun, want, guest string) {
	t.Helper()
	if out, err := exec.Command(binary, "migrate", "--qmp", "unix:"+vm.sock, "--to", freeTCP(t), "--quiet").CombinedOutput(); err == nil || !strings.Contains(string(out), want) {
		t.Errorf("migrating a VM in %s: %v, want %q:\n%s", status(t, vm), err, want, out)
	}
	out, _ := exec.Command(binary, "migrate", "--qmp", "unix:"+vm.sock, "--to", freeTCP(t), "--json").Output()
	var outcome struct{ Status, Guest string }
	if err := json.Unmarshal(out, &outcome); err != nil || outcome.Status != "none" || outcome.Guest != guest {
		t.Errorf("--json's outcome of migrating a VM in %s: %+v (%v), want status none and guest %q:\n%s", status(t, vm), outcome, err, guest, out)
	}
}

// TestMigrateDestinationKilled kills the destination process mid-migration:
// the guest must keep running on the source and the command must fail
// saying so.
func TestMigrateDestinationKilled(t *testing.T) {
	uri := freeTCP(t)
	src := startVMRunProc(t, "--memory", "32M", "--workload", "hotset")
	dst := startVMRunProc(t, "--memory", "32M", "--incoming", uri)
	cmd := exec.Command(binary, "migrate", "--qmp", "unix:"+src.sock, "--to", uri, "--bandwidth", "8MiB/s")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1 * time.Second) // well inside round 1: 32 MiB at 8 MiB/s
	dst.cmd.Process.Kill()
	<-dst.done
	err := cmd.Wait()
	if err == nil {
		t.Fatalf("pagecast migrate succeeded with its destination killed:\n%s", out.String())
	}
	for _, want := range []string{"migration failed", "the destination went away", "keeps running on the source"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("migrate's error lacks %q:\n%s", want, out.String())
		}
	}
	if st := status(t, src); st != "running" {
		t.Fatalf("source is %s after its destination died", st)
	}
	p0 := progress(t, src.mon)
	time.Sleep(300 * time.Millisecond)
	if p1 := progress(t, src.mon); p1 <= p0 {
		t.Errorf("guest progress on the source stuck at %v", p0)
	}
	info := run(t, src.mon, "query-migrate", nil)
	if info["status"] != "failed" || info["error-desc"] == "" {
		t.Errorf("query-migrate after the failure: %v", info)
	}
}

// TestDestinationBusy: a second source sent to a destination that is
// taking a migration is refused at once, saying the destination is busy
// (it waited 10 s unanswered, then gave up), and runs its guest on; the
// first migration completes.
func TestDestinationBusy(t *testing.T) {
	uri := freeTCP(t)
	first := startVMRunProc(t, "--memory", "32M", "--workload", "idle") // converges after round 1's 2 s
	second := startVMRunProc(t, "--memory", "32M", "--workload", "hotset")
	startVMRunProc(t, "--memory", "32M", "--incoming", uri)
	cmd := exec.Command(binary, "migrate", "--qmp", "unix:"+first.sock, "--to", uri, "--bandwidth", "16MiB/s")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // in round 1: 32 MiB at 16 MiB/s
	start := time.Now()
	busy, err := exec.Command(binary, "migrate", "--qmp", "unix:"+second.sock, "--to", uri, "--bandwidth", "16MiB/s").CombinedOutput()
	took := time.Since(start)
	if err == nil || !strings.Contains(string(busy), "this destination is busy with an incoming migration from 127.0.0.1:") {
		t.Errorf("a second source to a busy destination: %v\n%s", err, busy)
	}
	if took > 5*time.Second {
		t.Errorf("the second source was refused after %v", took)
	}
	if st := status(t, second); st != "running" {
		t.Errorf("the second source is %s after its refusal", st)
	}
	if err := cmd.Wait(); err != nil || !strings.Contains(out.String(), "verified         true") {
		t.Fatalf("the first migration: %v\n%s", err, out.String())
	}
}

// TestMigrateSourceKilled: a source VM killed mid-migration is said to
// be gone, not to keep running.
func TestMigrateSourceKilled(t *testing.T) {
	uri := freeTCP(t)
	src := startVMRunProc(t, "--memory", "32M", "--workload", "hotset")
	startVMRunProc(t, "--memory", "32M", "--incoming", uri)
	cmd := exec.Command(binary, "migrate", "--qmp", "unix:"+src.sock, "--to", uri, "--bandwidth", "8MiB/s", "--quiet")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	src.cmd.Process.Kill()
	<-src.done
	if err := cmd.Wait(); err == nil {
		t.Fatalf("pagecast migrate succeeded with its source killed:\n%s", out.String())
	}
	if !strings.Contains(out.String(), "has its VM exited?") || strings.Contains(out.String(), "keeps running") {
		t.Errorf("migrate's error:\n%s", out.String())
	}
}

// TestMigratePostcopyInterrupted: an interrupt in post-copy does not
// cancel, which would lose the guest: a tsmc migration whose destination
// dies in stage 3 and which is then interrupted says so, and a second
// interrupt stops following without a cancel. The source keeps the guest
// paused, redialling, and refuses a migrate_cancel sent by hand.
func TestMigratePostcopyInterrupted(t *testing.T) {
	uri := freeTCP(t)
	src := startVMRunProc(t, "--memory", "32M", "--workload", "hotset")
	dst := startVMRunProc(t, "--memory", "32M", "--incoming", uri)
	cmd := exec.Command(binary, "migrate", "--qmp", "unix:"+src.sock, "--to", uri, "--mode", "tsmc", "--bandwidth", "4MiB/s", "--quiet")
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Stage 1 sends 32 MiB at 4 MiB/s; stage 3 pushes what was written
	// meanwhile for a second or more.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if st, _ := run(t, src.mon, "query-migrate", nil)["status"].(string); strings.HasPrefix(st, "postcopy") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no post-copy within 30 s:\n%s", out.String())
		}
	}
	dst.cmd.Process.Kill()
	<-dst.done
	time.Sleep(500 * time.Millisecond) // migrate polls every 200 ms
	cmd.Process.Signal(syscall.SIGTERM)
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(out.String(), "post-copy under way"); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no word on the first interrupt in post-copy:\n%s", out.String())
		}
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err == nil {
		t.Fatalf("pagecast migrate succeeded with its destination killed in stage 3:\n%s", out.String())
	}
	for _, want := range []string{"a cancel now would lose it", "stopped following the migration in postcopy", "no migrate_cancel sent",
		"post-copy's link to the destination is lost: the source redials it for up to 5m0s"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("migrate's output lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "keeps running on the source") {
		t.Errorf("migrate's error says the guest keeps running on the source:\n%s", out.String())
	}
	if st := status(t, src); st != "paused" {
		t.Errorf("source is %s after post-copy lost its destination", st)
	}
	info := run(t, src.mon, "query-migrate", nil)
	if info["status"] != "postcopy-paused" {
		t.Errorf("query-migrate after the interruption: %v, want postcopy-paused (redialling)", info)
	}
	if _, err := runErr(src.mon, "migrate_cancel", nil); err == nil || !strings.Contains(err.Error(), "cannot be cancelled without losing the guest") {
		t.Errorf("migrate_cancel in post-copy: %v, want it refused", err)
	}
	// Stopped, the source VM waits for its post-copy, saying so; a
	// second signal stops it (it freed the memory under the migration
	// and crashed: found by a review walk).
	src.cmd.Process.Signal(syscall.SIGTERM)
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(src.stderr.String(), "A second SIGINT or SIGTERM stops it anyway"); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("vm run, stopped in post-copy, did not say it waits:\n%s", src.stderr.String())
		}
	}
	select {
	case err := <-src.done:
		t.Fatalf("vm run stopped at the first signal in post-copy: %v", err)
	case <-time.After(500 * time.Millisecond):
	}
	src.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-src.done:
	case <-time.After(10 * time.Second):
		t.Fatal("vm run did not stop at a second signal in post-copy")
	}
	if strings.Contains(src.stderr.String(), "fatal error") {
		t.Errorf("vm run crashed:\n%s", src.stderr.String())
	}
}

// TestMigrateRefused: a destination of another size refuses and says why;
// the source keeps running, and the destination logs the refusal and goes
// on waiting for the source it expects.
func TestMigrateRefused(t *testing.T) {
	uri := freeTCP(t)
	src := startVMRunProc(t, "--memory", "32M")
	dst := startVMRunProc(t, "--memory", "16M", "--incoming", uri)
	// TLS is the monitor's own, given to its vm run.
	out, err := exec.Command(binary, "migrate", "--qmp", "unix:"+src.sock, "--to", uri, "--tls-ca", "ca.pem").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "give them to its pagecast vm run") {
		t.Errorf("--tls-ca with pagecast's monitor: %v\n%s", err, out)
	}
	out, err = exec.Command(binary, "migrate", "--qmp", "unix:"+src.sock, "--to", uri).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "refused") || !strings.Contains(string(out), "memory") {
		t.Fatalf("migrating 32M into 16M: %v\n%s", err, out)
	}
	select {
	case err := <-dst.done:
		t.Fatalf("refusing destination exited (%v); it should wait on\n%s", err, dst.stderr.String())
	case <-time.After(2 * time.Second):
	}
	if !strings.Contains(dst.stderr.String(), "refused a connection") {
		t.Errorf("destination did not log the refusal:\n%s", dst.stderr.String())
	}
	if st := status(t, src); st != "running" {
		t.Fatalf("source is %s after a refused migration", st)
	}
}

// TestDemo runs the main job end to end, briefly.
func TestDemo(t *testing.T) {
	startVMRunProc(t, "--memory", "16M") // only for its KVM check and cleanup
	// Every mode, on a guest small and light enough to keep the test short.
	out, err := exec.Command(binary, "--log-level", "warn", "demo", "--duration", "3s", "--memory", "32M",
		"--workload", "hotset:hot=512,p=0.99", "--bandwidth", "64MiB/s").Output()
	if err != nil {
		t.Fatalf("pagecast demo: %v\n%s", err, out)
	}
	// Harvested every 100 ms, five to a line (--epoch, --interval).
	wants := []string{"running on pagecast's own KVM monitor: /dev/kvm works here", "next-epoch forecasts", "the model told in which of 5 parts of each a page was written", "against precopy:",
		"the same migrations simulated on this guest's profile"}
	for _, mode := range demoModes {
		wants = append(wants, fmt.Sprintf("%-25s done: guest running on the destination", mode))
	}
	for _, want := range wants {
		if !strings.Contains(string(out), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
	checkAutoLine(t, out)
	checkMeasuredContent(t, out)
}

// checkMeasuredContent checks that the demo's simulations took the content
// of the guest's memory as measured: the guest starts 35% zero pages
// (guest.DefaultMix) and its workload only writes non-zero ones, where
// simulate's default mix is half zero pages, which shortened every
// simulated round.
func checkMeasuredContent(t *testing.T, out []byte) {
	t.Helper()
	m := regexp.MustCompile(`content measured from its memory: (\S+);`).FindSubmatch(out)
	if m == nil {
		t.Errorf("the simulations do not say what content they took:\n%s", out)
		return
	}
	mix, err := simulate.ParseMix(string(m[1]))
	if err != nil {
		t.Fatalf("content %q: %v", m[1], err)
	}
	// The guest's arena starts 35% zero and its writes make it less; the
	// rest of its memory (page tables, stacks, what it has not touched
	// yet) adds zero pages: 0.377 once, on a machine loaded by other
	// tests (2026-12-02), where the guest had written little yet. Under
	// simulate's default, 0.5, is what tells a measured mix.
	if zero := mix[mecom.Zero]; zero > 0.42 || zero <= 0 {
		t.Errorf("measured content %s: a zero share of %.3f, not the guest's (at most about 0.38)", m[1], zero)
	}
}

// checkAutoLine checks that the demo's output ends with auto's choice for
// the VM, and why, and what the live migration in the chosen mode took:
// the demo migrates the VM in it too, and simulates it again as that
// migration begins (walk 147: the KVM demo did not).
func checkAutoLine(t *testing.T, out []byte) {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	last := lines[len(lines)-1]
	m := regexp.MustCompile(`^mode auto would migrate this VM with (\S+): `).FindStringSubmatch(last)
	if m == nil {
		t.Errorf("the demo ends with %q, not auto's choice", last)
		return
	}
	took := regexp.MustCompile(`; live above, ` + regexp.QuoteMeta(m[1]) + ` took [\d.]+m?s in all, [\d.]+ [KMG]?i?B, (the guest paused|downtime) [\d.]+m?s \(its total time predicted [+-]\d+%(; [+-]\d+% simulated again on the guest's memory as that migration began, as migrate --mode auto measures it when it starts \(zero=[^:]*: [\d.]+m?s in all, [\d.]+ [KMG]?i?B\))(; this machine's load average was [\d.]+ on \d+ cores)?\)$`)
	if !took.MatchString(last) {
		t.Errorf("auto chose %s and says not what its live migration took: %q", m[1], last)
	}
	if !regexp.MustCompile(`(?m)^  ` + regexp.QuoteMeta(m[1]) + ` +done: guest running on the destination`).Match(out) {
		t.Errorf("the demo did not migrate the VM live in %s, auto's choice", m[1])
	}
	t.Logf("%s", last)
}

// TestMigrateQMP checks the migration commands' QEMU shapes and refusals.
func TestMigrateQMP(t *testing.T) {
	vm := startVMRunProc(t, "--memory", "16M")
	if got := run(t, vm.mon, "query-migrate", nil); len(got) != 0 {
		t.Errorf("query-migrate before any migration: %v, want {}", got)
	}
	for _, bad := range []struct {
		cmd  string
		args any
		want string
	}{
		{"migrate-set-parameters", map[string]any{"x-pagecast-mode": "teleport"}, "x-pagecast-mode"},
		{"migrate-set-parameters", map[string]any{"cpu-throttle-initial": 20}, "unexpected"},
		{"migrate-set-parameters", map[string]any{"downtime-limit": "fast"}, "Invalid parameter type"},
		{"migrate", map[string]any{}, "'uri' is missing"},
		{"migrate", map[string]any{"uri": "exec:cat"}, "tcp:HOST:PORT"},
	} {
		_, err := runErr(vm.mon, bad.cmd, bad.args)
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%s %v: %v, want an error about %q", bad.cmd, bad.args, err, bad.want)
		}
	}
	run(t, vm.mon, "migrate-set-parameters", map[string]any{"downtime-limit": 500, "max-bandwidth": 1 << 20, "x-pagecast-mode": "predictive"})
	p := run(t, vm.mon, "query-migrate-parameters", nil)
	if p["downtime-limit"] != 500.0 || p["max-bandwidth"] != float64(1<<20) || p["x-pagecast-mode"] != "predictive" {
		t.Errorf("query-migrate-parameters: %v", p)
	}
	// "0: never" is QEMU's: pagecast's engine refuses it rather than
	// take its default cap of 30 unsaid.
	out, err := exec.Command(binary, "migrate", "--qmp", "unix:"+vm.sock, "--to", freeTCP(t), "--max-rounds", "0").CombinedOutput()
	if want := "--max-rounds 0 (no cap) is for QEMU's own migration"; err == nil || !strings.Contains(string(out), want) {
		t.Errorf("migrate --max-rounds 0 on pagecast's monitor: %v, %q; want it refused with %q", err, out, want)
	}
	if info := run(t, vm.mon, "query-migrate", nil); len(info) != 0 {
		t.Errorf("query-migrate after a refused --max-rounds 0: %v, want no migration", info)
	}
	// A paused source is refused once, in the migrate command's words.
	run(t, vm.mon, "stop", nil)
	out, err = exec.Command(binary, "migrate", "--qmp", "unix:"+vm.sock, "--to", freeTCP(t)).CombinedOutput()
	if want := "pagecast: migrate: virtual machine is paused, not running: resume it (QMP cont), then migrate"; err == nil || !strings.Contains(string(out), want) {
		t.Errorf("migrate of a paused VM: %v, %q; want %q", err, out, want)
	}
	run(t, vm.mon, "cont", nil)
	// Nobody listens: the migration fails at once and says why.
	run(t, vm.mon, "migrate", map[string]any{"uri": freeTCP(t)})
	deadline := time.Now().Add(10 * time.Second)
	for {
		info := run(t, vm.mon, "query-migrate", nil)
		if info["status"] == "failed" {
			if !strings.Contains(info["error-desc"].(string), "connect") {
				t.Errorf("error-desc: %v", info["error-desc"])
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("query-migrate: %v", info)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if st := status(t, vm); st != "running" {
		t.Errorf("after a failed migration: %s", st)
	}
}

// TestMigrateAutoOwn (issue 14): --mode auto on pagecast's own monitor.
// vm run watches its guest when migrate comes, predicts every mode (its
// destination takes post-copy too), runs the best for --prefer, and
// query-migrate reports the choice, which migrate prints before the
// progress and holds against the outcome after.
// TestMigrateAutoDestinationGone: a destination that listened when auto
// checked and is gone when it connects is said to be gone, and with
// --dest-qmp given, not told to give it (walk 130: it was, for a
// destination killed during the watch); the guest runs on at the source.
func TestMigrateAutoDestinationGone(t *testing.T) {
	src := startVMRunProc(t, "--memory", "32M", "--workload", "hotset")
	for _, destQMP := range []bool{false, true} {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go func() { // takes auto's probe, then stops listening
			if c, err := l.Accept(); err == nil {
				c.Close()
			}
			l.Close()
		}()
		args := []string{"migrate", "--qmp", "unix:" + src.sock, "--to", "tcp:" + l.Addr().String(), "--mode", "auto", "--observe", "2", "--bandwidth", "32MiB/s"}
		if destQMP {
			// A monitor that answers (migrate takes pagecast's
			// destination's for the guest's pause).
			sock := filepath.Join(t.TempDir(), "dst.sock")
			testutil.ServeFakeQMP(t, sock, func(string, int) string { return `{"return":{}}` })
			args = append(args, "--dest-qmp", "unix:"+sock)
		}
		out, err := exec.Command(binary, args...).CombinedOutput()
		gone := strings.Contains(string(out), "and is gone: the destination exited or stopped listening")
		advised := strings.Contains(string(out), "give --dest-qmp")
		if err == nil || !gone || advised == destQMP {
			t.Errorf("--dest-qmp given %v: %v, said gone %v, advised --dest-qmp %v:\n%s", destQMP, err, gone, advised, out)
		}
		l.Close()
	}
	if st := status(t, src); st != "running" {
		t.Errorf("source after the failed migrations: %s, want running", st)
	}
}

func TestMigrateAutoOwn(t *testing.T) {
	uri := freeTCP(t)
	src := startVMRunProc(t, "--memory", "64M", "--workload", "hotset:hot=2048,p=0.95")
	startVMRunProc(t, "--memory", "64M", "--incoming", uri)
	out, err := exec.Command(binary, "migrate", "--qmp", "unix:"+src.sock, "--to", uri,
		"--mode", "auto", "--prefer", "bytes", "--observe", "15", "--bandwidth", "32MiB/s").CombinedOutput()
	t.Logf("\n%s", out)
	if err != nil {
		t.Fatalf("pagecast migrate: %v", err)
	}
	text := string(out)
	for _, want := range []string{"the VM watches its guest for 1.5s", "auto chose ", "(prefer bytes)", "status           completed", "verified         true",
		"predicted against outcome: total time "} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	// Every mode was weighed, tsmc and post-copy among them, and the one
	// run is the one chosen.
	for _, mode := range []string{"precopy", "predictive+tsmc", "predictive+postcopy"} {
		if !containsRow(text, mode) {
			t.Errorf("no prediction for %s", mode)
		}
	}
	var chose string
	if i := strings.Index(text, "auto chose "); i >= 0 {
		fmt.Sscanf(text[i+len("auto chose "):], "%s", &chose)
	}
	if chose == "" || !strings.Contains(text, "mode             "+chose+"\n") {
		t.Errorf("auto chose %q, another mode ran", chose)
	}
	// Measured +4% on an idle machine (2026-12-01); +33% to +68% in six
	// runs on 2026-12-03's machine (kvm-pvm) while the simulation charged
	// MECOM's coding before the link's time, where the live Limiter's
	// bucket fills while a batch is coded; -2% to +2% with the two in
	// tandem (docs/simulation.md). Held to a factor of three here, as
	// TestMigrateAuto is, for the suite's load on two cores.
	predicted, actual := predictedTotalTime(text)
	if predicted <= 0 || actual <= 0 || predicted > 3*actual || actual > 3*predicted {
		t.Errorf("predicted total time %v against %v taken", predicted, actual)
	}
}

// TestDowntimeString: a completed migration's downtime of 0 (query-migrate
// counts whole milliseconds) reads as under a millisecond, not as none.
func TestDowntimeString(t *testing.T) {
	for _, tc := range []struct {
		info migrator.Info
		want string
	}{
		{migrator.Info{Status: migrator.StatusCompleted, Downtime: 0}, "<1ms"},
		{migrator.Info{Status: migrator.StatusCompleted, Downtime: 253}, "253ms"},
		{migrator.Info{Status: migrator.StatusFailed, Downtime: 0}, "0s"},
	} {
		if got := downtimeString(tc.info); got != tc.want {
			t.Errorf("downtime of %+v: %q, want %q", tc.info, got, tc.want)
		}
	}
}

// TestLocalDestination: auto measures the page rate only where the
// destination is this host.
func TestLocalDestination(t *testing.T) {
	for uri, want := range map[string]bool{
		"tcp:127.0.0.1:4444": true,
		"tcp:localhost:4444": true,
		"tcp:[::1]:4444":     true,
		"tcp:0.0.0.0:4444":   true,
		"tcp::4444":          true,  // QEMU's form (review 88)
		"tcp:192.0.2.7:4444": false, // TEST-NET-1: no host's
		"unix:/tmp/x.sock":   false,
		"tcp:127.0.0.1":      false,
	} {
		if got := localDestination(uri); got != want {
			t.Errorf("%s: local %v, want %v", uri, got, want)
		}
	}
}

// TestMigrateFlagErrors: what migrate is told is checked before it touches
// a VM (the source's socket here does not exist), each in one line that
// names the flag.
func TestMigrateFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"rate without a unit", []string{"--bandwidth", "32"}, "--bandwidth 32: at 32 B/s the link moves 10 B in the downtime limit of 300ms, less than one 4096-byte page, so no migration can meet it (a rate without a unit is in bytes a second"},
		{"zero rate", []string{"--bandwidth", "0"}, "--bandwidth 0: a migration needs a link that moves bytes (e.g. 1Gbit/s)"},
		{"zero rate with a unit", []string{"--bandwidth", "0MiB/s"}, "--bandwidth 0MiB/s: a migration needs a link that moves bytes"},
		{"rate too large", []string{"--bandwidth", "1e30"}, `--bandwidth: rate "1e30" is too large: the most taken is 9223372036854775807 bytes a second`},
		{"limit shorter than a page", []string{"--bandwidth", "1MiB/s", "--downtime-limit", "1ms"}, "--bandwidth, --downtime-limit: at 1.0 MiB/s the link moves 1.0 KiB in the downtime limit of 1ms"},
		{"unknown mode", []string{"--mode", "fast"}, `--mode: migration mode "fast": want precopy, predictive, throttle, tsmc or mecom`},
		{"auto prefers", []string{"--mode", "auto", "--prefer", "speed"}, `--prefer: prefer "speed": want time, bytes or downtime`},
		{"auto observes", []string{"--mode", "auto", "--observe", "0"}, "--observe 0: auto needs at least one epoch"},
		{"auto observes for ever", []string{"--mode", "auto", "--observe", "100000000"}, "--observe 100000000: auto watches at most 600 epochs of 100 ms (1m0s)"},
		{"zero downtime limit", []string{"--downtime-limit", "0s"}, "--downtime-limit 0s: want a positive duration"},
		{"downtime limit under a millisecond", []string{"--downtime-limit", "1us"}, "--downtime-limit 1µs: want 1ms to 2000s"},
		{"downtime limit past QEMU's bound", []string{"--downtime-limit", "10h"}, "--downtime-limit 10h0m0s: want 1ms to 2000s"},
		{"zero timeout", []string{"--timeout", "0s"}, "--timeout 0s: want a positive duration"},
		{"negative timeout", []string{"--timeout", "-2s"}, "--timeout -2s: want a positive duration"},
		{"zero progress timeout", []string{"--progress-timeout", "0s"}, "--progress-timeout 0s: want a positive duration"},
		{"negative round cap", []string{"--max-rounds", "-1"}, "--max-rounds -1: want 0 (no cap, QEMU's migration only) to 10000"},
		{"round cap past its bound", []string{"--max-rounds", "9223372036854775807"}, "--max-rounds 9223372036854775807: want 0 (no cap, QEMU's migration only) to 10000"},
		{"negative linger", []string{"--metrics-linger", "-5s"}, "--metrics-linger -5s: want 0 (stop serving at once) or more"},
		{"linger without metrics", []string{"--metrics-linger", "5s"}, "--metrics-linger is how long --metrics serves after the end: give --metrics too"},
		{"unknown engine", []string{"--engine", "foo"}, `--engine "foo": want auto, pagecast or qemu`},
		{"profile without predictive", []string{"--mode", "precopy", "--profile", "/etc/passwd"}, "--profile warms the predictor, which --mode precopy does not use"},
		{"stray argument", []string{"fast"}, `migrate takes no arguments (got "fast")`},
		{"prefer without auto", []string{"--prefer", "bytes"}, "--prefer is for --mode auto"},
		{"auto on QEMU's engine", []string{"--mode", "auto", "--engine", "qemu"}, "--engine qemu asks for QEMU's own migration: give one or the other"},
		{"auto to nobody", []string{"--mode", "auto", "--bandwidth", "32MiB/s"}, "--to tcp:127.0.0.1:1: dial tcp 127.0.0.1:1: connect: connection refused (nothing to migrate to: start the destination first)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"migrate", "--qmp", "unix:" + filepath.Join(t.TempDir(), "none.sock"), "--to", "tcp:127.0.0.1:1"}, tc.args...)
			out, err := exec.Command(binary, args...).CombinedOutput()
			msg := strings.TrimRight(string(out), "\n")
			if err == nil || strings.Contains(msg, "\n") || !strings.Contains(msg, tc.want) {
				t.Fatalf("exit %v, output %q: want one line containing %q", err, msg, tc.want)
			}
		})
	}
	// A damaged profile is said on the command line, not only in the VM's
	// log; one with nothing intact is refused.
	t.Run("profile damaged", func(t *testing.T) {
		dir := t.TempDir()
		profile := filepath.Join(dir, "vm.pct")
		var epochs []trace.Epoch
		for i := range 40 {
			e := trace.Epoch{Index: uint64(i)}
			for j := range 500 { // some 500 bytes an epoch
				e.Pages = append(e.Pages, uint64(i+13*j))
			}
			epochs = append(epochs, e)
		}
		if err := writeProfile(profile, epochs, 32<<20, 100*time.Millisecond, "test"); err != nil {
			t.Fatal(err)
		}
		raw, err := os.ReadFile(profile)
		if err != nil {
			t.Fatal(err)
		}
		migrate := func(path string) string {
			out, _ := exec.Command(binary, "migrate", "--qmp", "unix:"+filepath.Join(dir, "none.sock"), "--to", "tcp:127.0.0.1:1",
				"--mode", "predictive", "--profile", path).CombinedOutput()
			return string(out)
		}
		flipped := filepath.Join(dir, "flipped.pct")
		bad := append([]byte(nil), raw...)
		bad[len(bad)/2] ^= 0xff
		if err := os.WriteFile(flipped, bad, 0o644); err != nil {
			t.Fatal(err)
		}
		if out, want := migrate(flipped), "warning: --profile "+flipped+" is damaged: the predictor learns from its"; !strings.Contains(out, want) {
			t.Errorf("a profile with a flipped byte: %q lacks %q", out, want)
		}
		cut := filepath.Join(dir, "cut.pct")
		if err := os.WriteFile(cut, raw[:120], 0o644); err != nil { // the header and part of epoch 0
			t.Fatal(err)
		}
		if out, want := migrate(cut), "no intact epoch to learn from"; !strings.Contains(out, want) {
			t.Errorf("a profile cut to 120 bytes: %q lacks %q", out, want)
		}
	})
	// A profile in epochs the migration's are not a whole number of is
	// used as it is, and the user is told, not only the VM's log.
	t.Run("profile epochs", func(t *testing.T) {
		dir := t.TempDir()
		profile := filepath.Join(dir, "vm.pct")
		if err := writeProfile(profile, []trace.Epoch{{Index: 0, Pages: []uint64{1, 2}}}, 32<<20, 500*time.Millisecond, "test"); err != nil {
			t.Fatal(err)
		}
		out, _ := exec.Command(binary, "migrate", "--qmp", "unix:"+filepath.Join(dir, "none.sock"), "--to", "tcp:127.0.0.1:1",
			"--mode", "predictive", "--profile", profile).CombinedOutput()
		if want := "warning: --profile " + profile + " is in epochs of 500ms, the migration in 100ms: the profile's epochs are not the migration's"; !strings.Contains(string(out), want) {
			t.Errorf("output %q lacks %q", out, want)
		}
		// What the predictor learns from is said, and of what (walk 135:
		// a profile of another QEMU was taken without a word).
		if want := "pagecast: --profile " + profile + " of pagecast demo: the predictor learns first from its 1 epoch of 500ms"; !strings.Contains(string(out), want) {
			t.Errorf("output %q lacks %q", out, want)
		}
	})
}

// TestMigrateAutoInterrupted: Ctrl-C while pagecast's monitor watches its
// guest for mode auto stops the watch at once (it was acted on only once
// auto had chosen and the migration begun, using up the destination):
// nothing is migrated, the source runs on and the destination waits on.
func TestMigrateAutoInterrupted(t *testing.T) {
	uri := freeTCP(t)
	src := startVMRunProc(t, "--memory", "16M", "--workload", "zipf")
	dst := startVMRunProc(t, "--memory", "16M", "--incoming", uri)
	cmd := exec.Command(binary, "migrate", "--qmp", "unix:"+src.sock, "--to", uri, "--mode", "auto", "--bandwidth", "32MiB/s", "--observe", "600")
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(out.String(), "the VM watches its guest"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("auto did not start watching:\n%s", out.String())
		}
	}
	time.Sleep(300 * time.Millisecond)
	cmd.Process.Signal(os.Interrupt)
	switch exited, err := waitExit(cmd, 20*time.Second); { // the watch is 60 s
	case !exited:
		t.Fatalf("migrate did not stop on SIGINT while auto watched:\n%s", out.String())
	case err == nil || !strings.Contains(out.String(), "nothing was migrated, the guest runs on at the source"):
		t.Errorf("migrate interrupted while auto watched: %v\n%s", err, out.String())
	}
	if st := status(t, src); st != "running" {
		t.Errorf("source is %s", st)
	}
	if st := status(t, dst); st != "inmigrate" {
		t.Errorf("destination is %s, want still waiting (inmigrate)", st)
	}
}

// TestSummaryPostcopyNone: a QEMU post-copy migration that completed in
// pre-copy, before the switch, says so (the summary said nothing of
// post-copy, which read as if it had run).
func TestSummaryPostcopyNone(t *testing.T) {
	plan := &migrator.QEMUPlan{Mode: "tsmc", Capabilities: []string{migrator.CapPostcopyRAM}, Postcopy: true}
	var b bytes.Buffer
	writeSummary(&b, migrator.Info{Status: migrator.StatusCompleted, RAM: &migrator.RAMStats{}}, plan, -1, 0)
	if !regexp.MustCompile(`(?m)^post-copy +none: pre-copy completed before the switch to post-copy$`).Match(b.Bytes()) {
		t.Errorf("summary of a post-copy migration that never switched:\n%s", b.String())
	}
	// QEMU's migration checks nothing, and the summary says so (walk
	// 80), and why it matters where QEMU loses writes under TCG.
	if !regexp.MustCompile(`(?m)^verified +not checked: QEMU's own migration does not compare the memory \(pagecast's engine does\)$`).Match(b.Bytes()) {
		t.Errorf("summary of QEMU's migration without a word on its memory check:\n%s", b.String())
	}
	// Its dirty syncs are not pagecast's harvests (walk 121: 30 beside 8 rounds, unexplained).
	if !regexp.MustCompile(`(?m)^dirty syncs +0 \(QEMU's: about one a round\)$`).Match(b.Bytes()) {
		t.Errorf("summary of QEMU's migration: its dirty syncs unexplained:\n%s", b.String())
	}
	b.Reset()
	// What the migration moved a second, beside its bytes (walk 125:
	// worked out by hand to set beside the cap and auto's probe).
	writeSummary(&b, migrator.Info{Status: migrator.StatusCompleted, TotalTime: 2000, RAM: &migrator.RAMStats{Transferred: 64 << 20}}, plan, -1, 0)
	if !regexp.MustCompile(`(?m)^transferred +64\.0 MiB \(67108864 bytes, 32\.0 MiB/s over the total time\)$`).Match(b.Bytes()) {
		t.Errorf("summary without the rate moved:\n%s", b.String())
	}
	b.Reset()
	lossy := *plan
	lossy.LosesWrites = true
	writeSummary(&b, migrator.Info{Status: migrator.StatusCompleted, RAM: &migrator.RAMStats{}}, &lossy, -1, 0)
	if !strings.Contains(b.String(), "; and this QEMU's migration loses some writes of a guest under TCG (the warning on stderr)") {
		t.Errorf("summary of QEMU's migration that loses writes:\n%s", b.String())
	}
	b.Reset()
	writeSummary(&b, migrator.Info{Status: migrator.StatusCompleted, RAM: &migrator.RAMStats{PostcopyBytes: 1 << 20, PostcopyRequests: 3}}, plan, -1, 0)
	if !strings.Contains(b.String(), "1.0 MiB sent, 3 pages pulled by the destination") || strings.Contains(b.String(), "none:") {
		t.Errorf("summary of a post-copy migration:\n%s", b.String())
	}
}

// TestSummaryOverLimit: a pause past the downtime limit is said on the
// lines that give it (a walk saw 394 ms under "stopped because … fit the
// downtime limit", nothing saying the limit was broken); one within it is
// left as it is.
func TestSummaryOverLimit(t *testing.T) {
	info := migrator.Info{Status: migrator.StatusCompleted, Downtime: 394, RAM: &migrator.RAMStats{}}
	var b bytes.Buffer
	info.Pagecast = &migrator.Extra{Round: 31, RoundPages: []uint64{16384, 4661}, StopReason: "round cap 30 reached with 4096 bytes pending"}
	writeSummary(&b, info, nil, 398*time.Millisecond, 300*time.Millisecond)
	info.Pagecast = nil
	for _, want := range []string{"394ms (over the 300ms limit by 94ms)", "RESUME) (over the 300ms limit by 98ms)",
		"rounds           31: 30 with the guest running, then the switch-over (pages per round [16384 4661])"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("summary of a pause over the limit lacks %q:\n%s", want, b.String())
		}
	}
	// --json has no summary: stderr says it (walk 79).
	b.Reset()
	sayOverLimit(&b, info, 398*time.Millisecond, 300*time.Millisecond)
	if b.String() != "pagecast: the migration completed over its downtime limit: the guest was paused for 398ms, 98ms over the 300ms limit\n" {
		t.Errorf("--json's note of a pause over the limit: %q", b.String())
	}
	b.Reset()
	info.TotalTime = 2000
	sayOverLimit(&b, info, -1, 300*time.Millisecond)
	if !strings.Contains(b.String(), "its downtime was 394ms, 94ms over") {
		t.Errorf("--json's note of a downtime over the limit, the pause unknown: %q", b.String())
	}
	// The guest's pause where it was measured, not the engine's count
	// (review 81: "paused for 400ms" of a guest paused 250).
	b.Reset()
	sayOverLimit(&b, migrator.Info{Status: migrator.StatusCompleted, Downtime: 400, TotalTime: 2000}, 250*time.Millisecond, 300*time.Millisecond)
	if b.Len() != 0 {
		t.Errorf("--json's note of a pause within the limit, the downtime over it: %q", b.String())
	}
	// Nor a QEMU downtime longer than the whole migration, warned of.
	sayOverLimit(&b, migrator.Info{Status: migrator.StatusCompleted, Downtime: 5000, TotalTime: 1000}, -1, 300*time.Millisecond)
	if b.Len() != 0 {
		t.Errorf("--json's note of an impossible downtime: %q", b.String())
	}
	b.Reset()
	info.Downtime = 217
	writeSummary(&b, info, nil, 217*time.Millisecond, 300*time.Millisecond)
	sayOverLimit(&b, info, 217*time.Millisecond, 300*time.Millisecond)
	if strings.Contains(b.String(), "over the") || strings.Contains(b.String(), "over its") {
		t.Errorf("summary of a pause within the limit:\n%s", b.String())
	}
}

// TestDestQMPIsSource: --dest-qmp naming the source's own socket is said
// at once (it waited 5 s for a greeting the busy socket never sent, and
// hinted at another client).
func TestDestQMPIsSource(t *testing.T) {
	sock := "unix:" + filepath.Join(t.TempDir(), "src.sock")
	_, _, err := runApp(t, "migrate", "--qmp", sock, "--dest-qmp", sock, "--to", "tcp:127.0.0.1:1")
	if err == nil || !strings.Contains(err.Error(), "--dest-qmp "+sock+" is --qmp's socket, the source's: give the destination's") {
		t.Errorf("--dest-qmp the same as --qmp: %v", err)
	}
}

// TestCommitRepeatedCLI: a link that breaks as the source commits (a
// proxy swallows the commit and hangs up) is recovered through vm run
// --incoming as through the migrator's own receiver: the source connects
// again, and the destination, busy with that migration and refusing any
// other, lets its source through to repeat the commit.
func TestCommitRepeatedCLI(t *testing.T) {
	uri := freeTCP(t)
	src := startVMRunProc(t, "--memory", "32M", "--workload", "hotset")
	dst := startVMRunProc(t, "--memory", "32M", "--incoming", uri)
	out, err := exec.Command(binary, "migrate", "--qmp", "unix:"+src.sock, "--to", commitDroppingProxy(t, uri),
		"--bandwidth", "64MiB/s").CombinedOutput()
	if err != nil {
		t.Fatalf("migrate through a link that broke at the commit: %v\n%s", err, out)
	}
	for _, want := range []string{"verified         true", "the link broke after the commit, which was repeated on a new connection"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
	if st := status(t, dst); st != "running" {
		t.Errorf("destination after the repeated commit: %s", st)
	}
}

// commitDroppingProxy forwards connections to the migration URI to, and
// on the first, once the destination's verdict has passed, swallows what
// the source sends next (its commit) and hangs up on both ends. It
// returns its own URI.
func commitDroppingProxy(t *testing.T, to string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	addr := strings.TrimPrefix(to, "tcp:")
	var dropped atomic.Bool
	go func() {
		for {
			a, err := l.Accept()
			if err != nil {
				return
			}
			b, err := net.Dial("tcp", addr)
			if err != nil {
				a.Close()
				continue
			}
			t.Cleanup(func() { a.Close(); b.Close() })
			var verdict atomic.Bool
			hangUp := func() { a.Close(); b.Close() }
			go pipe(b, a, hangUp, func([]byte) bool { // source → destination
				return verdict.Load() && dropped.CompareAndSwap(false, true)
			})
			go pipe(a, b, hangUp, func(chunk []byte) bool { // destination → source
				if !dropped.Load() {
					r := migrator.NewReader(bytes.NewReader(chunk))
					for rec, rerr := r.Next(); rerr == nil; rec, rerr = r.Next() {
						if rec.Type == migrator.RecVerified {
							verdict.Store(true)
						}
					}
				}
				return false
			})
		}
	}()
	return "tcp:" + l.Addr().String()
}

// pipe copies src to dst chunk by chunk until either end fails or cut
// says to cut before a chunk, and then calls hangUp.
func pipe(dst, src net.Conn, hangUp func(), cut func(chunk []byte) bool) {
	defer hangUp()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && cut(buf[:n]) {
			return
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// TestContDuringStage3: cont on a source whose guest an outgoing
// migration holds paused (tsmc's stage 3, the destination running the
// guest) is refused: it ran the guest in both places, and the migration
// said verified (found by a review walk). Once the migration has ended the
// source is postmigrate.
func TestContDuringStage3(t *testing.T) {
	uri := freeTCP(t)
	src := startVMRunProc(t, "--memory", "32M", "--workload", "hotset")
	startVMRunProc(t, "--memory", "32M", "--incoming", uri)
	cmd := exec.Command(binary, "migrate", "--qmp", "unix:"+src.sock, "--to", uri, "--mode", "tsmc", "--bandwidth", "4MiB/s", "--quiet")
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// The user's own stop and cont in stage 1 are the user's (the guard
	// refused them: walk 45).
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if st, _ := run(t, src.mon, "query-migrate", nil)["status"].(string); st == "active" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no stage 1 within 10 s:\n%s", out.String())
		}
	}
	run(t, src.mon, "stop", nil)
	if _, err := runErr(src.mon, "cont", nil); err != nil {
		t.Errorf("cont after the user's own stop in stage 1: %v", err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if st, _ := run(t, src.mon, "query-migrate", nil)["status"].(string); strings.HasPrefix(st, "postcopy") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no post-copy within 30 s:\n%s", out.String())
		}
	}
	if _, err := runErr(src.mon, "cont", nil); err == nil || !strings.Contains(err.Error(), "paused by an outgoing migration") {
		t.Errorf("cont in tsmc's stage 3: %v, want it refused", err)
	}
	if st := status(t, src); st != "paused" {
		t.Errorf("source is %s in stage 3 after a cont", st)
	}
	if err := cmd.Wait(); err != nil || !strings.Contains(out.String(), "verified         true") {
		t.Fatalf("the migration: %v\n%s", err, out.String())
	}
	if st := status(t, src); st != "postmigrate" {
		t.Errorf("source is %s after the migration, want postmigrate", st)
	}
}

// TestStopDuringMigration: vm run stopped (SIGTERM) while its guest
// migrates out cancels the migration and waits for it before it frees the
// guest's memory; it freed it under the migration, which read on and
// crashed the process (SIGSEGV, 2 runs of 4; found by a review walk).
func TestStopDuringMigration(t *testing.T) {
	uri := freeTCP(t)
	src := startVMRunProc(t, "--memory", "64M", "--workload", "hotset")
	dst := startVMRunProc(t, "--memory", "64M", "--incoming", uri)
	cmd := exec.Command(binary, "migrate", "--qmp", "unix:"+src.sock, "--to", uri, "--bandwidth", "16MiB/s", "--quiet")
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // in round 1: 64 MiB at 16 MiB/s
	src.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-src.done:
		if err != nil {
			t.Errorf("vm run stopped mid-migration: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("vm run did not stop within 30 s of SIGTERM mid-migration")
	}
	for _, bad := range []string{"fatal error", "SIGSEGV", "panic"} {
		if strings.Contains(src.stderr.String(), bad) {
			t.Errorf("vm run's stderr has %q:\n%s", bad, src.stderr.String())
		}
	}
	if !strings.Contains(src.stderr.String(), "the outgoing migration is cancelled") {
		t.Errorf("vm run did not say it stopped the migration:\n%s", src.stderr.String())
	}
	if err := cmd.Wait(); err == nil {
		t.Errorf("migrate succeeded though its source stopped:\n%s", out.String())
	}
	// The destination is told of the cancel.
	select {
	case <-dst.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the destination did not end its incoming migration")
	}
	if !strings.Contains(dst.stderr.String(), "the source aborted the migration: cancelled on the source") {
		t.Errorf("the destination was not told of the cancel:\n%s", dst.stderr.String())
	}
}

// TestMigrateParametersReset: each pagecast migrate on pagecast's own
// monitor migrates with its own flags: a link cap or a profile an earlier
// migrate set is not left on the next, which kept it (a later migrate
// without --bandwidth ran at an earlier one's 4 MiB/s for 3.5 minutes;
// found by a new-user walk).
func TestMigrateParametersReset(t *testing.T) {
	src := startVMRunProc(t, "--memory", "32M", "--workload", "idle")
	other := importTrace(t) // of a 256 MiB VM
	_, _, err := runApp(t, "migrate", "--qmp", "unix:"+src.sock, "--to", freeTCP(t), "--mode", "predictive", "--bandwidth", "4MiB/s", "--profile", other, "--quiet")
	if err == nil {
		t.Fatal("migrate with another VM's profile succeeded")
	}
	_, _, err = runApp(t, "migrate", "--qmp", "unix:"+src.sock, "--to", freeTCP(t), "--mode", "predictive", "--quiet")
	if err == nil || strings.Contains(err.Error(), other) {
		t.Fatalf("the second migrate, without --profile: %v", err)
	}
	params := run(t, src.mon, "query-migrate-parameters", nil)
	if params["max-bandwidth"] != 0.0 || params["x-pagecast-profile"] != "" {
		t.Errorf("parameters after a migrate without --bandwidth or --profile: %v", params)
	}
}

// TestSecondMigrateKeepsCap: a second migrate of a VM that is migrating
// is refused before it sets anything: it set the running migration's cap
// to its own (none), and a 2 MiB/s migration went on uncapped (found by a
// review walk).
func TestSecondMigrateKeepsCap(t *testing.T) {
	uri := freeTCP(t)
	src := startVMRunProc(t, "--memory", "32M", "--workload", "idle")
	startVMRunProc(t, "--memory", "32M", "--incoming", uri)
	cmd := exec.Command(binary, "migrate", "--qmp", "unix:"+src.sock, "--to", uri, "--bandwidth", "2MiB/s", "--quiet")
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if st, _ := run(t, src.mon, "query-migrate", nil)["status"].(string); st == "active" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no migration within 10 s:\n%s", out.String())
		}
	}
	_, _, err := runApp(t, "migrate", "--qmp", "unix:"+src.sock, "--to", freeTCP(t), "--quiet")
	if err == nil || !strings.Contains(err.Error(), "migrating already") {
		t.Errorf("a second migrate: %v", err)
	}
	x, _ := run(t, src.mon, "query-migrate", nil)["x-pagecast"].(map[string]any)
	if bw, _ := x["bandwidth"].(float64); bw != 2<<20 {
		t.Errorf("the running migration's cap after a second migrate: %v, want 2 MiB/s", x["bandwidth"])
	}
}

// TestReadableBytes: the summary's stop reason gives its byte counts in
// binary units.
func TestReadableBytes(t *testing.T) {
	for in, want := range map[string]string{
		"round cap 8 reached with 9048064 bytes pending":                                   "round cap 8 reached with 8.6 MiB pending",
		"20955136 bytes pending (about 6802884 coded: 32% of their size) fit the downtime": "20.0 MiB pending (about 6.5 MiB coded: 32% of their size) fit the downtime",
		"0 bytes pending fit the downtime limit at the end of round 1":                     "0 bytes pending fit the downtime limit at the end of round 1",
	} {
		if got := readableBytes(in); got != want {
			t.Errorf("readableBytes(%q) = %q, want %q", in, got, want)
		}
	}
}

// cpusMon answers query-cpus-fast with its vCPU threads.
type cpusMon []int

func (m cpusMon) Run(cmd []byte) ([]byte, error) {
	if !strings.Contains(string(cmd), "query-cpus-fast") {
		return nil, fmt.Errorf("unexpected %s", cmd)
	}
	var cpus []map[string]any
	for i, tid := range m {
		cpus = append(cpus, map[string]any{"cpu-index": i, "thread-id": tid})
	}
	return json.Marshal(map[string]any{"return": cpus})
}

// TestSameQEMU: two QMP sockets of one QEMU (its vCPU threads in common)
// are told from two QEMUs' (a --dest-qmp naming the source's own QEMU had
// post-copy set on the source alone, and the real destination died).
func TestSameQEMU(t *testing.T) {
	if !sameQEMU(cpusMon{101, 102}, cpusMon{102}) {
		t.Error("two sockets of one QEMU taken for two QEMUs")
	}
	if sameQEMU(cpusMon{101}, cpusMon{201}) {
		t.Error("two QEMUs taken for one")
	}
	if sameQEMU(cpusMon{}, cpusMon{}) {
		t.Error("QEMUs naming no vCPU thread taken for one")
	}
}

// TestTimeoutSparesPostcopy: --timeout reached in post-copy, or after
// pagecast's monitor committed the switch-over (its downtime set), does
// not cancel (the guest runs on the destination) and says so once;
// reached before, the next reply cancels; reached as the migration
// completes, it does not; where no reply comes, the wait ends by itself
// (review 87: a silent source held migrate for good).
func TestTimeoutSparesPostcopy(t *testing.T) {
	reply := func(status string) migrator.Info { return migrator.Info{Status: status} }
	for _, late := range []struct {
		name string
		i    migrator.Info
		says string
	}{
		{"post-copy", reply(migrator.StatusPostcopy), "--timeout reached in post-copy"},
		{"committed", migrator.Info{Status: migrator.StatusDevice, Downtime: 40}, "--timeout reached after the switch-over"},
	} {
		var w bytes.Buffer
		ctx, in := watchInterrupts(context.Background(), &w)
		defer in.stop()
		in.expire("--timeout", timedOut(time.Second))
		in.check(late.i)
		in.check(late.i)
		if ctx.Err() != nil || in.expired() != nil {
			t.Errorf("%s: --timeout cancelled the migration", late.name)
		}
		if n := strings.Count(w.String(), late.says); n != 1 {
			t.Errorf("%s: said %d times: %q", late.name, n, w.String())
		}
		in.check(reply(migrator.StatusCompleted))
		if ctx.Err() != nil {
			t.Errorf("%s: cancelled after it completed", late.name)
		}
	}

	var w bytes.Buffer
	ctx, in := watchInterrupts(context.Background(), &w)
	defer in.stop()
	in.expire("--timeout", timedOut(time.Second))
	in.check(reply(migrator.StatusCompleted))
	if ctx.Err() != nil || in.expired() != nil {
		t.Error("--timeout at the reply saying completed cancelled")
	}

	ctx, in = watchInterrupts(context.Background(), &w)
	defer in.stop()
	in.check(reply(migrator.StatusActive))
	if ctx.Err() != nil {
		t.Error("cancelled before --timeout was reached")
	}
	in.expire("--timeout", timedOut(time.Second))
	in.check(reply(migrator.StatusActive))
	if ctx.Err() == nil || in.expired() == nil {
		t.Error("--timeout reached in pre-copy did not cancel at the next reply")
	}

	// An interrupt cancelled first: a timeout reached while that cancel
	// settles is not its cause (review 90: counted a timeout, failed).
	ctx, in = watchInterrupts(context.Background(), &w)
	defer in.stop()
	in.pending++
	in.check(reply(migrator.StatusActive))
	in.expire("--timeout", timedOut(time.Second))
	time.Sleep(checkWait + 500*time.Millisecond)
	if ctx.Err() == nil || in.expired() != nil {
		t.Errorf("an interrupt's cancel, then --timeout reached: cancelled %v, said to be the timeout's %v; want cancelled, not the timeout's", ctx.Err() != nil, in.expired() != nil)
	}

	// A mode that allows post-copy (QEMU's): --timeout in pre-copy
	// switches to post-copy, as KubeVirt's completion timeout does with
	// allowPostCopy, not cancels; in setup it still cancels, and
	// --progress-timeout, a stall, always does.
	for _, c := range []struct {
		flag, status string
		switches     bool
	}{
		{"--timeout", migrator.StatusActive, true},
		{"--timeout", migrator.StatusSetup, false},
		{"--progress-timeout", migrator.StatusActive, false},
	} {
		w.Reset()
		ctx, in = watchInterrupts(context.Background(), &w)
		defer in.stop()
		var why []string
		in.postcopy = func(s string) bool { why = append(why, s); return true }
		in.expire(c.flag, timedOut(time.Second))
		in.check(reply(c.status))
		in.check(reply(c.status))
		switched := len(why) == 1 && strings.Contains(why[0], "--timeout 1s reached before the migration completed in pre-copy: switched, not cancelled")
		if cancelled := ctx.Err() != nil; switched != c.switches || cancelled == c.switches || len(why) > 1 {
			t.Errorf("%s reached in %s in a post-copy mode: switched %v (%q), cancelled %v; want switched %v", c.flag, c.status, switched, why, cancelled, c.switches)
		}
		if c.switches && !strings.Contains(w.String(), "starting post-copy (migrate-start-postcopy)") {
			t.Errorf("the switch is not said: %q", w.String())
		}
	}

	ctx, in = watchInterrupts(context.Background(), &w)
	defer in.stop()
	in.expire("--timeout", timedOut(time.Second)) // and no reply comes
	select {
	case <-ctx.Done():
		if in.expired() == nil {
			t.Error("ended by itself, but not said to be the timeout's")
		}
	case <-time.After(checkWait + 3*time.Second):
		t.Errorf("--timeout reached and no reply for %v: the wait goes on", checkWait+3*time.Second)
	}
}

// TestQEMUMigrationTableOver: the demo's table marks a migration whose
// guest paused longer than the downtime limit, or, its pause not known,
// whose downtime was, and says what the mark means (walk 86: 401 ms
// went unmarked where migrate says it went over).
func TestQEMUMigrationTableOver(t *testing.T) {
	row := func(mode string, paused time.Duration, downtime int64) qemuMigration {
		return qemuMigration{mode: mode, engine: engineQEMU, paused: paused,
			info: migrator.Info{Downtime: downtime, RAM: &migrator.RAMStats{DirtySyncCount: 3}}}
	}
	var w bytes.Buffer
	writeQEMUMigrationTable(&w, []qemuMigration{
		row("precopy", 401*time.Millisecond, 241), row("mecom", 120*time.Millisecond, 110), row("throttle", -1, 350)})
	out := w.String()
	for _, tc := range []struct {
		label string
		over  bool
	}{{"QEMU precopy", true}, {"QEMU mecom", false}, {"QEMU throttle", true}} {
		line := regexp.MustCompile(`(?m)^\s*` + regexp.QuoteMeta(tc.label) + `\s.*$`).FindString(out)
		if strings.HasSuffix(strings.TrimSpace(line), "(over)") != tc.over {
			t.Errorf("%s: over %v wanted, line %q", tc.label, tc.over, line)
		}
	}
	if !strings.Contains(out, "(over: the guest paused longer than the 300ms downtime limit") {
		t.Errorf("the mark is not explained:\n%s", out)
	}
}

// TestWaitsForMigration: a QEMU listening on --to's port is taken for a
// migration's -incoming only where its command line has one that may be
// on that port (review 88: a QEMU's serial port was taken for it; walk
// 114: the hostfwd port of a QEMU started with -incoming defer, a VM
// migrated in, was taken for its migration listener, and QEMU's migration
// went there).
func TestWaitsForMigration(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want bool
	}{
		{[]string{"qemu-system-x86_64", "-m", "64", "-incoming", "tcp:127.0.0.1:4444"}, true},
		{[]string{"qemu-system-x86_64", "-m", "64", "-incoming", "tcp:127.0.0.1:4444,ipv4=on"}, true},
		{[]string{"qemu-system-x86_64", "-incoming", "tcp:127.0.0.1:5555", "-netdev", "user,id=n,hostfwd=tcp::4444-:22"}, false},
		{[]string{"qemu-system-x86_64", "-incoming", "defer"}, true}, // libvirt's: migrate-incoming says where
		{[]string{"qemu-system-x86_64", "--incoming=tcp::4444"}, true},
		{[]string{"qemu-system-x86_64", "-incoming", "unix:/run/m.sock", "-serial", "tcp:127.0.0.1:4444,server=on"}, false},
		{[]string{"qemu-system-x86_64", "-serial", "tcp:127.0.0.1:4444,server=on"}, false},
		{[]string{"qemu-system-x86_64", "-netdev", "user,id=n,hostfwd=tcp::4444-:22"}, false},
		{[]string{"qemu-system-x86_64", "-incoming", "defer", "-netdev", "user,id=n,hostfwd=tcp:127.0.0.1:4444-:80"}, false},
		{[]string{"qemu-system-x86_64", "-incoming", "defer", "-netdev", "user,id=n,hostfwd=tcp:127.0.0.1:14444-:80"}, true},
		{[]string{"qemu-system-x86_64", "-incoming", "defer", "-qmp", "tcp:127.0.0.1:4444,server=on,wait=off"}, false},
		{[]string{"qemu-system-x86_64", "-incoming", "defer", "-chardev", "socket,id=s,host=127.0.0.1,port=4444,server=on"}, false},
		{[]string{"qemu-system-x86_64", "-incoming", "defer", "-vnc", "127.0.0.1:0"}, true},
		// Review 115's forms: the host side of a hostfwd only, its
		// protocol left out; telnet, listen=, JSON, gdb, VNC by -display.
		{[]string{"qemu-system-x86_64", "-incoming", "defer", "-netdev", "user,id=n,hostfwd=tcp::2222-:4444"}, true},
		{[]string{"qemu-system-x86_64", "-incoming", "defer", "-netdev", "user,id=n,hostfwd=::4444-:22"}, false},
		{[]string{"qemu-system-x86_64", "-incoming", "defer", "-netdev", "user,id=n,guestfwd=tcp:10.0.2.100:4444-cmd:true"}, true},
		{[]string{"qemu-system-x86_64", "-incoming", "defer", "-serial", "telnet::4444,server=on,wait=off"}, false},
		{[]string{"qemu-system-x86_64", "-incoming", "defer", "-netdev", "socket,id=s,listen=:4444"}, false},
		{[]string{"qemu-system-x86_64", "-incoming", "defer", "-chardev", `{"backend":"socket","id":"c","addr":{"type":"inet","host":"127.0.0.1","port":"4444"},"server":true}`}, false},
		{[]string{"qemu-system-x86_64", "-incoming", "defer", "-chardev", "socket,id=s,host=127.0.0.1,port=14444,server=on"}, true},
		{[]string{"qemu-system-x86_64", "-incoming", "defer", "-display", "vnc=[::1]:1"}, true},
	} {
		if got := waitsForMigration(tc.args, "4444"); got != tc.want {
			t.Errorf("%q: %v, want %v", tc.args, got, tc.want)
		}
	}
	if !waitsForMigration([]string{"qemu-system-x86_64", "-incoming", "defer", "-vnc", ":1"}, "5900") ||
		waitsForMigration([]string{"qemu-system-x86_64", "-incoming", "defer", "-vnc", ":1"}, "5901") ||
		waitsForMigration([]string{"qemu-system-x86_64", "-incoming", "defer", "-display", "vnc=[::1]:1"}, "5901") {
		t.Error("a VNC display's port, 5900 + its number, is not told from a migration listener")
	}
	if waitsForMigration([]string{"qemu-system-x86_64", "-incoming", "defer", "-s"}, "1234") {
		t.Error("gdb's -s port is taken for a migration listener")
	}
}

// TestProgressWatch: a migration is stuck once the data left to send has
// not fallen from one reply to the next for the watch's time, as
// KubeVirt's progressTimeout judges it; a pre-copy whose passes fall and
// rise again, converging or not, is not (review 91: held to its lowest so
// far, a converging QEMU migration was cancelled in its second pass);
// setup and post-copy do not count.
func TestProgressWatch(t *testing.T) {
	at := time.Unix(0, 0)
	left := func(status string, b uint64) migrator.Info {
		return migrator.Info{Status: status, RAM: &migrator.RAMStats{Remaining: b}}
	}
	w := progressWatch{d: 4 * time.Second}
	steps := []struct {
		after time.Duration
		i     migrator.Info
		stuck bool
	}{
		{0, migrator.Info{Status: migrator.StatusSetup}, false},
		{20 * time.Second, left(migrator.StatusActive, 100), false}, // setup's time does not count
	}
	// QEMU's sawtooth: each pass falls to the threshold, the next sync
	// raises it, 32, 16, 8 and 4 units a pass, 6 s a pass: its lowest
	// so far is beaten only near each pass's end, over 4 s apart.
	for _, pass := range []uint64{32, 16, 8, 4} {
		for k := uint64(0); k < 6; k++ {
			steps = append(steps, struct {
				after time.Duration
				i     migrator.Info
				stuck bool
			}{time.Second, left(migrator.StatusActive, 2+pass-pass*k/6), false})
		}
	}
	steps = append(steps, []struct {
		after time.Duration
		i     migrator.Info
		stuck bool
	}{
		{2 * time.Second, left(migrator.StatusActive, 3), false}, // stalled: 2 s
		{time.Second, left(migrator.StatusActive, 3), false},     // 3 s
		{2 * time.Second, left(migrator.StatusActive, 4), true},  // 5 s without a fall
		{0, left(migrator.StatusPostcopy, 4), false},             // post-copy is not cancelled
		{time.Second, left(migrator.StatusActive, 2), false},     // it fell again
		{3 * time.Second, left(migrator.StatusActive, 2), false},
		// Nothing left counts as progress, as KubeVirt's does: QEMU
		// stays active at 0 while it sends what is not RAM (review 92).
		{time.Second, left(migrator.StatusActive, 0), false},
		{5 * time.Second, left(migrator.StatusActive, 0), false},
		{5 * time.Second, left(migrator.StatusActive, 0), false},
	}...)
	for _, step := range steps {
		at = at.Add(step.after)
		var b uint64
		if step.i.RAM != nil {
			b = step.i.RAM.Remaining
		}
		if got := w.stuck(step.i, at); got != step.stuck {
			t.Errorf("at %v, %s with %d left: stuck %v, want %v", at.Sub(time.Unix(0, 0)), step.i.Status, b, got, step.stuck)
		}
	}
	if off := (progressWatch{}); off.stuck(left(migrator.StatusActive, 1), at) {
		t.Error("a watch of no time is stuck")
	}
}

// TestContAfterMigratedAway: QMP cont of a source whose guest migrated
// away (postmigrate) is refused, saying where it runs, where QEMU's cont
// takes it back and a walk's guest ran on both hosts (walk 154); cont with
// x-pagecast-force true runs this copy, for a destination known gone.
// pagecast migrate puts back the parameters a QMP client had set.
func TestContAfterMigratedAway(t *testing.T) {
	uri := freeTCP(t)
	src := startVMRunProc(t, "--memory", "16M")
	startVMRunProc(t, "--memory", "16M", "--incoming", uri)
	// What a QMP client set is the VM's again once pagecast migrate,
	// which sets its own, has ended (walk 154: left as migrate's).
	set := map[string]any{"x-pagecast-mode": "auto", "max-bandwidth": 33554432, "downtime-limit": 500}
	run(t, src.mon, "migrate-set-parameters", set)
	if out, err := exec.Command(binary, "--log-level", "warn", "migrate", "--qmp", "unix:"+src.sock, "--to", uri, "--mode", "precopy", "--bandwidth", "64MiB/s", "--quiet").CombinedOutput(); err != nil {
		t.Fatalf("migrate: %v\n%s", err, out)
	}
	p := run(t, src.mon, "query-migrate-parameters", nil)
	if p["x-pagecast-mode"] != "auto" || p["max-bandwidth"] != 33554432.0 || p["downtime-limit"] != 500.0 {
		t.Errorf("the VM's migration parameters after pagecast migrate: %v, want those set before it (%v)", p, set)
	}
	if st := status(t, src); st != "postmigrate" {
		t.Fatalf("source after the migration: %s, want postmigrate", st)
	}
	_, err := runErr(src.mon, "cont", nil)
	if err == nil || !strings.Contains(err.Error(), "the guest migrated to "+uri+" (completed, verified true): it runs there, and cont here would run it twice") {
		t.Fatalf("cont of a guest that migrated away: %v, want refused", err)
	}
	if st := status(t, src); st != "postmigrate" {
		t.Errorf("source after a refused cont: %s, want postmigrate", st)
	}
	run(t, src.mon, "cont", map[string]any{"x-pagecast-force": true})
	if st := status(t, src); st != "running" {
		t.Errorf("source after cont with x-pagecast-force: %s, want running", st)
	}
}
