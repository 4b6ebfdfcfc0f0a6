package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pagecast/pagecast/guest"
	"github.com/pagecast/pagecast/internal/proc"
	"github.com/pagecast/pagecast/internal/testutil"
	"github.com/pagecast/pagecast/migrator"
	"github.com/pagecast/pagecast/qemu"
	"github.com/pagecast/pagecast/qemuguest"
	"github.com/pagecast/pagecast/qmpclient"
	"github.com/pagecast/pagecast/tcg"
	"github.com/pagecast/pagecast/trace"
)

// qemuRun is a `pagecast vm run --monitor qemu` process under test.
type qemuRun struct {
	lines   chan string // vm run's standard output after the guest is up
	head    []string    // and up to then
	sock    string
	qemuPID int
	cmd     *exec.Cmd
	stderr  *syncBuffer // read while vm run writes it
	exited  chan struct{}
}

// exited says whether r's vm run has exited.
func exited(r *qemuRun) bool {
	select {
	case <-r.exited:
		return true
	default:
		return false
	}
}

// startQEMURun runs `pagecast vm run --monitor qemu --accel tcg` with a QMP
// socket, waits for the guest's QEMU, and stops it at the end of the test.
func startQEMURun(t *testing.T, args ...string) *qemuRun {
	t.Helper()
	return startQEMURunAccel(t, "tcg", args...)
}

// startQEMURunAccel is startQEMURun with QEMU's accelerator accel.
func startQEMURunAccel(t *testing.T, accel string, args ...string) *qemuRun {
	t.Helper()
	testutil.RequiresQEMU(t)
	sock := filepath.Join(t.TempDir(), "qmp.sock")
	cmd := exec.Command(binary, append([]string{"vm", "run", "--monitor", "qemu", "--accel", accel, "--qmp", "unix:" + sock}, args...)...)
	var stderr syncBuffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := &qemuRun{sock: sock, cmd: cmd, stderr: &stderr, exited: make(chan struct{}), lines: make(chan string, 16)}
	// It prints QEMU's pid, then a line once the guest is up (or is
	// waiting for a migration).
	pids, up := make(chan int, 1), make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			r.head = append(r.head, sc.Text())
			if m := regexp.MustCompile(`QEMU pid (\d+)`).FindStringSubmatch(sc.Text()); m != nil {
				pid, _ := strconv.Atoi(m[1])
				pids <- pid
			}
			if strings.HasPrefix(sc.Text(), "guest up:") || strings.HasPrefix(sc.Text(), "waiting for an incoming") {
				close(up)
				break
			}
		}
		for sc.Scan() {
			select {
			case r.lines <- sc.Text():
			default:
			}
		}
		io.Copy(io.Discard, stdout)
	}()
	go func() { cmd.Wait(); close(r.exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		// One that says it waits for a migration out (a post-copy whose
		// destination the test stopped may wait for good) takes the
		// second signal it asks for.
		for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
			if strings.Contains(stderr.String(), "a second signal stops QEMU anyway") {
				cmd.Process.Signal(os.Interrupt)
				break
			}
			if exited(r) {
				break
			}
		}
		select {
		case <-r.exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			t.Errorf("pagecast vm run --monitor qemu did not stop on SIGINT")
		}
		if r.qemuPID != 0 && syscall.Kill(r.qemuPID, 0) == nil {
			t.Errorf("QEMU (pid %d) still runs after pagecast vm run stopped", r.qemuPID)
		}
		if _, err := os.Lstat(sock); err == nil {
			t.Errorf("pagecast vm run left its --qmp socket %s behind", sock)
		}
		if t.Failed() {
			t.Logf("pagecast vm run stderr:\n%s", stderr.String())
		}
	})
	select {
	case r.qemuPID = <-pids:
	case <-r.exited:
		t.Fatalf("pagecast vm run exited:\n%s", stderr.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("no QEMU after 30s:\n%s", stderr.String())
	}
	select {
	case <-up:
	case <-r.exited:
		t.Fatalf("pagecast vm run exited:\n%s", stderr.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("guest not up after 60s:\n%s", stderr.String())
	}
	return r
}

// TestProfileTCG profiles a QEMU TCG guest as a user would: the trace it
// writes is read by trace info, predict eval and predict serve, and its
// metrics pass promtool.
func TestProfileTCG(t *testing.T) {
	if testing.Short() {
		t.Skip("boots QEMU; skipped in short mode")
	}
	vm := startQEMURun(t, "--memory", "32M", "--workload", "hotset:hot=512,p=0.9,delay=5000")
	dir := t.TempDir()
	out := filepath.Join(dir, "vm.pct")
	metrics := freeAddr(t)
	cmd := exec.Command(binary, "profile", "--qmp", "unix:"+vm.sock, "--duration", "3500ms", "--epoch", "250ms",
		"--out", out, "--metrics", metrics, "--name", "web-1")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exposition := scrape(t, "http://"+metrics+"/metrics", `pagecast_profiler_epochs_total{vm="web-1"} 2`)
	// Scraped as Prometheus would, every 1.5 s: once the profile has
	// ended its metrics are served until the end has been scraped twice,
	// so the last scrape holds every epoch.
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	var last string
	for ended := false; !ended; {
		select {
		case err := <-waited:
			if err != nil {
				t.Fatalf("pagecast profile: %v\n%s%s", err, stdout.String(), stderr.String())
			}
			ended = true
		case <-time.After(1500 * time.Millisecond):
			if resp, err := scrapeGet("http://" + metrics + "/metrics"); err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				last = string(b)
			}
		}
	}
	text := stdout.String()
	for _, want := range []string{"profiling qemu VM", "dirty tcg) with tcg-plugin", "epochs    1-4 ", "hottest 0x", "0 dropped",
		"  (a short last line: "} { // 3.5 s in lines of 4 epochs of 250 ms
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q:\n%s", want, text)
		}
	}
	// Every series of the profile's own carries the VM's name (--name), as
	// migrate's do: a fleet told its VMs apart by scrape target only.
	for _, want := range []string{`pagecast_profiler_hook_info{hook="tcg-plugin",vm="web-1"} 1`, `pagecast_guest_memory_bytes{vm="web-1"} 3.3554432e+07`} {
		if !strings.Contains(exposition, want) {
			t.Errorf("metrics lack %q:\n%s", want, exposition)
		}
	}
	if promtool, err := exec.LookPath("promtool"); err == nil {
		check := exec.Command(promtool, "check", "metrics")
		check.Stdin = strings.NewReader(exposition)
		if msg, err := check.CombinedOutput(); err != nil || len(bytes.TrimSpace(msg)) != 0 {
			t.Errorf("promtool check metrics: %v\n%s", err, msg)
		}
	} else {
		t.Log("promtool not installed (Debian package prometheus): exposition not linted")
	}

	meta, epochs, damage, err := trace.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if meta.Hook != "tcg-plugin" || meta.MemoryBytes != 32<<20 || len(epochs) < 10 || len(damage) != 0 {
		t.Fatalf("trace: meta %+v, %d epochs, damage %v", meta, len(epochs), damage)
	}
	if want := fmt.Sprintf("pagecast_profiler_epochs_total{vm=\"web-1\"} %d\n", len(epochs)); !strings.Contains(last, want) {
		t.Errorf("the last scrape lacks %q: the profile's last epochs never reached Prometheus", want)
	}
	// The writes recorded, as the profile said them: served on after its
	// end, they went on counting the plugin's (408 M against 286 M said).
	if m := regexp.MustCompile(`; (\d+) writes recorded`).FindStringSubmatch(text); m == nil {
		t.Errorf("no writes recorded said:\n%s", text)
	} else if n, _ := strconv.ParseFloat(m[1], 64); !strings.Contains(last, `pagecast_profiler_events_total{vm="web-1"} `+strconv.FormatFloat(n, 'g', -1, 64)+"\n") {
		t.Errorf("the last scrape's events differ from the %s writes the profile said:\n%s", m[1], last)
	}
	for _, e := range epochs {
		// The guest writes its 512-page hot set many times an epoch (delay=5000:
		// fast enough to cover it even on a loaded machine).
		if len(e.Pages) < 400 {
			t.Errorf("epoch %d has %d pages: the hot set alone is 512", e.Index, len(e.Pages))
		}
	}
	checkProfileLines(t, text, epochs, 4) // 250ms epochs, a line a second
	// What the memory holds, for simulate: the guest's pages written
	// hold its counter words (the hot set's repeat pages no longer are),
	// and the flags it gives are taken.
	held := regexp.MustCompile(`(?m)^what the guest's memory holds now: (\S+); the (\d+) pages written: (\S+) \(for pagecast simulate on this trace: --content (\S+) --written-content (\S+)\)$`).FindStringSubmatch(text)
	if held == nil || held[1] != held[4] || held[3] != held[5] {
		t.Fatalf("no line saying what the memory holds:\n%s", text)
	}
	sim := []string{"simulate", "--trace", out, "--bandwidth", "32MiB/s", "--mode", "precopy", "--content", held[4], "--written-content", held[5]}
	if b, err := exec.Command(binary, sim...).CombinedOutput(); err != nil {
		t.Errorf("pagecast %s: %v\n%s", strings.Join(sim, " "), err, b)
	}
	// Without --out there is no trace to simulate on: the content is
	// said, not the flags for one (walk 67).
	b, err := exec.Command(binary, "profile", "--qmp", "unix:"+vm.sock, "--duration", "1s", "--epoch", "250ms", "--quiet").Output()
	if err != nil || !regexp.MustCompile(`(?m)^what the guest's memory holds now: \S+; the \d+ pages written: \S+$`).Match(b) {
		t.Errorf("profile without --out: %v\n%s", err, b)
	}
	// A profile held up (here stopped for 600 ms, as a busy host or a
	// slow disk would) says which epochs ran long, where it made fewer
	// than --duration holds without a word (walk 157).
	stalled := exec.Command(binary, "profile", "--qmp", "unix:"+vm.sock, "--duration", "2s", "--epoch", "250ms", "--quiet")
	var stalledOut bytes.Buffer
	stalled.Stdout, stalled.Stderr = &stalledOut, &stalledOut
	if err := stalled.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(700 * time.Millisecond)
	stalled.Process.Signal(syscall.SIGSTOP)
	time.Sleep(600 * time.Millisecond)
	stalled.Process.Signal(syscall.SIGCONT)
	if err := stalled.Wait(); err != nil || !regexp.MustCompile(`; 1 epoch ran \d+ms against --epoch 250ms \(profile fell behind`).Match(stalledOut.Bytes()) {
		t.Errorf("profile stopped for 600 ms: %v, want it to say an epoch ran long:\n%s", err, stalledOut.String())
	}
	for _, args := range [][]string{{"trace", "info", out}, {"predict", "eval", out}} {
		b, err := exec.Command(binary, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("pagecast %s: %v\n%s", strings.Join(args, " "), err, b)
		}
		if args[0] == "predict" && !strings.Contains(string(b), "model") {
			t.Errorf("predict eval printed no model row:\n%s", b)
		}
	}
	listen := freeAddr(t)
	serve := exec.Command(binary, "predict", "serve", "--trace", out, "--listen", listen)
	var serveErr bytes.Buffer
	serve.Stderr = &serveErr
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { serve.Process.Signal(os.Interrupt); serve.Wait() }()
	if body := scrape(t, "http://"+listen+"/metrics", "pagecast_predictor"); !strings.Contains(body, "pagecast_predictor") {
		t.Errorf("predict serve --trace on the TCG trace: no predictor metrics\n%s", serveErr.String())
	}
}

