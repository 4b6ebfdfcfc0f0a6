package main

import (
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/pagecast/pagecast/qmpclient"
	"github.com/pagecast/pagecast/qmpserver"
)

// TestDemoModes: --modes is read before the demo boots anything, each
// mode once, with precopy (the baseline) migrated first and once.
func TestDemoModes(t *testing.T) {
	got, err := demoModeList(" mecom,predictive,mecom,,precopy ", false, 0)
	if err != nil || !slices.Equal(got, []string{"mecom", "predictive", "precopy"}) {
		t.Fatalf("demoModeList: %q, %v", got, err)
	}
	if b := baselineFirst(got); !slices.Equal(b, []string{"precopy", "mecom", "predictive"}) {
		t.Errorf("baselineFirst(%q) = %q", got, b)
	}
	// auto's choice, precopy, added to modes without it: migrated once.
	p := demoPrediction{}
	p.choice.Mode = "precopy"
	if b := baselineFirst(p.withChoice([]string{"mecom"})); !slices.Equal(b, []string{"precopy", "mecom"}) {
		t.Errorf("a choice of precopy beside --modes mecom migrates %q", b)
	}
	// On QEMU the post-copy modes are QEMU's: those it plans pass.
	if got, err := demoModeList("tsmc,precopy+postcopy,predictive", true, 64<<20); err != nil || len(got) != 3 {
		t.Errorf("QEMU demo modes: %q, %v", got, err)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--modes", "predicitve"}, `migration mode "predicitve"`},
		{[]string{"--modes", ","}, "want at least one mode"},
		// Not told to take --engine pagecast or vm run, which do not
		// apply to the demo (walk 99).
		{[]string{"--monitor", "qemu", "--modes", "predictive+tsmc"}, "predictive+tsmc cannot run on QEMU: post-copy on QEMU is QEMU's own (pagecast's stage 3 cannot pull pages into QEMU's memory), which runs tsmc and precopy+postcopy only; predictive+tsmc needs pagecast's own monitor, under KVM (demo --monitor pagecast)"},
		{[]string{"--monitor", "qemu", "--modes", "tsmc+mecom"}, "tsmc+mecom cannot run on QEMU"},
		{[]string{"--monitor", "qemu", "--modes", "mecom+postcopy"}, "mecom+postcopy cannot run on QEMU"},
		{[]string{"--monitor", "pagecast", "--epoch", "1s"}, "--epoch 1s"},
		{[]string{"--bandwidth", "0"}, "a migration needs a link that moves bytes"},
		{[]string{"--monitor", "qemu", "--bandwidth", "1e30"}, `rate "1e30" is too large`},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			// Told to watch for an hour: an error after booting and
			// watching would come far too late.
			args := append([]string{"demo", "--duration", "1h"}, tc.args...)
			done := make(chan error, 1)
			go func() { _, _, err := runApp(t, args...); done <- err }()
			select {
			case err := <-done:
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("err %v, want %q", err, tc.want)
				}
			case <-time.After(2 * time.Minute):
				t.Fatalf("pagecast %s ran on instead of stopping at its flags", strings.Join(args, " "))
			}
		})
	}
}

// TestVMRunQEMUSocket: vm run --monitor qemu takes over a QMP socket left
// by a process that is gone, as pagecast's own monitor does, and refuses
// a live one or a path that is not a socket, before QEMU starts.
func TestVMRunQEMUSocket(t *testing.T) {
	dir := t.TempDir()
	live := filepath.Join(dir, "live.sock")
	l, err := net.Listen("unix", live)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	// No such directory, or a path too long for a socket: said before
	// QEMU starts (QEMU's bind failed with "connection reset by peer").
	for path, want := range map[string]string{live: "in use by another process", file: "not a socket",
		filepath.Join(dir, "none", "x.sock"):         "its directory: stat " + filepath.Join(dir, "none") + ": no such file or directory",
		filepath.Join(file, "x.sock"):                "not a directory",
		filepath.Join(dir, strings.Repeat("s", 110)): "a unix socket's may be at most 107"} {
		_, _, err := runApp(t, "vm", "run", "--monitor", "qemu", "--qmp", "unix:"+path)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("--qmp unix:%s: err %v, want %q", path, err, want)
		}
	}
	// A stale socket: nobody listens there any more.
	stale := filepath.Join(dir, "stale.sock")
	sl, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	sl.(*net.UnixListener).SetUnlinkOnClose(false)
	sl.Close()
	if err := qmpserver.ClearStaleSocket(stale); err != nil {
		t.Fatalf("stale socket: %v", err)
	}
	if _, err := os.Lstat(stale); !os.IsNotExist(err) {
		t.Errorf("the stale socket is still there (%v)", err)
	}
	// QEMU makes the socket for this user alone, as --qmp says (0700
	// under umask 077; pagecast's monitor makes its own 0600).
	if testing.Short() {
		return
	}
	vm := startQEMURun(t, "--memory", "16M", "--workload", "idle")
	if fi, err := os.Stat(vm.sock); err != nil || fi.Mode().Perm()&0o077 != 0 {
		t.Errorf("QEMU's QMP socket: %v, err %v; want no access for group and others", fi.Mode(), err)
	}
	// A path with "=" and "," (this subtest's directory): QEMU took them
	// for options of -qmp unix:PATH and exited (found by a subtest
	// named stopped=false).
	// --name is QEMU's -name, which profile and migrate take for their
	// vm label (walk 106: refused without --metrics, which QEMU VMs do
	// not take), a comma in it too.
	t.Run("a=b,c", func(t *testing.T) {
		vm := startQEMURun(t, "--memory", "16M", "--workload", "idle", "--name", "web,9")
		if !strings.Contains(vm.sock, "a=b,c") {
			t.Fatalf("the socket's path %s lacks the subtest's name", vm.sock)
		}
		if st := qmpState(t, vm.sock); st != "running" {
			t.Errorf("the guest behind --qmp %s is %s", vm.sock, st)
		}
		mon, err := qmpclient.Open(vm.sock, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer mon.Disconnect()
		app := newApp()
		var got string
		app.Commands = []*cli.Command{{Name: "x", Flags: migrationMetricsFlags(), Action: func(c *cli.Context) error {
			got = vmName(c, vm.sock, mon)
			return nil
		}}}
		if err := app.Run([]string{"pagecast", "x"}); err != nil || got != "web,9" {
			t.Errorf("vm label %q (%v), want QEMU's -name web,9", got, err)
		}
	})
}

func TestReadableBanner(t *testing.T) {
	in := "pagecast-guest v1 workload=hotset cpus=1 write=word delay=0 gate=0 hot=1024 p=58982 seed=1 arena=1024+7136 pages"
	want := "pagecast-guest v1 workload=hotset cpus=1 write=word delay=0 gate=0 hot=1024 p=0.90 seed=1 arena=1024+7136 pages"
	if got := readableBanner(in); got != want {
		t.Errorf("readableBanner:\n got %s\nwant %s", got, want)
	}
}

// TestDemoHelpDefaults: demo --help gives the demo's own defaults, not
// vm run's it starts from (walk 158: it said "default: hotset", which is
// a hot set of 1024 pages written 90% of the time, where the demo's is
// 2048 and 95%).
func TestDemoHelpDefaults(t *testing.T) {
	out, _, err := runApp(t, "demo", "--help")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`(default: "hotset:hot=2048,p=0.95"; under TCG with delay=25000 added)`, `(default: "64M")`} {
		if !strings.Contains(out, want) {
			t.Errorf("demo --help lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "(default: hotset)") {
		t.Errorf("demo --help gives vm run's workload default:\n%s", out)
	}
}
