package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pagecast/pagecast/internal/testutil"
	"github.com/pagecast/pagecast/migrator"
)

// TestMigrateSilentSource: a source QEMU whose monitor stops answering
// mid-migration (SIGSTOPped, or its main loop stuck) does not hold
// pagecast migrate past an interrupt: it ends saying the monitor is
// silent and that no cancel was sent. (It was blocked in query-migrate
// for good, SIGINT and SIGTERM doing nothing; found by a review walk.)
func TestMigrateSilentSource(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "src.sock")
	f := testutil.ServeFakeQMP(t, sock, func(cmd string, n int) string {
		switch cmd {
		case "qmp_capabilities", "migrate-set-capabilities", "migrate-set-parameters", "migrate", "migrate_cancel":
			return `{"return":{}}`
		case "query-version":
			return `{"return":{"qemu":{"major":7,"minor":2,"micro":0},"package":"Debian 1:7.2"}}`
		case "query-memory-size-summary":
			return `{"return":{"base-memory":67108864}}`
		case "query-status":
			return `{"return":{"status":"running","running":true}}`
		case "query-migrate":
			switch n {
			case 1:
				return `{"return":{}}` // before migrate: never migrated
			case 2:
				return `{"return":{"status":"active","ram":{"transferred":4096,"remaining":67108864,"total":67108864,"dirty-sync-count":1}}}`
			}
			return "" // the source goes silent
		}
		return `{"error":{"class":"CommandNotFound","desc":"The command ` + cmd + ` has not been found"}}`
	})
	cmd, out, done := startBinary(t, "migrate", "--qmp", "unix:"+sock, "--to", "tcp:"+freeAddr(t), "--quiet")
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		n := 0
		for _, c := range f.Commands() {
			if c == "query-migrate" {
				n++
			}
		}
		if n >= 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no third query-migrate: %v\n%s", f.Commands(), out.String())
		}
	}
	time.Sleep(200 * time.Millisecond)
	cmd.Process.Signal(os.Interrupt)
	select {
	case err := <-done:
		text := out.String()
		if err == nil || !strings.Contains(text, "QEMU's monitor did not answer query-migrate") || !strings.Contains(text, "no migrate_cancel was sent") {
			t.Errorf("pagecast migrate on SIGINT: %v, want exit 1 saying the monitor is silent and no cancel was sent:\n%s", err, text)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("pagecast migrate still running 10 s after SIGINT, blocked on a silent source monitor; commands: %v\noutput:\n%s", f.Commands(), out.String())
	}
}

// TestMigrateSourceSilentInSetup: a source QEMU that greets, answers a
// question or two and then nothing (SIGSTOPped, or stuck) ends migrate in
// setupAnswerWait with a reason naming the question, before anything is
// migrated (walk 107: it was silent for good, --timeout or not).
func TestMigrateSourceSilentInSetup(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "src.sock")
	f := testutil.ServeFakeQMP(t, sock, func(cmd string, n int) string {
		switch cmd {
		case "qmp_capabilities":
			return `{"return":{}}`
		case "query-version":
			return `{"return":{"qemu":{"major":7,"minor":2,"micro":0},"package":"Debian 1:7.2"}}`
		}
		return "" // silent from here on
	})
	defer func(w time.Duration) { setupAnswerWait = w }(setupAnswerWait)
	setupAnswerWait = 300 * time.Millisecond
	start := time.Now()
	_, stderr, err := runApp(t, "migrate", "--qmp", "unix:"+sock, "--to", "tcp:"+freeAddr(t), "--quiet", "--timeout", "1h")
	seen := f.Commands()
	last := seen[len(seen)-1]
	if err == nil || !strings.HasPrefix(err.Error(), "source: QMP socket "+sock+": the monitor did not answer "+last+" in 300ms: is its QEMU stopped (SIGSTOP) or stuck?") ||
		strings.Contains(stderr, "cannot run") {
		t.Fatalf("migrate from a source gone silent after %v: %v\n%s", seen, err, stderr)
	}
	if d := time.Since(start); d > 8*time.Second {
		t.Errorf("it took %v", d)
	}
	for _, c := range seen {
		if c == "migrate" {
			t.Errorf("migrate was sent: %v", seen)
		}
	}
}