// TestProfileTCGQEMUKilled: QEMU dies mid-profile; profile says so on one
// line, keeps the epochs it closed, and nothing is left running.
func TestProfileTCGQEMUKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("boots QEMU; skipped in short mode")
	}
	vm := startQEMURun(t, "--memory", "32M", "--workload", "hotset:hot=512,p=0.9,delay=25000")
	out := filepath.Join(t.TempDir(), "vm.pct")
	cmd := exec.Command(binary, "--log-level", "warn", "profile", "--qmp", "unix:"+vm.sock, "--epoch", "200ms", "--out", out, "--quiet")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	if err := syscall.Kill(vm.qemuPID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	exited, err := waitExit(cmd, 10*time.Second)
	if !exited {
		t.Fatal("profile still runs 10s after QEMU was killed")
	}
	if msg := strings.TrimSpace(stderr.String()); err == nil || strings.Contains(msg, "\n") || !strings.Contains(msg, "exited") {
		t.Fatalf("profile after QEMU was killed: exit %v, stderr %q: want one line saying QEMU exited", err, msg)
	}
	select {
	case <-vm.exited:
	case <-time.After(10 * time.Second):
		t.Fatal("pagecast vm run still runs 10s after its QEMU was killed")
	}
	if !strings.Contains(vm.stderr.String(), "killed") {
		t.Errorf("vm run does not say QEMU was killed:\n%s", vm.stderr.String())
	}
	_, epochs, damage, err := trace.ReadFile(out)
	if err != nil || len(epochs) < 2 || len(damage) != 0 {
		t.Fatalf("trace after the crash: %d epochs, damage %v, %v; want the epochs closed before it, undamaged", len(epochs), damage, err)
	}
	// It says what the trace kept (it said only that QEMU had exited).
	if want := fmt.Sprintf("after %d epochs; trace %s keeps them", len(epochs), out); !strings.Contains(stderr.String(), want) {
		t.Errorf("profile's last words %q lack %q", stderr.String(), want)
	}
}

// TestQEMUErrors: each mistake gets one line and exit status 1, and no
// QEMU is left behind.
func TestQEMUErrors(t *testing.T) {
	testutil.RequiresQEMU(t)
	plain := filepath.Join(t.TempDir(), "plain.sock")
	// A QEMU under TCG without pagecast's plugin.
	q := exec.Command("qemu-system-x86_64", "-accel", "tcg", "-m", "32M", "-nographic", "-nodefaults",
		"-qmp", "unix:"+plain+",server=on,wait=off", "-S")
	if err := q.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { q.Process.Kill(); q.Wait() }()
	waitSocket(t, plain)
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"unknown accel", []string{"vm", "run", "--monitor", "qemu", "--accel", "hvf"}, `unknown accelerator "hvf": want auto, kvm or tcg`},
		{"unknown monitor", []string{"vm", "run", "--monitor", "xen"}, `--monitor "xen": want auto, pagecast or qemu`},
		{"vcpus", []string{"vm", "run", "--monitor", "qemu", "--vcpus", "2"}, "under QEMU (--monitor qemu, or auto without /dev/kvm), --vcpus is for a Linux guest (--kernel)"},
		{"accel on pagecast's monitor", []string{"vm", "run", "--monitor", "pagecast", "--accel", "tcg"}, "--accel is for --monitor qemu"},
		{"demo accel", []string{"demo", "--monitor", "qemu", "--accel", "nope"}, `unknown accelerator "nope"`},
		{"no plugin", []string{"profile", "--qmp", "unix:" + plain}, "`pagecast plugin --dir DIR --memory SIZE` writes the plugin"},
		{"duration under an epoch", []string{"profile", "--qmp", "unix:" + plain, "--epoch", "10m", "--duration", "1s"}, "--duration 1s is shorter than one --epoch of 10m0s: no epoch would end"},
		{"memory through QMP", []string{"profile", "--qmp", "unix:" + plain, "--memory", "64M"}, "--memory is for --pid: through --qmp the VM says its own size"},
		{"plugin folder as an argument", []string{"plugin", t.TempDir()}, "plugin takes no arguments"},
		{"memory below minimum", []string{"vm", "run", "--monitor", "qemu", "--memory", "4M"}, "--memory 4M: 4.0 MiB is below the guest's minimum of 8 MiB"},
		{"dirty on QEMU", []string{"vm", "run", "--monitor", "qemu", "--accel", "tcg", "--dirty", "bitmap"}, "with --monitor qemu the dirty pages come from pagecast's TCG plugin"},
		{"ring size under TCG", []string{"vm", "run", "--monitor", "qemu", "--accel", "tcg", "--ring-size", "4096"}, "--ring-size sizes QEMU's KVM dirty ring (--accel kvm); this QEMU runs under TCG"}, // walk 160: taken without a word
		{"tls without incoming", []string{"vm", "run", "--monitor", "qemu", "--tls-cert", "c.pem"}, "a QEMU VM's migrations out are driven by pagecast migrate"},
		{"tls for QEMU's incoming", []string{"vm", "run", "--monitor", "qemu", "--engine", "qemu", "--incoming", "tcp:127.0.0.1:1", "--tls-ca", "ca.pem"},
			"QEMU's own migration (--engine qemu) is taken here in plain TCP"},
		{"tls for QEMU's migration", []string{"migrate", "--qmp", "unix:" + plain, "--to", "tcp:127.0.0.1:1", "--engine", "qemu", "--tls-ca", "ca.pem"},
			"they are for pagecast's engine, and QEMU's own migration (engine qemu: --engine qemu) would go in plain TCP"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(binary, tc.args...)
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

func waitSocket(t *testing.T, path string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no socket %s after 20s", path)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// freeAddr is a loopback address with a port that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	// A port is closed as soon as found: the kernel gave one again to a
	// later call before its first taker listened, and a test's metrics
	// and its destination shared 127.0.0.1:34571 (CI, 2026-12-05). No
	// port goes out twice.
	handedMu.Lock()
	defer handedMu.Unlock()
	for {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		if !handed[addr] {
			handed[addr] = true
			return addr
		}
	}
}

var (
	handedMu sync.Mutex
	handed   = map[string]bool{} // addresses freeAddr has returned
)

// scrape GETs url until its body contains want (or 20 s pass) and returns
// the body.
func scrape(t *testing.T, url, want string) string {
	t.Helper()
	last, err := scrapeWithin(url, want, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return last
}

// scrapeWithin polls url every 100 ms until its text contains want, for
// at most d, and returns the text, or an error with the last one.
func scrapeWithin(url, want string, d time.Duration) (string, error) {
	var last string
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		resp, err := scrapeGet(url)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			last = string(b)
			if strings.Contains(last, want) {
				return last, nil
			}
		}
	}
	return "", fmt.Errorf("%s never showed %q in %v; last:\n%s", url, want, d, last)
}

// TestDemoQEMU runs the main job end to end on a QEMU TCG guest, as `make
// demo` does on a machine without /dev/kvm: profile with the plugin,
// forecast, migrate in every mode QEMU has.
func TestDemoQEMU(t *testing.T) {
	slowUnderRace(t, "21 s")
	testutil.RequiresQEMU(t)
	if testing.Short() {
		t.Skip("boots QEMUs; skipped in short mode")
	}
	cmd := exec.Command(binary, "--log-level", "warn", "demo", "--monitor", "qemu", "--accel", "tcg", "--duration", "3s",
		"--memory", "32M")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("pagecast demo: %v\n%s\n%s", err, out, stderr.String())
	}
	wants := []string{"runs on QEMU under TCG", "dirty pages from: tcg-plugin", "next-epoch forecasts", "model",
		"the model told in which of 5 parts of each a page was written", // harvested every 100 ms, five to a line
		"against QEMU's own pre-copy:", "QEMU precopy               done: guest running on the destination QEMU",
		"tsmc (QEMU post-copy)      done: guest running on the destination QEMU",
		"the same migrations simulated on this guest's profile", "mode auto would migrate this VM with ",
		"among the 5 modes pagecast's engine runs on a QEMU source (precopy, predictive, throttle, mecom, predictive+mecom; the others need post-copy"}
	for _, mode := range demoModes {
		if mode != migrator.ModeTSMC {
			wants = append(wants, fmt.Sprintf("%-26s done: guest running on the destination QEMU (progress", mode))
		}
	}
	for _, want := range wants {
		if !strings.Contains(string(out), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
	// It ends with auto's choice for the VM, and why, and what the live
	// migration in that mode took.
	checkAutoLine(t, out)
	// The QEMU demo simulates auto's choice again as its live run begins:
	// the guest's writes through the migrations before it change what
	// its pages hold.
	if !strings.Contains(string(out), "simulated again on the guest's memory as that migration began") {
		t.Errorf("auto's line has no simulation on the memory as its live run began:\n%s", out)
	}
	checkMeasuredContent(t, out)
	// Every migration's row has the guest's own pause, from the source's
	// STOP event to the destination's RESUME, within its total time; the
	// comparison with QEMU's pre-copy is by it.
	labels := []string{"QEMU precopy", "tsmc \\(QEMU post-copy\\)"}
	for _, mode := range demoModes {
		if mode != migrator.ModeTSMC {
			labels = append(labels, regexp.QuoteMeta(mode))
		}
	}
	for _, label := range labels {
		m := regexp.MustCompile(`(?m)^ +` + label + ` +(\S+) +(\S+) +(\S+) +[\d.]+ [KMG]?i?B `).FindSubmatch(out)
		if m == nil {
			t.Errorf("no row for %s in the migration table:\n%s", label, out)
			continue
		}
		total, err1 := time.ParseDuration(string(m[1]))
		paused, err2 := time.ParseDuration(string(m[3]))
		if err1 != nil || err2 != nil || paused <= 0 || paused > total {
			t.Errorf("%s: total %s, paused %s: want the guest's pause, within the total time", label, m[1], m[3])
		}
		t.Logf("%s: total %s, downtime %s, paused %s", label, m[1], m[2], m[3])
	}
	if n := strings.Count(string(out), "% of the pause,"); n != len(labels)-1 {
		t.Errorf("%d comparisons with QEMU's pre-copy by the guest's pause, want %d:\n%s", n, len(labels)-1, out)
	}
	if n := strings.Count(string(out), "memory verified"); n != len(demoModes)-1 {
		t.Errorf("%d migrations say memory verified, want every one of pagecast's engine (%d):\n%s", n, len(demoModes)-1, out)
	}
	// The strip shows the 2 MiB hot set (hot=512 pages) being written.
	if !regexp.MustCompile(`(?m)^ +\d+\.\ds +\d{3,} `).Match(out) {
		t.Errorf("no epoch line with hundreds of dirty pages:\n%s", out)
	}
}

// TestProfileHandStartedQEMU follows the README for a QEMU a user starts
// by hand: `pagecast plugin` prints the -plugin option; QEMU runs with it
// (and with plain, unshared RAM); `pagecast profile` finds the plugin's
// shared memory through /proc and says the RAM is not shared.
func TestProfileHandStartedQEMU(t *testing.T) {
	q, sock := startHandQEMU(t, "32M", "32M")
	shm := tcg.DefaultShm(q.Process.Pid)
	defer func() {
		q.Process.Signal(syscall.SIGTERM) // QEMU exits cleanly, and the plugin removes its shared memory
		q.Wait()
		if _, err := os.Stat(shm); err == nil {
			t.Errorf("%s left behind after QEMU exited", shm)
			os.Remove(shm)
		}
	}()
	time.Sleep(2 * time.Second) // the guest boots (SeaBIOS, then the kernel)
	out, err := exec.Command(binary, "--log-level", "warn", "profile", "--qmp", "unix:"+sock, "--duration", "2s", "--epoch", "250ms", "--interval", "0").CombinedOutput()
	if err != nil {
		t.Fatalf("pagecast profile: %v\n%s\nqemu: %s", err, out, q.Stderr)
	}
	for _, want := range []string{"guest RAM is not shared memory", "with tcg-plugin", "epoch    4"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("profile output lacks %q:\n%s", want, out)
		}
	}
	if !regexp.MustCompile(`epoch +\d+ +[1-9]\d\d+ pages`).Match(out) {
		t.Errorf("no epoch with hundreds of dirty pages:\n%s", out)
	}
}