// TestMigrateDestinationSilentInSetup: a --dest-qmp that greets and then
// answers nothing ends migrate, said as the destination's, before anything
// is migrated; its checks (the guests' sizes, vCPUs) did not go on unsaid
// without its answers (walk 108).
func TestMigrateDestinationSilentInSetup(t *testing.T) {
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src.sock"), filepath.Join(dir, "dst.sock")
	f := testutil.ServeFakeQMP(t, src, func(cmd string, n int) string {
		switch cmd {
		case "qmp_capabilities", "migrate-set-capabilities", "migrate-set-parameters":
			return `{"return":{}}`
		case "query-version":
			return `{"return":{"qemu":{"major":7,"minor":2,"micro":0},"package":"Debian 1:7.2"}}`
		case "query-cpus-fast":
			return `{"return":[{"cpu-index":0,"thread-id":999999999,"target":"x86_64"}]}` // no such thread: no lock is taken for it
		case "query-memory-size-summary":
			return `{"return":{"base-memory":67108864}}`
		case "query-status":
			return `{"return":{"status":"running","running":true}}`
		case "query-migrate":
			return `{"return":{}}`
		}
		return `{"error":{"class":"CommandNotFound","desc":"The command ` + cmd + ` has not been found"}}`
	})
	testutil.ServeFakeQMP(t, dst, testutil.SilentAfterCapabilities)
	defer func(w time.Duration) { setupAnswerWait = w }(setupAnswerWait)
	setupAnswerWait = 300 * time.Millisecond
	_, stderr, err := runApp(t, "migrate", "--qmp", "unix:"+src, "--dest-qmp", "unix:"+dst, "--to", "tcp:"+freeAddr(t), "--engine", "qemu", "--quiet")
	if err == nil || !strings.HasPrefix(err.Error(), "destination (--dest-qmp): QMP socket "+dst+": the monitor did not answer ") {
		t.Fatalf("migrate to a destination gone silent: %v\n%s", err, stderr)
	}
	for _, c := range f.Commands() {
		if c == "migrate" {
			t.Errorf("migrate was sent: %v", f.Commands())
		}
	}
}

// TestReceiveSilentMonitorInterrupted: pagecast receive attaching to a
// monitor that greeted and then fell silent stops on SIGTERM at once,
// saying nothing was changed (walk 134: it ignored SIGINT and SIGTERM and
// waited for good).
func TestReceiveSilentMonitorInterrupted(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "dst.sock")
	interruptAttaching(t, sock, "stopped while attaching to the QEMU at unix:"+sock+", which had not answered yet: nothing was changed",
		"receive", "--qmp", "unix:"+sock, "--listen", "tcp:"+freeAddr(t))
}

// TestServeCollectorSilentInterrupted: predict serve --collector attaching
// to a monitor that greeted and then fell silent stops on SIGTERM at once,
// as profile does (walk 136: it waited out the monitor's 10 s).
func TestServeCollectorSilentInterrupted(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "vm.sock")
	interruptAttaching(t, sock, "stopped by a signal while attaching to the VM: nothing was served",
		"predict", "serve", "--collector", "unix:"+sock, "--listen", freeAddr(t))
}

// TestMigrateSilentSourceInterrupted: migrate attaching to a source that
// greeted and then fell silent stops on SIGTERM at once, saying nothing
// was migrated (walk 136: it ended by the signal's default action, without
// a word).
func TestMigrateSilentSourceInterrupted(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "src.sock")
	interruptAttaching(t, sock, "interrupted (SIGTERM) before the migration started: nothing was migrated, and the guest is on the source as it was",
		"migrate", "--qmp", "unix:"+sock, "--to", "tcp:"+freeAddr(t), "--mode", "precopy")
}

// interruptAttaching runs pagecast with args against a monitor at sock
// that takes qmp_capabilities and then answers nothing, sends it SIGTERM
// once it has asked its next question, and expects it to end at once, in
// error, saying want.
func interruptAttaching(t *testing.T, sock, want string, args ...string) {
	t.Helper()
	f := testutil.ServeFakeQMP(t, sock, testutil.SilentAfterCapabilities)
	cmd, out, done := startBinary(t, args...)
	name := strings.Join(args[:min(2, len(args))], " ")
	for deadline := time.Now().Add(10 * time.Second); len(f.Commands()) < 2; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s asked nothing past qmp_capabilities: %v\n%s", name, f.Commands(), out.String())
		}
	}
	time.Sleep(200 * time.Millisecond)
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-done:
		if err == nil || !strings.Contains(out.String(), want) {
			t.Errorf("%s on SIGTERM: %v, want exit 1 saying %q:\n%s", name, err, want, out.String())
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("%s still running 5 s after SIGTERM, waiting on a silent monitor; commands: %v\noutput:\n%s", name, f.Commands(), out.String())
	}
}

// TestWithinAndUnlessDone: within gives up a call past its wait with
// migrator.ErrNoAnswer and returns one that answers in time; unlessDone
// gives up once its context is done and releases what the call gives
// later.
func TestWithinAndUnlessDone(t *testing.T) {
	block := make(chan struct{})
	defer close(block)
	if _, err := within(50*time.Millisecond, func() (int, error) { <-block; return 1, nil }); !errors.Is(err, migrator.ErrNoAnswer) {
		t.Errorf("within, a call that does not return: %v, want ErrNoAnswer", err)
	}
	if v, err := within(5*time.Second, func() (int, error) { return 7, nil }); v != 7 || err != nil {
		t.Errorf("within, a call that returns: %d, %v", v, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	later := make(chan struct{})
	released := make(chan int, 1)
	go func() { time.Sleep(20 * time.Millisecond); cancel() }()
	if _, ok, err := unlessDone(ctx, func() (int, error) { <-later; return 3, nil }, func(v int) error { released <- v; return nil }); ok || err != nil {
		t.Errorf("unlessDone, done first: ok %v, err %v", ok, err)
	}
	close(later)
	select {
	case v := <-released:
		if v != 3 {
			t.Errorf("released %d, want 3", v)
		}
	case <-time.After(5 * time.Second):
		t.Error("what the call gave once given up on was not released")
	}
}