// TestServeCollectorTCG: predict serve --collector forecasts a live QEMU
// TCG guest through the plugin, as it does a KVM guest through eBPF, under
// the name profile and migrate give it (the QMP socket's, here; every
// collector's VM was "live": walk 95).
func TestServeCollectorTCG(t *testing.T) {
	if testing.Short() {
		t.Skip("boots QEMU; skipped in short mode")
	}
	vm := startQEMURun(t, "--memory", "32M", "--workload", "hotset:hot=512,p=0.9,delay=5000")
	listen := freeAddr(t)
	serve := exec.Command(binary, "predict", "serve", "--collector", "unix:"+vm.sock, "--epoch", "200ms", "--listen", listen)
	var serveErr bytes.Buffer
	serve.Stderr = &serveErr
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { serve.Process.Signal(os.Interrupt); serve.Wait() }()
	// After a few epochs the hot set is forecast: hundreds of pages.
	name := strings.TrimSuffix(filepath.Base(vm.sock), filepath.Ext(vm.sock))
	hotset := "http://" + listen + "/v1/vms/" + name + "/hotset?threshold=0.5&limit=65536"
	body := scrape(t, hotset, `"pages"`)
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) && strings.Count(body, ",") < 400 {
		time.Sleep(200 * time.Millisecond)
		body = scrape(t, hotset, `"pages"`)
	}
	if n := strings.Count(body, ","); n < 400 {
		t.Fatalf("live hot set of the TCG guest has ~%d pages, want the 512-page hot set:\n%.500s\n%s", n, body, serveErr.String())
	}
	scrape(t, "http://"+listen+"/metrics", `pagecast_predicted_dirty_pages{vm="`+name+`"}`)
	// The VM goes: the service ends, and says it failed (it exited 0).
	vm.cmd.Process.Signal(os.Interrupt)
	exited, err := waitExit(serve, 20*time.Second)
	if !exited {
		t.Fatalf("predict serve still runs 20 s after its VM stopped:\n%s", serveErr.String())
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(serveErr.String(), "pagecast: --collector: ") {
		t.Errorf("predict serve, its VM gone: %v, want exit status 1 saying why:\n%s", err, serveErr.String())
	}
}

// TestMigrateQEMUEngineCLI: a user migrates a QEMU TCG guest with
// pagecast's engine, as the README shows: `vm run --monitor qemu` at both
// ends, `pagecast migrate` picks the engine, the destination verifies the
// memory and runs the guest.
func TestMigrateQEMUEngineCLI(t *testing.T) {
	if testing.Short() {
		t.Skip("boots QEMUs; skipped in short mode")
	}
	src, dst, out, stderr := migrateQEMUCLI(t, "--mode", "predictive+mecom", "--bandwidth", "32MiB/s", "--dest-qmp", destQMP)
	for _, want := range []string{"status           completed", "mode             predictive+mecom", "verified         true"} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
	// Given the destination QEMU's monitor, the guest's own pause, from
	// the source's STOP to the destination's RESUME: about the engine's
	// downtime, which runs from its pause of the source until it has told
	// the destination to run.
	total := regexp.MustCompile(`total time +(\S+)`).FindStringSubmatch(out)
	down := regexp.MustCompile(`downtime +(\S+)`).FindStringSubmatch(out)
	paused := regexp.MustCompile(`guest paused +(\S+) \(the source's STOP to the destination's RESUME\)`).FindStringSubmatch(out)
	if total == nil || down == nil || paused == nil {
		t.Fatalf("summary lacks the total time, downtime or the guest's pause:\n%s", out)
	}
	tt, _ := time.ParseDuration(total[1])
	dt, _ := time.ParseDuration(down[1])
	pt, err := time.ParseDuration(paused[1])
	if err != nil || pt <= 0 || pt > tt {
		t.Errorf("guest paused %s (%v), downtime %s, total %s: want a pause within the total time", paused[1], err, down[1], total[1])
	}
	t.Logf("downtime %v, guest paused %v", dt, pt)
	// What the memory check after the switch-over added to the total.
	if m := regexp.MustCompile(`verified +true \(the memory check took (\S+) of the total, after the switch-over\)`).FindStringSubmatch(out); m == nil {
		t.Errorf("summary does not say what the memory check took:\n%s", out)
	} else if ct, err := time.ParseDuration(m[1]); err != nil || ct <= 0 || ct >= tt {
		t.Errorf("memory check %s (%v) of a total of %s", m[1], err, total[1])
	} else {
		t.Logf("memory check %v of %v", ct, tt)
	}
	if !strings.Contains(stderr, "engine: pagecast") {
		t.Errorf("migrate did not say it chose pagecast's engine:\n%s", stderr)
	}
	// QEMU's own view: the destination runs, the source has handed over.
	if st := qmpState(t, dst.sock); st != "running" {
		t.Errorf("destination QEMU is %s, want running", st)
	}
	if st := qmpState(t, src.sock); st != "postmigrate" {
		t.Errorf("source QEMU is %s, want postmigrate", st)
	}
	// Migrated away, it is refused by either engine saying so (QEMU's
	// own said "Can't migrate the vm that was paused due to previous
	// migration").
	for _, engine := range []string{"pagecast", "qemu"} {
		_, stderr, err := runApp(t, "migrate", "--qmp", "unix:"+src.sock, "--to", "tcp:"+freeAddr(t), "--engine", engine, "--mode", "precopy")
		if err == nil || !strings.Contains(err.Error(), "postmigrate: it has migrated away already") {
			t.Errorf("--engine %s from a source migrated away: %v\n%s", engine, err, stderr)
		}
	}
	// So is a profile of it, with no trace: it ended at once, exit 0,
	// its trace empty (walk 82).
	gone := filepath.Join(t.TempDir(), "gone.pct")
	_, stderr, err = runApp(t, "profile", "--qmp", "unix:"+src.sock, "--duration", "2s", "--out", gone)
	if err == nil || !strings.Contains(err.Error(), "the VM has migrated away (run state postmigrate): its guest runs elsewhere: give the destination's QMP socket") {
		t.Errorf("profile of a source migrated away: %v\n%s", err, stderr)
	}
	if _, serr := os.Stat(gone); serr == nil {
		t.Errorf("profile of a source migrated away left a trace")
	}
}

// qmpState is query-status's status from the QMP socket of a vm run.
func qmpState(t *testing.T, sock string) string {
	t.Helper()
	mon, err := qmpclient.Dial("unix", sock, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer mon.Disconnect()
	if err := mon.Connect(); err != nil {
		t.Fatal(err)
	}
	st, _ := run(t, mon, "query-status", nil)["status"].(string)
	return st
}

// TestMigrateQEMUEngineTLS: with --tls-* on both ends, pagecast's engine
// moves a QEMU guest over mutual TLS. A source whose certificate the
// destination's CA did not sign, and a plain one, are turned away, each
// end saying why in words that name the flag to fix; the source's guest
// runs on, and the destination waits for the right source.
func TestMigrateQEMUEngineTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("boots QEMUs; skipped in short mode")
	}
	dir := t.TempDir()
	cert, key, ca := testutil.PKI(t, dir, "site")
	rogueCert, rogueKey, _ := testutil.PKI(t, dir, "rogue")
	to := "tcp:" + freeAddr(t)
	dst := startQEMURun(t, "--memory", "32M", "--incoming", to, "--tls-cert", cert, "--tls-key", key, "--tls-ca", ca)
	src := startQEMURun(t, "--memory", "32M", "--workload", "hotset:delay=25000")
	migrate := func(tlsArgs ...string) (string, error) {
		args := append([]string{"--log-level", "warn", "migrate", "--qmp", "unix:" + src.sock, "--to", to, "--quiet"}, tlsArgs...)
		out, err := exec.Command(binary, args...).CombinedOutput()
		return string(out), err
	}
	// The files are read before the migration is begun or said (walk
	// 160: a missing key was said after "engine: pagecast", and under
	// auto after seconds of watching the guest).
	if out, err := migrate("--tls-cert", cert, "--tls-ca", ca, "--mode", "auto"); err == nil ||
		!strings.Contains(out, "mutual TLS needs all three of --tls-cert, --tls-key and --tls-ca") || strings.Contains(out, "engine: pagecast") || strings.Contains(out, "watching the guest") {
		t.Errorf("migrate without --tls-key: %v, want the flags refused before the engine is said:\n%s", err, out)
	}
	if st := qmpState(t, src.sock); st != "running" {
		t.Fatalf("after a refusal of its TLS flags the source QEMU is %s, want running", st)
	}
	for _, c := range []struct {
		name string
		args []string
		want string // in the source's words
	}{
		{"a source whose certificate another CA signed", []string{"--tls-cert", rogueCert, "--tls-key", rogueKey, "--tls-ca", ca},
			"the destination refused this side's certificate"},
		{"a plain source", nil, "a destination that requires TLS"},
	} {
		out, err := migrate(c.args...)
		if err == nil || !strings.Contains(out, c.want) || !strings.Contains(out, "the guest keeps running on the source") {
			t.Errorf("%s: %v, want %q and the guest kept:\n%s", c.name, err, c.want, out)
		}
		if st := qmpState(t, src.sock); st != "running" {
			t.Fatalf("after %s the source QEMU is %s, want running", c.name, st)
		}
	}
	out, err := migrate("--tls-cert", cert, "--tls-key", key, "--tls-ca", ca)
	if err != nil || !strings.Contains(out, "verified         true") {
		t.Fatalf("over mutual TLS: %v\n%s\ndestination:\n%s", err, out, dst.stderr.String())
	}
	// Each end says the link is TLS (walk 160: their lines read the same
	// with it and without).
	if !strings.Contains(out, "; over mutual TLS to the destination") {
		t.Errorf("migrate does not say it goes over TLS:\n%s", out)
	}
	if head := strings.Join(dst.head, "\n"); !strings.Contains(head, "waiting for an incoming migration (pagecast's engine) on "+to+", mutual TLS") {
		t.Errorf("the destination does not say it takes TLS:\n%s", head)
	}
	dst.saysAfterMigration(t, "migration received, memory verified; guest running")
	logged := dst.stderr.String()
	for _, want := range []string{"TLS handshake with the source", "the source's certificate is not signed by the CA this side trusts"} {
		if !strings.Contains(logged, want) {
			t.Errorf("destination's log lacks %q:\n%s", want, logged)
		}
	}
	if n := strings.Count(logged, "refused a connection"); n != 2 {
		t.Errorf("destination logged %d refusals, want 2:\n%s", n, logged)
	}
	if st := qmpState(t, dst.sock); st != "running" {
		t.Errorf("destination QEMU is %s, want running", st)
	}
}

// TestIncomingSurvivesBadPeers: a QEMU destination waiting for pagecast's
// engine is not ended by a port scanner, a peer speaking something else or
// a source of another size: it logs each and the right source then gets in.
func TestIncomingSurvivesBadPeers(t *testing.T) {
	if testing.Short() {
		t.Skip("boots QEMUs; skipped in short mode")
	}
	to := "tcp:" + freeAddr(t)
	dst := startQEMURun(t, "--memory", "32M", "--incoming", to)
	addr := strings.TrimPrefix(to, "tcp:")
	for _, junk := range []string{"", "GET / HTTP/1.0\r\n\r\n", strings.Repeat("\x00", 4096)} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte(junk))
		c.Close()
	}
	small := startQEMURun(t, "--memory", "16M", "--workload", "hotset:delay=25000")
	out, err := exec.Command(binary, "--log-level", "warn", "migrate", "--qmp", "unix:"+small.sock, "--to", to, "--quiet").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "memory") {
		t.Fatalf("a 16M source into a 32M destination: %v\n%s", err, out)
	}
	src := startQEMURun(t, "--memory", "32M", "--workload", "hotset:delay=25000")
	// A peer that connects, says nothing and stays: the source that
	// comes after it is served at once, not after the 5 s the destination
	// gives the silent one (once 30 s, and the source failed, and its
	// abort then ended the destination's wait).
	held, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	out, err = exec.Command(binary, "--log-level", "warn", "migrate", "--qmp", "unix:"+src.sock, "--to", to, "--quiet").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "verified         true") {
		t.Fatalf("the right source after the bad peers: %v\n%s\ndestination:\n%s", err, out, dst.stderr.String())
	}
	// The peer that sent nothing and went is a port probe, not worth a
	// warning; the one that held the connection is, once its 5 s are up
	// (the source was not held behind it: the destination reads every
	// handshake as it comes).
	waitFor(t, "the silent peer's refusal", func() bool { return strings.Count(dst.stderr.String(), "refused a connection") >= 4 })
	if n := strings.Count(dst.stderr.String(), "refused a connection"); n != 4 {
		t.Errorf("destination logged %d refusals, want 4 (2 bad peers, the wrong size and the silent one that held on; the one that hung up is a probe):\n%s", n, dst.stderr.String())
	}
}

// TestDestinationBusyQEMU is TestDestinationBusy on QEMU guests (TCG, or
// KVM's where QEMU uses it): a second source to a destination busy with a
// migration is refused at once, and both guests run on.
func TestDestinationBusyQEMU(t *testing.T) {
	if testing.Short() {
		t.Skip("boots QEMUs; skipped in short mode")
	}
	to := "tcp:" + freeAddr(t)
	first := startQEMURun(t, "--memory", "32M", "--workload", "idle")
	second := startQEMURun(t, "--memory", "32M", "--workload", "hotset:delay=25000")
	dst := startQEMURun(t, "--memory", "32M", "--incoming", to)
	// Some 9 s: 18 MiB sent at 2 MiB/s.
	cmd := exec.Command(binary, "--log-level", "warn", "migrate", "--qmp", "unix:"+first.sock, "--to", to, "--bandwidth", "2MiB/s", "--quiet")
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the first source accepted", func() bool { return strings.Contains(dst.stderr.String(), "incoming migration accepted") })
	start := time.Now()
	busy, err := exec.Command(binary, "migrate", "--qmp", "unix:"+second.sock, "--to", to, "--bandwidth", "16MiB/s", "--quiet").CombinedOutput()
	took := time.Since(start)
	if err == nil || !strings.Contains(string(busy), "this destination is busy with an incoming migration from 127.0.0.1:") {
		t.Errorf("a second source to a busy destination: %v\n%s", err, busy)
	}
	if took > 5*time.Second {
		t.Errorf("the second source was refused after %v", took)
	}
	if st := qmpState(t, second.sock); st != "running" {
		t.Errorf("the second source is %s after its refusal", st)
	}
	if err := cmd.Wait(); err != nil || !strings.Contains(out.String(), "verified         true") {
		t.Fatalf("the first migration: %v\n%s\ndestination:\n%s", err, out.String(), dst.stderr.String())
	}
}

// TestCommitRepeatedQEMU is TestCommitRepeatedCLI on QEMU guests: a
// link that breaks as the source commits is recovered, the destination
// QEMU, busy with that migration, letting its source through to repeat
// the commit.
func TestCommitRepeatedQEMU(t *testing.T) {
	if testing.Short() {
		t.Skip("boots QEMUs; skipped in short mode")
	}
	to := "tcp:" + freeAddr(t)
	src := startQEMURun(t, "--memory", "32M", "--workload", "hotset:delay=25000")
	dst := startQEMURun(t, "--memory", "32M", "--incoming", to)
	out, err := exec.Command(binary, "--log-level", "warn", "migrate", "--qmp", "unix:"+src.sock, "--to", commitDroppingProxy(t, to),
		"--bandwidth", "64MiB/s").CombinedOutput()
	if err != nil {
		t.Fatalf("migrate through a link that broke at the commit: %v\n%s\ndestination:\n%s", err, out, dst.stderr.String())
	}
	for _, want := range []string{"verified         true", "the link broke after the commit, which was repeated on a new connection"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
	if st := qmpState(t, dst.sock); st != "running" {
		t.Errorf("destination after the repeated commit: %s", st)
	}
}

// TestEngineMismatch: a source and a destination of different engines
// (QEMU's migration into pagecast's receiver, pagecast's engine into
// QEMU's own -incoming) are told which is which and the flag that fixes
// it; the source's guest runs on. vm run --engine qemu --incoming then
// says when QEMU's migration has brought the guest.
func TestEngineMismatch(t *testing.T) {
	if testing.Short() {
		t.Skip("boots QEMUs; skipped in short mode")
	}
	src := startQEMURun(t, "--memory", "32M", "--workload", "hotset:delay=25000")
	toPagecast, toQEMU := "tcp:"+freeAddr(t), "tcp:"+freeAddr(t)
	receiver := startQEMURun(t, "--memory", "32M", "--incoming", toPagecast)
	qemuIncoming := startQEMURun(t, "--memory", "32M", "--incoming", toQEMU, "--engine", "qemu")
	migrate := func(to string, args ...string) (string, error) {
		out, err := exec.Command(binary, append([]string{"--log-level", "warn", "migrate", "--qmp", "unix:" + src.sock, "--to", to, "--quiet"}, args...)...).CombinedOutput()
		return string(out), err
	}

	// QEMU's migration into pagecast's receiver of this host: refused
	// before a byte goes (it went, and was refused by the receiver, said
	// after by how little QEMU had sent, until a CI run sent over 1 MiB).
	out, err := migrate(toPagecast, "--engine", "qemu")
	if want := "which takes pagecast's engine only, and QEMU's migration (engine qemu: --engine qemu) needs a QEMU waiting with its own -incoming"; err == nil || !strings.Contains(out, want) {
		t.Errorf("QEMU's migration into pagecast's receiver: %v, want %q:\n%s", err, want, out)
	}
	if strings.Contains(receiver.stderr.String(), "refused a connection") {
		t.Errorf("the receiver was connected to:\n%s", receiver.stderr.String())
	}
	if st := qmpState(t, src.sock); st != "running" {
		t.Fatalf("source QEMU is %s, want running", st)
	}

	// pagecast's engine asked for into QEMU's own -incoming of this host:
	// refused before a byte goes, the QEMU waiting on (it went there,
	// and the QEMU exited on a stream not QEMU's, until walk 86; engine
	// auto now takes QEMU's migration there: TestEngineFollowsDestination).
	out, err = migrate(toQEMU, "--engine", "pagecast")
	if want := "the destination QEMU listens on " + toQEMU + " with its own -incoming"; err == nil || !strings.Contains(out, want) || !strings.Contains(out, "give --engine qemu") {
		t.Errorf("pagecast's engine into QEMU's -incoming: %v, want %q:\n%s", err, want, out)
	}
	if st := qmpState(t, src.sock); st != "running" {
		t.Fatalf("source QEMU is %s, want running", st)
	}
	if st := qmpState(t, qemuIncoming.sock); st != "inmigrate" {
		t.Errorf("QEMU's -incoming is %s after the refusal, want inmigrate (still waiting)", st)
	}

	// --paused: the guest stays paused once QEMU's migration has brought it.
	toQEMU = "tcp:" + freeAddr(t)
	qemuIncoming = startQEMURun(t, "--memory", "32M", "--incoming", toQEMU, "--engine", "qemu", "--paused")
	if out, err := migrate(toQEMU, "--engine", "qemu"); err != nil {
		t.Fatalf("QEMU's migration into QEMU's -incoming: %v\n%s", err, out)
	}
	qemuIncoming.saysAfterMigration(t, "QEMU's migration received; guest paused (--paused): QMP cont runs it")
	if st := qmpState(t, qemuIncoming.sock); st != "paused" {
		t.Errorf("the destination QEMU given --paused is %s after the migration, want paused", st)
	}
}

// saysAfterMigration checks that the destination r's next line, within
// 10 s, is want.
func (r *qemuRun) saysAfterMigration(t *testing.T, want string) {
	t.Helper()
	select {
	case line := <-r.lines:
		if line != want {
			t.Errorf("the destination said %q after the migration, want %q", line, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("the destination said nothing after the migration\n%s", r.stderr.String())
	}
}

// saysEventually waits up to 10 s for a line of vm run's that begins
// with want, past any other.
func (r *qemuRun) saysEventually(t *testing.T, want string) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	var said []string
	for {
		select {
		case line := <-r.lines:
			if strings.HasPrefix(line, want) {
				return
			}
			said = append(said, line)
		case <-deadline:
			t.Fatalf("vm run did not say %q; it said %q\n%s", want, said, r.stderr.String())
		}
	}
}

// syncBuffer is a process's output, read by the test while the process
// still writes it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestMigrateAuto (issue 14): --mode auto watches the QEMU guest, predicts
// every mode pagecast's engine runs on QEMU, says what it chose and why,
// migrates with it and prints the prediction against the outcome.
func TestMigrateAuto(t *testing.T) {
	if testing.Short() {
		t.Skip("boots QEMUs; skipped in short mode")
	}
	src, _, out, errOut := migrateQEMUCLI(t, "--mode", "auto", "--observe", "10", "--bandwidth", "32MiB/s", "--dest-qmp", destQMP)
	t.Log("\n" + out)
	// Before it predicts throttle, it measures what the guest writes
	// throttled (simulate.MeasureResponse).
	if !regexp.MustCompile(`pagecast: auto:   throttled 50%, 90%, 99%, the guest wrote in 100ms as many pages as it writes in \d+ms, \d+ms, \d+ms unthrottled \(its vCPU ran 50ms, 10ms, 1ms of it\); the measure took 1\.195s of its vCPU time, before the migration`).MatchString(errOut) {
		t.Errorf("auto did not say what the guest wrote throttled:\n%s", errOut)
	}
	for _, want := range []string{"auto: predicted from 1s of the guest", "both ends on this host, whose CPU moved ", "auto chose ", "status           completed",
		"verified         true", "predicted against outcome: total time "} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if containsRow(out, "tsmc") {
		t.Error("auto predicted tsmc, which a QEMU destination cannot take from pagecast's engine")
	}
	if strings.Contains(out, "pagecast profile --epoch") {
		t.Error("migrate's auto gave simulate's advice on epochs, which its fixed epochs leave no use for")
	}
	// The goal is a predicted total time within 30% of the
	// outcome: measured -22% to +23% over five runs on an idle machine.
	// Here it is only held to a factor of three, since the suite's other
	// packages compete with the guest and the engine for two cores.
	// Given the destination's monitor, the downtime is also held to the
	// guest's own pause.
	if !regexp.MustCompile(`predicted against outcome: .* downtime \S+ against \S+ \(the guest paused [\d.]+m?s\)\n`).MatchString(out) {
		t.Errorf("prediction against outcome without the guest's pause:\n%s", out)
	}
	predicted, actual := predictedTotalTime(out)
	if predicted <= 0 || actual <= 0 || predicted > 3*actual || actual > 3*predicted {
		t.Errorf("predicted total time %v against %v taken", predicted, actual)
	}
	// The guest's slowdown, predicted for every mode and against the
	// outcome.
	if !strings.Contains(out, "  guest slowed\n") || !regexp.MustCompile(`predicted against outcome: .*, guest slowed (<1|\d+)% against (<1|\d+)%, downtime`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^guest slowed +(<1|\d+)% of its vCPU time while it ran \(throttle .*, post-copy faults .*, over its one vCPU\)$`).MatchString(out) {
		t.Errorf("the guest's slowdown is not predicted, or not against the outcome:\n%s", out)
	}
	if _, _, err := runApp(t, "migrate", "--qmp", "unix:"+src.sock, "--to", "tcp:192.0.2.7:4444", "--mode", "auto"); err == nil ||
		!strings.Contains(err.Error(), "--mode auto needs --bandwidth") {
		t.Errorf("auto without a bandwidth, to another host: %v", err)
	}
}

// TestMigrateAutoNoCap: to a destination on this host, auto needs no
// --bandwidth: the engine's own pace, which it measures, sets the rate.
func TestMigrateAutoNoCap(t *testing.T) {
	if testing.Short() {
		t.Skip("boots QEMUs; skipped in short mode")
	}
	_, _, out, _ := migrateQEMUCLI(t, "--mode", "auto", "--observe", "10")
	t.Log("\n" + out)
	for _, want := range []string{"whose CPU moved ", ", no cap):", "auto chose ", "verified         true", "predicted against outcome: total time "} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	// Held to a factor of three, as TestMigrateAuto's.
	predicted, actual := predictedTotalTime(out)
	if predicted <= 0 || actual <= 0 || predicted > 3*actual || actual > 3*predicted {
		t.Errorf("predicted total time %v against %v taken", predicted, actual)
	}
}

// migrateQEMUCLI runs pagecast migrate with args from a 32 MiB TCG guest
// running a hot set to a QEMU waiting for pagecast's engine, and checks
// that the destination says it verified its memory and runs the guest.
// destQMP, among migrateQEMUCLI's args, stands for the destination's QMP socket.
const destQMP = "{dest-qmp}"

func migrateQEMUCLI(t *testing.T, args ...string) (src, dst *qemuRun, stdout, stderr string) {
	t.Helper()
	src = startQEMURun(t, "--memory", "32M", "--workload", "hotset:hot=1024,p=0.95,delay=25000")
	to := "tcp:" + freeAddr(t)
	dst = startQEMURun(t, "--memory", "32M", "--incoming", to)
	args = slices.Clone(args)
	for i, a := range args {
		if a == destQMP {
			args[i] = "unix:" + dst.sock
		}
	}
	cmd := exec.Command(binary, append([]string{"--log-level", "warn", "migrate", "--qmp", "unix:" + src.sock, "--to", to, "--quiet"}, args...)...)
	var errOut bytes.Buffer
	cmd.Stderr = &errOut
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("pagecast migrate: %v\n%s\n%s", err, out, errOut.String())
	}
	dst.saysAfterMigration(t, "migration received, memory verified; guest running")
	return src, dst, string(out), errOut.String()
}

// predictedTotalTime reads the total times off migrate's "predicted
// against outcome" line; zero where it is missing.
func predictedTotalTime(out string) (predicted, actual time.Duration) {
	const prefix = "predicted against outcome: total time "
	if i := strings.Index(out, prefix); i >= 0 {
		var ps, as string
		fmt.Sscanf(out[i+len(prefix):], "%s against %s", &ps, &as)
		predicted, _ = time.ParseDuration(ps)
		actual, _ = time.ParseDuration(as)
	}
	return predicted, actual
}

// TestVMRunQEMUCleanup: vm run --monitor qemu removes its work directory
// (the guest's RAM on /dev/shm) on SIGHUP, as on SIGINT; one a SIGKILL
// left goes when the next QEMU VM starts.
func TestVMRunQEMUCleanup(t *testing.T) {
	if testing.Short() {
		t.Skip("boots QEMU; skipped in short mode")
	}
	workDir := func(r *qemuRun) string {
		dir := qemuWorkDir(r.qemuPID)
		if dir == "" {
			t.Fatalf("QEMU %d has no mem-path=DIR/ram on its command line", r.qemuPID)
		}
		return dir
	}
	hup := startQEMURun(t, "--memory", "16M", "--workload", "idle")
	dir := workDir(hup)
	hup.cmd.Process.Signal(syscall.SIGHUP)
	select {
	case <-hup.exited:
	case <-time.After(10 * time.Second):
		t.Fatal("vm run did not stop on SIGHUP")
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("vm run left its work directory %s after SIGHUP (%v)", dir, err)
	}

	killed := startQEMURun(t, "--memory", "16M", "--workload", "idle")
	dir = workDir(killed)
	killed.cmd.Process.Kill()
	<-killed.exited
	for deadline := time.Now().Add(10 * time.Second); syscall.Kill(killed.qemuPID, 0) == nil; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("QEMU (pid %d) outlived its vm run's SIGKILL", killed.qemuPID)
		}
	}
	os.Remove(killed.sock) // a SIGKILL leaves it; vm run takes a stale one over
	if _, err := os.Stat(filepath.Join(dir, "ram")); err != nil {
		// Another test's QEMU, started meanwhile, swept it already.
		t.Logf("after SIGKILL the guest's RAM file is gone already (%v)", err)
	}
	startQEMURun(t, "--memory", "16M", "--workload", "idle")
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("the work directory %s a SIGKILL left is still there after the next VM started (%v)", dir, err)
	}
}

// TestVMRunClosedOutput: a vm run whose stdout and stderr are a pipe
// nobody reads any more (a logger gone, "| head -1") keeps its guest
// running, and cleans up when stopped: the Go runtime's SIGPIPE ended it,
// its QEMU with it, and left the guest's RAM on /dev/shm (walk 61).
func TestVMRunClosedOutput(t *testing.T) {
	if testing.Short() {
		t.Skip("boots QEMU; skipped in short mode")
	}
	testutil.RequiresQEMU(t)
	sock := filepath.Join(t.TempDir(), "qmp.sock")
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	cmd := exec.Command(binary, "vm", "run", "--monitor", "qemu", "--accel", "tcg", "--memory", "16M", "--workload", "idle", "--qmp", "unix:"+sock)
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer cmd.Process.Kill()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		select {
		case err := <-exited:
			t.Fatalf("vm run with its output closed ended: %v", err)
		default:
		}
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("vm run with its output closed never served QMP")
		}
	}
	if st := qmpState(t, sock); st != "running" {
		t.Fatalf("the guest is %s, want running", st)
	}
	dir := ""
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		if b, _ := os.ReadFile(p); bytes.Contains(b, []byte("qemu-system")) && bytes.Contains(b, []byte(stagedQMP(sock))) { // where QEMU listens, moved to sock once the guest is up
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
			dir = qemuWorkDir(pid)
		}
	}
	if dir == "" {
		t.Fatal("no QEMU of this vm run found")
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Fatal("vm run did not stop on SIGTERM")
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("vm run left its work directory %s (%v)", dir, err)
	}
}

// TestFailureClosedOutput: a command that holds a guest and fails with its
// output closed exits 1, as documented, not by SIGPIPE (141) as its error
// is printed (walk 68).
func TestFailureClosedOutput(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	cmd := exec.Command(binary, "migrate", "--qmp", "unix:"+filepath.Join(t.TempDir(), "none.sock"), "--to", "tcp:127.0.0.1:1")
	cmd.Stdout, cmd.Stderr = w, w
	err = cmd.Run()
	w.Close()
	if code := cmd.ProcessState.ExitCode(); code != 1 {
		t.Errorf("migrate failing with its output closed: %v, exit status %d, want 1", err, code)
	}
}

// TestThrottleUnprivileged: a user other than root, whose pagecast may not
// make the cgroup that throttles QEMU's vCPU threads, is refused throttle
// before any round with why (it failed after the rounds had run, "mkdir
// /sys/fs/cgroup/cpu/pagecast-N: permission denied"), and auto leaves
// throttle out, saying so (it chose it, and failed; walk 61).
func TestThrottleUnprivileged(t *testing.T) {
	if testing.Short() {
		t.Skip("boots QEMUs; skipped in short mode")
	}
	testutil.RequiresQEMU(t)
	setpriv, err := exec.LookPath("setpriv")
	if err != nil || os.Geteuid() != 0 {
		t.Skip("needs root and setpriv (util-linux) to run pagecast as another user")
	}
	nobody := func(args ...string) *exec.Cmd {
		return exec.Command(setpriv, append([]string{"--reuid=65534", "--regid=65534", "--clear-groups", binary}, args...)...)
	}
	dir := t.TempDir()
	for _, d := range []string{dir, filepath.Dir(dir)} { // t.TempDir's are 0700
		if err := os.Chmod(d, 0o777); err != nil {
			t.Fatal(err)
		}
	}
	sock := filepath.Join(dir, "src.sock")
	src := nobody("vm", "run", "--monitor", "qemu", "--accel", "tcg", "--memory", "32M", "--workload", "hotset:delay=25000", "--qmp", "unix:"+sock)
	var srcOut syncBuffer
	src.Stdout, src.Stderr = &srcOut, &srcOut
	if err := src.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		src.Process.Signal(os.Interrupt)
		src.Wait()
	})
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(srcOut.String(), "guest up:"); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("vm run as nobody never brought its guest up:\n%s", srcOut.String())
		}
	}
	to := "tcp:" + freeAddr(t)
	startQEMURun(t, "--memory", "32M", "--incoming", to)
	out, err := nobody("migrate", "--qmp", "unix:"+sock, "--to", to, "--mode", "throttle", "--bandwidth", "32MiB/s", "--quiet").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "--mode throttle: pagecast slows QEMU's vCPU threads through a cgroup it makes in") ||
		!strings.Contains(string(out), "run pagecast as root") || strings.Contains(string(out), "round") {
		t.Errorf("throttle as nobody: %v\n%s", err, out)
	}
	if st := qmpState(t, sock); st != "running" {
		t.Fatalf("the source is %s after throttle was refused", st)
	}
	out, err = nobody("migrate", "--qmp", "unix:"+sock, "--to", to, "--mode", "auto", "--observe", "3", "--bandwidth", "32MiB/s", "--quiet").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "pagecast: auto: throttle left out: ") || strings.Contains(string(out), "auto chose throttle") ||
		!strings.Contains(string(out), "verified         true") {
		t.Errorf("auto as nobody: %v\n%s", err, out)
	}
}

// TestIncomingPlainTCPWarns: a destination waiting in plain TCP on an
// address other hosts may reach says that whoever connects first may send
// it a guest; one on loopback does not (walk 61).
func TestIncomingPlainTCPWarns(t *testing.T) {
	if testing.Short() {
		t.Skip("boots QEMUs; skipped in short mode")
	}
	const warning = "waiting in plain TCP on an address other hosts may reach"
	_, port, _ := net.SplitHostPort(freeAddr(t))
	open := startQEMURun(t, "--memory", "16M", "--incoming", "tcp:0.0.0.0:"+port)
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(open.stderr.String(), warning); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("a destination on 0.0.0.0 in plain TCP did not warn:\n%s", open.stderr.String())
		}
	}
	local := startQEMURun(t, "--memory", "16M", "--incoming", "tcp:"+freeAddr(t))
	time.Sleep(200 * time.Millisecond)
	if strings.Contains(local.stderr.String(), warning) {
		t.Errorf("a destination on loopback warned:\n%s", local.stderr.String())
	}
}

// TestDemoInterrupted: an interrupted demo says so, and stops its QEMUs
// and removes their work directories (each one's guest RAM on /dev/shm).
func TestDemoInterrupted(t *testing.T) {
	testutil.RequiresQEMU(t)
	if testing.Short() {
		t.Skip("boots QEMUs; skipped in short mode")
	}
	cmd, out, done := startBinary(t, "--log-level", "warn", "demo", "--monitor", "qemu", "--accel", "tcg", "--duration", "3s", "--memory", "32M")
	// The demo's QEMUs, once one runs: their pids and work directories.
	dirs := map[int]string{}
	for deadline := time.Now().Add(60 * time.Second); len(dirs) == 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no QEMU of the demo's in 60 s:\n%s", out.String())
		}
		procs, _ := filepath.Glob("/proc/[0-9]*/stat")
		for _, p := range procs {
			stat, err := os.ReadFile(p)
			if err != nil {
				continue
			}
			f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
			if len(f) < 2 || f[1] != strconv.Itoa(cmd.Process.Pid) {
				continue
			}
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
			if dir := qemuWorkDir(pid); dir != "" {
				dirs[pid] = dir
			}
		}
	}
	cmd.Process.Signal(os.Interrupt)
	select {
	case err := <-done:
		if err == nil {
			t.Fatalf("interrupted demo exited 0:\n%s", out.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("demo still runs 30 s after SIGINT:\n%s", out.String())
	}
	if !strings.Contains(out.String(), "interrupted: the demo's VMs are stopped and its files removed") {
		t.Errorf("the demo's output does not say it was interrupted:\n%s", out.String())
	}
	for pid, dir := range dirs {
		if !proc.Gone(pid) {
			t.Errorf("QEMU %d outlived the interrupted demo", pid)
		}
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("the interrupted demo left %s (%v)", dir, err)
		}
	}
}

// TestDemoInterruptedWatching: a demo interrupted while it watches the
// guest stops at once, says so and exits non-zero; it watched on for the
// whole --duration and, with --no-migrate, exited 0 (found by a review
// walk).
func TestDemoInterruptedWatching(t *testing.T) {
	testutil.RequiresQEMU(t)
	if testing.Short() {
		t.Skip("boots a QEMU; skipped in short mode")
	}
	cmd, out, done := startBinary(t, "--log-level", "warn", "demo", "--monitor", "qemu", "--accel", "tcg", "--duration", "2m", "--no-migrate", "--memory", "32M")
	for deadline := time.Now().Add(90 * time.Second); !strings.Contains(out.String(), "hottest 1 MiB regions"); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("the demo did not begin its watch in 90 s:\n%s", out.String())
		}
	}
	time.Sleep(time.Second) // a line or two
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-done:
		if err == nil {
			t.Errorf("a demo interrupted while watching exited 0:\n%s", out.String())
		}
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("the demo still watched 20 s after SIGTERM:\n%s", out.String())
	}
	if !strings.Contains(out.String(), "interrupted: the demo's VMs are stopped and its files removed") {
		t.Errorf("the demo's output does not say it was interrupted:\n%s", out.String())
	}
}

// qemuWorkDir is where QEMU process pid keeps its guest RAM
// (mem-path=DIR/ram on its command line), "" if it has none.
func qemuWorkDir(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if m := regexp.MustCompile(`mem-path=([^,\x00]+)/ram`).FindSubmatch(b); m != nil {
		return string(m[1])
	}
	return ""
}

// startHandQEMU starts QEMU under TCG as a user would, with the plugin
// that `pagecast plugin --memory pluginMem` prints and a guest RAM of mem,
// writing; it returns QEMU (its Stderr a *bytes.Buffer) and its QMP
// socket once that listens.
func startHandQEMU(t *testing.T, pluginMem, mem string) (*exec.Cmd, string) {
	t.Helper()
	testutil.RequiresQEMU(t)
	if testing.Short() {
		t.Skip("boots QEMU; skipped in short mode")
	}
	dir := t.TempDir()
	b, err := exec.Command(binary, "plugin", "--dir", dir, "--memory", pluginMem).CombinedOutput()
	if err != nil {
		t.Fatalf("pagecast plugin: %v\n%s", err, b)
	}
	m := regexp.MustCompile(`-plugin (\S+)`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("pagecast plugin printed no -plugin option:\n%s", b)
	}
	kernel := filepath.Join(dir, "guest.elf")
	if err := os.WriteFile(kernel, guest.Image(), 0o644); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "qmp.sock")
	w, _ := guest.ParseWorkload("hotset:hot=512,p=0.9,delay=5000")
	q := exec.Command("qemu-system-x86_64", "-accel", "tcg", "-m", mem, "-nographic", "-nodefaults",
		"-kernel", kernel, "-append", w.Cmdline(1), "-plugin", string(m[1]), "-qmp", "unix:"+sock+",server=on,wait=off")
	q.Stderr = new(bytes.Buffer)
	if err := q.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		q.Process.Signal(syscall.SIGTERM)
		q.Wait()
	})
	waitSocket(t, sock)
	return q, sock
}

// TestProfilePluginTooSmall: a plugin sized for less than the guest's RAM
// is refused, naming both sizes and the pages= to give, and no trace is
// written (a 64 MiB plugin in a 256 MiB guest recorded a quarter of it
// under a trace header claiming 256 MiB, without a word).
func TestProfilePluginTooSmall(t *testing.T) {
	_, sock := startHandQEMU(t, "16M", "64M")
	trace := filepath.Join(t.TempDir(), "small.pct")
	out, err := exec.Command(binary, "--log-level", "warn", "profile", "--qmp", "unix:"+sock, "--duration", "1s", "-o", trace).CombinedOutput()
	if err == nil {
		t.Fatalf("profile of a 64 MiB guest through a 16 MiB plugin succeeded:\n%s", out)
	}
	for _, want := range []string{"pages=4096 (16M)", "the guest has 64M", "pages=16384", "pagecast plugin --memory 64M"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("profile's refusal lacks %q:\n%s", want, out)
		}
	}
	if _, err := os.Stat(trace); err == nil {
		t.Errorf("a refused profile wrote %s", trace)
	}
}

// TestProfilePIDOfAnotherVM: --pid must be the VM behind --qmp (its vCPU
// threads are the process's): another process is refused, naming both,
// and the right one profiles. (Another VM's pid was taken as given: its
// writes were recorded under the first VM's size and pid.)
func TestProfilePIDOfAnotherVM(t *testing.T) {
	q, sock := startHandQEMU(t, "32M", "32M")
	other := os.Getpid() // not a VM, but a process that runs
	trace := filepath.Join(t.TempDir(), "wrongpid.pct")
	out, err := exec.Command(binary, "--log-level", "warn", "profile", "--qmp", "unix:"+sock, "--pid", fmt.Sprint(other),
		"--duration", "1s", "-o", trace).CombinedOutput()
	want := fmt.Sprintf("--pid %d is not the VM behind the QMP socket: that VM is process %d", other, q.Process.Pid)
	if err == nil || !strings.Contains(string(out), want) {
		t.Errorf("profile --pid of another process: %v, want %q:\n%s", err, want, out)
	}
	if _, err := os.Stat(trace); err == nil {
		t.Errorf("a refused profile wrote %s", trace)
	}
	out, err = exec.Command(binary, "--log-level", "warn", "profile", "--qmp", "unix:"+sock, "--pid", fmt.Sprint(q.Process.Pid),
		"--duration", "1s", "-q").CombinedOutput()
	if err != nil {
		t.Errorf("profile --pid of the VM itself: %v\n%s", err, out)
	}
}

// TestProfileMessages: --pid of a TCG QEMU without --qmp says that --pid
// alone works only under KVM (it said to give the VMM's id, which it was),
// and an --out that cannot be created fails before profile says it
// profiles (it said "profiling qemu VM", then failed).
func TestProfileMessages(t *testing.T) {
	q, sock := startHandQEMU(t, "32M", "32M")
	out, err := exec.Command(binary, "--log-level", "warn", "profile", "--pid", fmt.Sprint(q.Process.Pid), "--memory", "32M", "--duration", "1s").CombinedOutput()
	for _, want := range []string{fmt.Sprintf("process %d is QEMU", q.Process.Pid), "--pid without --qmp works only for a VM under KVM", "--qmp"} {
		if err == nil || !strings.Contains(string(out), want) {
			t.Errorf("profile --pid of a TCG QEMU: %v, output lacks %q:\n%s", err, want, out)
		}
	}
	if strings.Contains(string(out), "give the VMM's process id") {
		t.Errorf("profile --pid of the VMM asks for the VMM's process id:\n%s", out)
	}

	out, err = exec.Command(binary, "--log-level", "warn", "profile", "--qmp", "unix:"+sock, "--duration", "1s", "--out", "/nonexistent/x.pct").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "/nonexistent/x.pct") || strings.Contains(string(out), "profiling") {
		t.Errorf("profile --out /nonexistent/x.pct: %v, want only its error:\n%s", err, out)
	}
}

// TestStaleAreaRemoved: a QEMU killed with SIGKILL cannot remove its
// plugin area (135 KB for 256 MiB, left in /dev/shm for good); the next
// `pagecast plugin` removes it.
func TestStaleAreaRemoved(t *testing.T) {
	q, _ := startHandQEMU(t, "32M", "32M")
	shm := tcg.DefaultShm(q.Process.Pid)
	defer os.Remove(shm)
	deadline := time.Now().Add(10 * time.Second)
	for { // the plugin writes its magic once QEMU runs
		if a, err := tcg.Open(shm); err == nil {
			a.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no plugin area %s in 10s", shm)
		}
		time.Sleep(20 * time.Millisecond)
	}
	q.Process.Kill()
	q.Wait()
	if _, err := os.Stat(shm); err != nil {
		t.Fatalf("a QEMU killed with SIGKILL removed its area (the plugin cannot): %v", err)
	}
	if out, err := exec.Command(binary, "plugin", "--dir", t.TempDir(), "--memory", "32M").CombinedOutput(); err != nil {
		t.Fatalf("pagecast plugin: %v\n%s", err, out)
	}
	if _, err := os.Stat(shm); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s of a killed QEMU still there after pagecast plugin: %v", shm, err)
	}
}

// TestMigrateAreaBusy: --engine auto on a QEMU whose plugin area a
// profile holds refuses, rather than move the guest by QEMU's own
// migration, which loses writes under TCG before QEMU 9.0 (it fell back
// for that passing reason: found by a new-user walk).
func TestMigrateAreaBusy(t *testing.T) {
	src := startQEMURun(t, "--memory", "32M", "--workload", "hotset")
	shm, err := tcg.FindShm(src.qemuPID)
	if err != nil {
		t.Fatal(err)
	}
	a, err := tcg.Open(shm) // as a profile holds it
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	_, stderr, err := runApp(t, "migrate", "--qmp", "unix:"+src.sock, "--to", freeTCP(t), "--mode", "precopy", "--bandwidth", "32MiB/s")
	if err == nil || !strings.Contains(err.Error(), "--engine auto does not fall back to QEMU's own migration for that") || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("migrate with the plugin's area held: %v\n%s", err, stderr)
	}
	a.Close()

	// Held by a pagecast migrate (a stand-in: this test binary, its argv
	// pagecast's), whose engine moves the VM, --engine qemu is refused
	// too: QEMU's migration beside it moved the guest, and the engine ran
	// to its cap and failed (found by a new-user walk). Held by a
	// profile, it is not.
	holder := exec.Command(os.Args[0])
	holder.Args = []string{"pagecast", "--log-level", "warn", "migrate", "--qmp", "unix:" + src.sock}
	holder.Env = append(os.Environ(), holdArea+"="+shm)
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { holder.Process.Kill(); holder.Wait() }()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		a, err := tcg.Open(shm)
		if errors.Is(err, tcg.ErrAreaBusy) {
			break
		}
		if err == nil {
			a.Close() // not held yet
		}
		if time.Now().After(deadline) {
			t.Fatal("the stand-in never held the area")
		}
	}
	_, stderr, err = runApp(t, "migrate", "--qmp", "unix:"+src.sock, "--to", freeTCP(t), "--engine", "qemu", "--mode", "precopy", "--bandwidth", "32MiB/s")
	if err == nil || !strings.Contains(err.Error(), "pagecast's engine is migrating this VM already") {
		t.Fatalf("migrate --engine qemu beside pagecast's engine: %v\n%s", err, stderr)
	}
}

// TestProfileLiftsLeftThrottle: a profile of a QEMU whose vCPUs a killed
// pagecast migrate left throttled lifts the throttle and says so: it
// measured a guest slowed to a twentieth of its pace, unsaid (found by a
// new-user walk).
func TestProfileLiftsLeftThrottle(t *testing.T) {
	src := startQEMURun(t, "--memory", "32M", "--workload", "hotset")
	g, err := qemuguest.Dial(src.sock)
	if err != nil {
		t.Fatal(err)
	}
	tid := g.VCPUThreads()[0]
	g.Close()
	left := filepath.Join(qemuguest.CPUCgroupRoot, fmt.Sprintf("pagecast-%d", src.qemuPID))
	if err := os.Mkdir(left, 0o755); err != nil {
		t.Skipf("no cgroup v1 cpu controller to throttle with: %v", err)
	}
	t.Cleanup(func() { os.Remove(left) })
	for _, w := range [][2]string{{"cpu.cfs_period_us", "20000"}, {"cpu.cfs_quota_us", "1000"}, {"tasks", fmt.Sprint(tid)}} {
		if err := os.WriteFile(filepath.Join(left, w[0]), []byte(w[1]), 0); err != nil {
			t.Fatal(err)
		}
	}
	_, stderr, err := runApp(t, "profile", "--qmp", "unix:"+src.sock, "--duration", "300ms", "--quiet")
	if err != nil {
		t.Fatalf("profile: %v\n%s", err, stderr)
	}
	if !strings.Contains(stderr, "had left this QEMU's vCPUs throttled: the throttle is lifted") {
		t.Errorf("profile said nothing of the throttle left:\n%s", stderr)
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/cgroup", src.qemuPID, tid)); err != nil || strings.Contains(string(b), "pagecast-") {
		t.Errorf("vCPU thread's cgroups after the profile: %s %v", b, err)
	}
}

// TestVMRunQEMUStopWhileMigrating: vm run --monitor qemu stopped (SIGINT)
// while a pagecast migrate moves its guest says so and waits for the
// migration, which completes; QEMU was stopped at once, the guest ended
// and the migration failed, unsaid (found by a new-user walk). Stopped as
// soon as migrate has connected: before pagecast's engine held the
// guest's dirty log, vm run saw no migration and stopped QEMU (CI 45),
// and it never saw QEMU's own migration.
func TestVMRunQEMUStopWhileMigrating(t *testing.T) {
	if testing.Short() {
		t.Skip("boots QEMUs; skipped in short mode")
	}
	for _, tc := range []struct {
		engine, summary, received string
	}{
		{enginePagecast, `verified\s+true`, "migration received, memory verified; guest running"},
		{engineQEMU, `status\s+completed`, "QEMU's migration received; guest running"},
	} {
		t.Run(tc.engine, func(t *testing.T) {
			// An idle guest: the stop comes as migrate connects, and a
			// migration of 32 MiB takes a second (hotset guests ran to
			// the round cap, 20 s and more).
			src := startQEMURun(t, "--memory", "32M", "--workload", "idle")
			to := "tcp:" + freeAddr(t)
			dst := startQEMURun(t, "--memory", "32M", "--incoming", to, "--engine", tc.engine)
			cmd := exec.Command(binary, "--log-level", "warn", "migrate", "--qmp", "unix:"+src.sock, "--to", to, "--quiet",
				"--engine", tc.engine, "--mode", "precopy", "--bandwidth", "32MiB/s")
			out := new(syncBuffer)
			cmd.Stdout, cmd.Stderr = out, out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			// At once, as vm run looks for it: migrate marks the guest
			// once it has connected, before it chooses its engine or
			// connects to the destination.
			for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(5 * time.Millisecond) {
				if _, held := qemuguest.MigrationHolder(src.qemuPID); held {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("migrate never marked the guest as migrating:\n%s", out.String())
				}
			}
			src.cmd.Process.Signal(os.Interrupt)
			if err := cmd.Wait(); err != nil || !regexp.MustCompile(tc.summary).MatchString(out.String()) {
				t.Fatalf("the migration of a guest whose vm run was stopped: %v\n%s\nvm run:\n%s", err, out.String(), src.stderr.String())
			}
			dst.saysAfterMigration(t, tc.received)
			select {
			case <-src.exited:
			case <-time.After(10 * time.Second):
				t.Fatal("the source's vm run still runs 10 s after its migration ended")
			}
			for _, want := range []string{"migrate --qmp unix:" + src.sock, "is migrating this guest", "the migration has ended (run state postmigrate here); stopping QEMU"} {
				if !strings.Contains(src.stderr.String(), want) {
					t.Errorf("vm run's stderr lacks %q:\n%s", want, src.stderr.String())
				}
			}
		})
	}
}

// TestVMRunQEMUStopDuringQEMUMigration: vm run --monitor qemu stopped
// while QEMU's own migration runs, started by another client than
// pagecast migrate (libvirt, or what a migrate killed with SIGKILL left
// running), waits for it: the stop ended the guest (walk 103).
func TestVMRunQEMUStopDuringQEMUMigration(t *testing.T) {
	if testing.Short() {
		t.Skip("boots QEMUs; skipped in short mode")
	}
	src := startQEMURun(t, "--memory", "32M", "--workload", "idle")
	to := "tcp:" + freeAddr(t)
	dst := startQEMURun(t, "--memory", "32M", "--incoming", to, "--engine", "qemu")
	mon, err := qmpclient.Dial("unix", src.sock, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer mon.Disconnect()
	if err := mon.Connect(); err != nil {
		t.Fatal(err)
	}
	// 32 MiB at 8 MiB/s: some 4 s.
	run(t, mon, "migrate-set-parameters", map[string]any{"max-bandwidth": 8 << 20})
	run(t, mon, "migrate", map[string]any{"uri": to})
	mon.Disconnect()
	src.cmd.Process.Signal(os.Interrupt)
	waitFor(t, "vm run's wait", func() bool {
		return regexp.MustCompile(`QEMU's own migration \(query-migrate: (setup|active)\) is migrating this guest`).MatchString(src.stderr.String())
	})
	dst.saysAfterMigration(t, "QEMU's migration received; guest running")
	select {
	case <-src.exited:
	case <-time.After(15 * time.Second):
		t.Fatalf("the source's vm run still runs 15 s after its migration ended:\n%s", src.stderr.String())
	}
	if !strings.Contains(src.stderr.String(), "the migration has ended (run state postmigrate here); stopping QEMU") {
		t.Errorf("vm run's stderr:\n%s", src.stderr.String())
	}
}

// TestMigrateQEMUSourceStopped: the source QEMU stopped during QEMU's own
// migration (a second signal to its vm run) is said as such by migrate:
// it asked "has its VM exited?", named vm run's internal socket, and
// told what settings to send the QEMU gone (walk 103).
func TestMigrateQEMUSourceStopped(t *testing.T) {
	if testing.Short() {
		t.Skip("boots QEMUs; skipped in short mode")
	}
	src := startQEMURun(t, "--memory", "32M", "--workload", "hotset:delay=25000")
	to := "tcp:" + freeAddr(t)
	startQEMURun(t, "--memory", "32M", "--incoming", to, "--engine", "qemu")
	cmd := exec.Command(binary, "--log-level", "warn", "migrate", "--qmp", "unix:"+src.sock, "--to", to, "--quiet",
		"--engine", "qemu", "--mode", "precopy", "--bandwidth", "4MiB/s")
	out := new(syncBuffer)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "migrate's mark", func() bool { _, held := qemuguest.MigrationHolder(src.qemuPID); return held })
	time.Sleep(time.Second) // QEMU's migration under way
	src.cmd.Process.Signal(os.Interrupt)
	waitFor(t, "vm run's wait", func() bool { return strings.Contains(src.stderr.String(), "is migrating this guest") })
	src.cmd.Process.Signal(os.Interrupt)
	exited, err := waitExit(cmd, 30*time.Second)
	if !exited || err == nil {
		t.Fatalf("migrate with its source stopped: exited %v, %v\n%s", exited, err, out.String())
	}
	want := fmt.Sprintf("the source QEMU (pid %d) exited during the migration, before the switch-over, and the guest with it", src.qemuPID)
	if s := out.String(); !strings.Contains(s, want) || strings.Contains(s, ".booting") || strings.Contains(s, "send it") {
		t.Errorf("migrate's account, want %q and no internal path or settings to send:\n%s", want, s)
	}
}

// TestVMRunQEMUMigrateKilledInSwitchover: a pagecast migrate killed
// (SIGKILL) while its engine holds the guest paused for the switch-over
// leaves QEMU in postmigrate with the guest perhaps nowhere else: vm run
// says so, and a stop then waits for a second signal. It said the
// migration had completed, and a stop ended the only copy of the guest
// (walk 103); so does a new migrate, which said the guest ran on the
// destination (walk 114). QMP cont runs the guest here again.
func TestVMRunQEMUMigrateKilledInSwitchover(t *testing.T) {
	if testing.Short() {
		t.Skip("boots QEMUs; skipped in short mode")
	}
	// stopped: vm run was stopped before the kill, and waited for the
	// migration (it then stopped QEMU, the migrate's mark gone).
	for _, stopped := range []bool{false, true} {
		t.Run(fmt.Sprintf("stopped=%v", stopped), func(t *testing.T) {
			killedInSwitchover(t, stopped)
		})
	}
}

func killedInSwitchover(t *testing.T, stopped bool) {
	src := startQEMURun(t, "--memory", "32M", "--workload", "hotset:hot=1024,p=0.95,delay=25000")
	to := "tcp:" + freeAddr(t)
	startQEMURun(t, "--memory", "32M", "--incoming", to)
	cmd := exec.Command(binary, "--log-level", "warn", "migrate", "--qmp", "unix:"+src.sock, "--to", to, "--quiet",
		"--mode", "precopy", "--bandwidth", "8MiB/s", "--max-rounds", "1")
	out := new(syncBuffer)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if stopped {
		waitFor(t, "migrate's mark", func() bool { _, held := qemuguest.MigrationHolder(src.qemuPID); return held })
		src.cmd.Process.Signal(os.Interrupt)
		waitFor(t, "vm run's wait", func() bool { return strings.Contains(src.stderr.String(), "is migrating this guest") })
	}
	marker := qemu.LockPath("switchover", src.qemuPID)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(time.Millisecond) {
		if _, err := os.Stat(marker); err == nil {
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("migrate never paused the guest for its switch-over:\n%s", out.String())
		}
	}
	cmd.Process.Kill()
	cmd.Wait()
	// Paused, or postmigrate once QEMU saved the guest's state.
	if st := qmpState(t, src.sock); st != "postmigrate" && st != "paused" {
		t.Skipf("the switch-over was not under way when migrate was killed (the source is %s):\n%s", st, out.String())
	}
	warn := "paused this guest for its switch-over and exited before the migration ended"
	waitFor(t, "vm run's warning", func() bool { return strings.Contains(src.stderr.String(), warn) })
	if strings.Contains(src.stderr.String(), "migration out has completed") || strings.Contains(src.stderr.String(), "the migration has ended") {
		t.Errorf("vm run said the migration ended:\n%s", src.stderr.String())
	}
	// A new migrate says the same, not that postmigrate means the guest
	// runs on the destination, which still waits (walk 114).
	if _, stderr, err := runApp(t, "migrate", "--qmp", "unix:"+src.sock, "--to", to, "--mode", "precopy"); err == nil ||
		!strings.Contains(err.Error(), warn) || strings.Contains(err.Error(), "its guest runs on that migration's destination") {
		t.Errorf("migrate again after the kill: %v\n%s", err, stderr)
	}
	if !stopped {
		src.cmd.Process.Signal(os.Interrupt)
	}
	waitFor(t, "vm run's answer to the stop", func() bool {
		return strings.Contains(src.stderr.String(), "stopping QEMU now may end the guest; a second signal stops QEMU anyway")
	})
	select {
	case <-src.exited:
		t.Fatalf("vm run stopped QEMU at the first signal:\n%s", src.stderr.String())
	case <-time.After(1500 * time.Millisecond):
	}
	mon, err := qmpclient.Dial("unix", src.sock, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer mon.Disconnect()
	if err := mon.Connect(); err != nil {
		t.Fatal(err)
	}
	run(t, mon, "cont", nil)
	if st, _ := run(t, mon, "query-status", nil)["status"].(string); st != "running" {
		t.Errorf("after cont the guest is %s, want running here", st)
	}
	mon.Disconnect()
	src.cmd.Process.Signal(os.Interrupt)
	select {
	case <-src.exited:
	case <-time.After(10 * time.Second):
		t.Fatalf("vm run runs on 10 s after a second signal:\n%s", src.stderr.String())
	}
}

// TestEngineQEMUDestNotListening: --engine qemu to a destination QEMU that
// waits with -incoming defer and listens nowhere (here one a pagecast
// receiver stands in front of) is refused saying what to run; QEMU's own
// "Failed to connect … Connection refused" left an operator to guess
// (found by a walk). The source runs on.
func TestEngineQEMUDestNotListening(t *testing.T) {
	if testing.Short() {
		t.Skip("boots QEMUs; skipped in short mode")
	}
	src := startQEMURun(t, "--memory", "32M", "--workload", "hotset:delay=25000")
	to := "tcp:" + freeAddr(t)
	dst := startQEMURun(t, "--memory", "32M", "--incoming", to)
	// Behind a pagecast receiver: migrate-incoming there would fail,
	// the port taken (walk 86); said to start the destination for QEMU's
	// migration, or to take pagecast's engine.
	_, stderr, err := runApp(t, "migrate", "--qmp", "unix:"+src.sock, "--dest-qmp", "unix:"+dst.sock, "--to", to, "--engine", "qemu", "--mode", "precopy")
	if err == nil || !strings.Contains(err.Error(), "waits with -incoming defer, and pagecast (pid ") || !strings.Contains(err.Error(), "a pagecast receiver (vm run --incoming, or pagecast receive), which takes pagecast's engine only") ||
		strings.Contains(err.Error(), "migrate-incoming") ||
		!strings.Contains(err.Error(), "pagecast vm run --monitor qemu --engine qemu --incoming "+to) {
		t.Fatalf("--engine qemu to a destination behind a pagecast receiver: %v\n%s", err, stderr)
	}
	// --to a port nobody listens on: told to make it listen there.
	free := "tcp:" + freeAddr(t)
	_, stderr, err = runApp(t, "migrate", "--qmp", "unix:"+src.sock, "--dest-qmp", "unix:"+dst.sock, "--to", free, "--engine", "qemu", "--mode", "precopy")
	if err == nil || !strings.Contains(err.Error(), "waits with -incoming defer and listens nowhere yet") || !strings.Contains(err.Error(), "migrate-incoming with \"uri\": \""+free) {
		t.Fatalf("--engine qemu to a destination not listening: %v\n%s", err, stderr)
	}

	if st := qmpState(t, src.sock); st != "running" {
		t.Errorf("source is %s after the refusal", st)
	}
}

// TestMigrateMemorySizeMismatch: a destination QEMU (--dest-qmp) whose
// RAM differs from the source's is refused before anything starts, by
// either engine: auto watched the guest for seconds first and pagecast's
// handshake refused it then (walk 49), and QEMU's own migration would end
// the destination QEMU. Both QEMUs run on.
func TestMigrateMemorySizeMismatch(t *testing.T) {
	if testing.Short() {
		t.Skip("boots QEMUs; skipped in short mode")
	}
	src := startQEMURun(t, "--memory", "32M", "--workload", "hotset:delay=25000")
	// Waiting for pagecast's engine (a receiver in front), and for
	// QEMU's own migration (QEMU listening with -incoming).
	to, toQEMU := "tcp:"+freeAddr(t), "tcp:"+freeAddr(t)
	dst := startQEMURun(t, "--memory", "64M", "--incoming", to)
	dstQEMU := startQEMURun(t, "--memory", "64M", "--incoming", toQEMU, "--engine", "qemu")
	for _, tc := range []struct {
		dst  *qemuRun
		args []string
	}{
		{dst, []string{"--to", to, "--mode", "auto"}},
		{dstQEMU, []string{"--to", toQEMU, "--engine", "qemu", "--mode", "precopy"}},
	} {
		_, stderr, err := runApp(t, append([]string{"migrate", "--qmp", "unix:" + src.sock, "--dest-qmp", "unix:" + tc.dst.sock}, tc.args...)...)
		if err == nil || !strings.Contains(err.Error(), "has 64.0 MiB of guest RAM, the source 32.0 MiB") || !strings.Contains(err.Error(), "-m 32M") {
			t.Errorf("%v to a destination of another size: %v\n%s", tc.args, err, stderr)
		}
		if strings.Contains(stderr, "watches") || strings.Contains(stderr, "round") {
			t.Errorf("%v: began before the refusal:\n%s", tc.args, stderr)
		}
		if st := qmpState(t, tc.dst.sock); st != "inmigrate" {
			t.Errorf("%v: the destination is %s after the refusal, want inmigrate (waiting on)", tc.args, st)
		}
	}
	if st := qmpState(t, src.sock); st != "running" {
		t.Errorf("source is %s after the refusals", st)
	}
}

// TestProfileCutShort: a profile given --duration and stopped by a signal
// before it (a job runner's timeout) fails, saying so, and keeps its trace;
// it exited 0 with a summary like a run to its end (walk 59).
func TestProfileCutShort(t *testing.T) {
	if testing.Short() {
		t.Skip("boots QEMU; skipped in short mode")
	}
	vm := startQEMURun(t, "--memory", "32M", "--workload", "hotset:hot=512")
	// vm run says which QEMU runs it (walk 121: QEMU 10 was taken from
	// PATH unsaid).
	if !slices.ContainsFunc(vm.head, regexp.MustCompile(`^QEMU pid \d+ \(\d+\.\d+\.\d+, /\S*qemu-system-x86_64\), `).MatchString) {
		t.Errorf("vm run does not say which QEMU runs the guest:\n%s", strings.Join(vm.head, "\n"))
	}
	out := filepath.Join(t.TempDir(), "cut.pct")
	cmd := exec.Command(binary, "profile", "--qmp", "unix:"+vm.sock, "--duration", "60s", "--epoch", "100ms", "--out", out, "--quiet")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	cmd.Process.Signal(syscall.SIGTERM)
	err := cmd.Wait()
	if code := cmd.ProcessState.ExitCode(); err == nil || code != 1 || !strings.Contains(stderr.String(), "stopped by a signal after ") ||
		!strings.Contains(stderr.String(), "of the 1m0s --duration: trace "+out+" keeps the ") {
		t.Errorf("profile --duration 60s stopped by SIGTERM: exit %d, %v\n%s%s", code, err, stdout.String(), stderr.String())
	}
	meta, epochs, damage, err := trace.ReadFile(out)
	if err != nil || len(epochs) == 0 || len(damage) != 0 {
		t.Errorf("the trace of a profile cut short: %d epochs, damage %v, %v", len(epochs), damage, err)
	}
	// Which guest it was, for simulate's throttle response.
	if meta.Guest() != trace.GuestPagecast {
		t.Errorf("the trace of pagecast's guest under QEMU says guest %q, want %q (extra %v)", meta.Guest(), trace.GuestPagecast, meta.Extra)
	}
}

// TestMigrateQEMUEngineUserPause: a QEMU guest its user pauses with QMP
// stop during pagecast's migration of it arrives paused at the
// destination, as QEMU's own migration (and libvirt) leaves it, and the
// summary says so rather than a pause from the user's stop to the
// destination's RESUME (walk 114: the destination ran it, and the summary
// said the guest paused 3.1 s, the migration's part of it 259 ms). Should
// the migration fail, the guest stays paused on the source, in QEMU's
// paused, not the postmigrate its state's save leaves, which a second
// migrate took for a guest migrated away (walk 117).
func TestMigrateQEMUEngineUserPause(t *testing.T) {
	if testing.Short() {
		t.Skip("boots QEMUs; skipped in short mode")
	}
	testutil.RequiresQEMU(t)
	t.Run("completed", func(t *testing.T) {
		src, dst, stdout, stderr, err := migratePausedMidway(t)
		if err != nil {
			t.Fatalf("pagecast migrate: %v\n%s\n%s", err, stdout, stderr)
		}
		for _, want := range []string{"status           completed", "verified         true",
			"guest            held paused at the destination, as it was stopped on the source during the migration (QMP cont there runs it)"} {
			if !strings.Contains(stdout, want) {
				t.Errorf("summary lacks %q:\n%s", want, stdout)
			}
		}
		if strings.Contains(stdout, "guest paused ") {
			t.Errorf("summary gives a pause from the user's stop:\n%s", stdout)
		}
		dst.saysAfterMigration(t, "migration received, memory verified; guest paused, as it was on the source when it left (stopped there during the migration): QMP cont runs it")
		if st := qmpState(t, dst.sock); st != "paused" {
			t.Fatalf("destination QEMU is %s, want paused, as the source was", st)
		}
		for deadline := time.Now().Add(5 * time.Second); !strings.Contains(dst.stderr.String(), `msg="virtual machine paused"`); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Errorf("vm run does not log its guest paused:\n%s", dst.stderr.String())
				break
			}
		}
		if st := qmpState(t, src.VM().QMPPath); st != "postmigrate" {
			t.Errorf("source QEMU is %s, want postmigrate", st)
		}
		mon, err := dialQMP(dst.sock)
		if err != nil {
			t.Fatal(err)
		}
		defer mon.Disconnect()
		run(t, mon, "cont", nil)
		if st, _ := run(t, mon, "query-status", nil)["status"].(string); st != "running" {
			t.Errorf("destination QEMU is %s after cont, want running", st)
		}
	})
	t.Run("failed", func(t *testing.T) {
		// The destination lacks the source's device, and refuses its
		// state (without --dest-qmp, nothing says so before).
		src, _, stdout, stderr, err := migratePausedMidway(t, "-device", "virtio-rng-pci")
		if err == nil || !strings.Contains(stderr, "(the guest stays on the source, paused, as it was stopped there during the migration; QEMU says paused: QMP cont runs it)") {
			t.Fatalf("pagecast migrate to a destination that refuses the state: %v\n%s\n%s", err, stdout, stderr)
		}
		if st := qmpState(t, src.VM().QMPPath); st != "paused" {
			t.Errorf("source QEMU is %s after the failed migration, want paused", st)
		}
		_, stderr2, err := runApp(t, "migrate", "--qmp", "unix:"+src.VM().QMPPath, "--to", freeTCP(t), "--mode", "precopy")
		if err == nil || !strings.Contains(err.Error(), "virtual machine is paused, not running") {
			t.Errorf("a second migrate: %v\n%s", err, stderr2)
		}
	})
}

// migratePausedMidway migrates a QEMU guest with extra options with
// pagecast's engine to a vm run destination, pausing it with QMP stop on a
// second monitor of its QEMU (migrate holds the first) during round 1.
func migratePausedMidway(t *testing.T, extra ...string) (src *qemuguest.Source, dst *qemuRun, stdout, stderr string, err error) {
	t.Helper()
	user := filepath.Join(t.TempDir(), "user.sock")
	w, _ := guest.ParseWorkload("hotset:hot=1024,p=0.95,delay=25000")
	src, err = qemuguest.StartSource(qemu.Options{Accel: qemu.AccelTCG, MemoryBytes: 32 << 20, Cmdline: w.Cmdline(1), Seed: 1,
		Extra: append([]string{"-qmp", "unix:" + user + ",server=on,wait=off"}, extra...)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	to := "tcp:" + freeAddr(t)
	dst = startQEMURun(t, "--memory", "32M", "--incoming", to)
	cmd := exec.Command(binary, "--log-level", "warn", "migrate", "--qmp", "unix:"+src.VM().QMPPath, "--to", to,
		"--engine", "pagecast", "--mode", "precopy", "--bandwidth", "4MiB/s")
	if len(extra) == 0 {
		cmd.Args = append(cmd.Args, "--dest-qmp", "unix:"+dst.sock)
	}
	var out, errOut syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(time.Minute); !strings.Contains(errOut.String(), "active round 1  sent "); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("round 1 did not begin:\n%s", errOut.String())
		}
	}
	waitSocket(t, user)
	mon, err := dialQMP(user)
	if err != nil {
		t.Fatal(err)
	}
	run(t, mon, "stop", nil)
	mon.Disconnect()
	exited, err := waitExit(cmd, 2*time.Minute)
	if !exited {
		cmd.Process.Kill()
		t.Fatalf("pagecast migrate did not end:\n%s\n%s", out.String(), errOut.String())
	}
	return src, dst, out.String(), errOut.String(), err
}

// TestVMRunQMPExtra: vm run --qmp-extra gives QEMU a second QMP socket,
// which answers while a client (pagecast migrate, for a whole migration)
// holds --qmp's: walk 116 could not send QMP stop to a vm run's guest
// during its migration. pagecast's own monitor refuses it.
func TestVMRunQMPExtra(t *testing.T) {
	if testing.Short() {
		t.Skip("boots QEMU; skipped in short mode")
	}
	extra := filepath.Join(t.TempDir(), "extra.sock")
	vm := startQEMURun(t, "--memory", "32M", "--qmp-extra", "unix:"+extra)
	held, err := dialQMP(vm.sock)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Disconnect()
	if st := qmpState(t, extra); st != "running" {
		t.Errorf("query-status on --qmp-extra while --qmp is held: %q, want running", st)
	}
	run(t, held, "stop", nil)
	if st := qmpState(t, extra); st != "paused" {
		t.Errorf("query-status on --qmp-extra after stop on --qmp: %q, want paused", st)
	}
	held.Disconnect()
	// Stopped, vm run leaves neither socket behind, as QEMU does.
	vm.cmd.Process.Signal(os.Interrupt)
	select {
	case <-vm.exited: // its own Wait, startQEMURun's
	case <-time.After(20 * time.Second):
		t.Fatal("vm run did not stop on SIGINT")
	}
	for _, sock := range []string{vm.sock, extra} {
		if _, err := os.Stat(sock); err == nil {
			t.Errorf("%s left behind", sock)
		}
	}
	_, _, err = runApp(t, "vm", "run", "--monitor", "pagecast", "--qmp-extra", "unix:"+extra+"2")
	if err == nil || !strings.Contains(err.Error(), "--qmp-extra is for --monitor qemu") {
		t.Errorf("--qmp-extra on pagecast's own monitor: %v", err)
	}
}
