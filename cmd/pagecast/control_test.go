package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pagecast/pagecast/migrator"
	"github.com/pagecast/pagecast/qemu"
	"github.com/pagecast/pagecast/qmpclient"
)

// controlRun sends one command on --control's socket and decodes its
// return into ret (if not nil); a QMP error comes back as err.
func controlRun(t *testing.T, c *qmpclient.Client, cmd string, args, ret any) error {
	t.Helper()
	return qemu.QMP(c, cmd, args, ret)
}

// startControlled starts migrate from src to to with engine at 1 MiB/s,
// --control on a socket of its own, and returns it with a QMP client of
// that socket once it answers.
func startControlled(t *testing.T, src *qemuRun, to, engine string) (cmd *exec.Cmd, stdout, stderr *syncBuffer, ctl *qmpclient.Client, sock string) {
	t.Helper()
	sock = filepath.Join(t.TempDir(), "control.sock")
	cmd = exec.Command(binary, "--log-level", "warn", "migrate", "--qmp", "unix:"+src.sock, "--to", to, "--engine", engine,
		"--bandwidth", "1MiB/s", "--control", "unix:"+sock, "--json", "--quiet")
	stdout, stderr = new(syncBuffer), new(syncBuffer)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no --control socket within 20 s:\n%s", stderr.String())
		}
	}
	// The socket is made before the migration begins and served once it
	// has: the greeting comes then.
	c, err := qmpclient.Open(sock, 20*time.Second)
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	t.Cleanup(func() { c.Disconnect() })
	return cmd, stdout, stderr, c, sock
}

// TestMigrateControl: with --control, a QEMU source's migration, by
// either engine, takes a new link cap midway (migrate-set-parameters
// max-bandwidth, what virsh migrate-setspeed sends): started at 1 MiB/s,
// the 32 MiB guest goes at more than twice that on average once the cap
// is 256 MiB/s; the downtime limit raised with it is the outcome's;
// query-migrate-parameters reads what is in force, other
// parameters are refused, migrate says the change, and the socket goes
// with migrate. Before it migrate held the VM's QMP socket, QEMU's one
// client, and nothing could change a QEMU source's cap midway.
func TestMigrateControl(t *testing.T) {
	if testing.Short() {
		t.Skip("boots QEMUs; skipped in short mode")
	}
	for _, engine := range []string{engineQEMU, enginePagecast} {
		t.Run(engine, func(t *testing.T) {
			src, _, to := enginePair(t, engine)
			cmd, stdout, stderr, ctl, sock := startControlled(t, src, to, engine)
			var p controlParams
			if err := controlRun(t, ctl, "query-migrate-parameters", nil, &p); err != nil {
				t.Fatal(err)
			}
			if p.MaxBandwidth == nil || *p.MaxBandwidth != 1<<20 || p.DowntimeLimit == nil || *p.DowntimeLimit != 300 {
				t.Errorf("query-migrate-parameters at the start: %+v, want max-bandwidth 1048576 and downtime-limit 300", p)
			}
			var info migrator.Info
			if err := controlRun(t, ctl, "query-migrate", nil, &info); err != nil || info.Status != migrator.StatusActive && info.Status != migrator.StatusSetup {
				t.Errorf("query-migrate: status %q, %v; want setup or active", info.Status, err)
			}
			if err := controlRun(t, ctl, "migrate-set-parameters", map[string]any{"x-pagecast-mode": "mecom"}, nil); err == nil ||
				!strings.Contains(err.Error(), "only max-bandwidth and downtime-limit change during a migration") {
				t.Errorf("a mode midway: %v", err)
			}
			if err := controlRun(t, ctl, "migrate-set-parameters", map[string]any{"downtime-limit": 0}, nil); err == nil {
				t.Error("downtime-limit 0 taken")
			}
			if err := controlRun(t, ctl, "migrate", map[string]any{"uri": to}, nil); err == nil {
				t.Error("migrate taken on --control")
			}
			if err := controlRun(t, ctl, "migrate-set-parameters", map[string]any{"max-bandwidth": 256 << 20, "downtime-limit": 500}, nil); err != nil {
				t.Fatal(err)
			}
			// The same again changes nothing, and is not said again.
			if err := controlRun(t, ctl, "migrate-set-parameters", map[string]any{"max-bandwidth": 256 << 20}, nil); err != nil {
				t.Fatal(err)
			}
			if err := controlRun(t, ctl, "query-migrate-parameters", nil, &p); err != nil || p.MaxBandwidth == nil || *p.MaxBandwidth != 256<<20 || p.DowntimeLimit == nil || *p.DowntimeLimit != 500 {
				t.Errorf("query-migrate-parameters after the change: %+v, %v; want max-bandwidth 268435456 and downtime-limit 500", p, err)
			}
			switch exited, err := waitExit(cmd, 60*time.Second); {
			case !exited:
				t.Fatalf("migrate did not end within a minute of the cap raised:\n%s", stderr.String())
			case err != nil:
				t.Fatalf("migrate: %v\n%s", err, stderr.String())
			}
			o := outcomeOf(t, stdout.String())
			// Judged by the limit in force at the end.
			if o.Status != migrator.StatusCompleted || o.DowntimeLimit != 500 || o.Info == nil || o.Info.RAM == nil || o.Info.TotalTime <= 0 {
				t.Fatalf("outcome: %s", stdout.String())
			}
			// On average over the whole migration, the first moments at
			// 1 MiB/s included.
			rate := float64(o.Info.RAM.Transferred) / (float64(o.Info.TotalTime) / 1000)
			t.Logf("%s: %.1f MiB in %d ms, %.1f MiB/s", engine, float64(o.Info.RAM.Transferred)/(1<<20), o.Info.TotalTime, rate/(1<<20))
			if rate < 2<<20 {
				t.Errorf("the migration went at %.2f MiB/s on average, not above twice the 1 MiB/s it began with", rate/(1<<20))
			}
			if !strings.Contains(stderr.String(), "--control: link cap 256.0 MiB/s, downtime limit 500ms from now on") || strings.Count(stderr.String(), "--control:") != 1 {
				t.Errorf("migrate did not say the change once:\n%s", stderr.String())
			}
			if strings.Contains("\n"+stderr.String(), "\n\npagecast: --control") { // walk 155
				t.Errorf("a blank line before the change said, off a terminal:\n%s", stderr.String())
			}
			if _, err := os.Stat(sock); !os.IsNotExist(err) {
				t.Errorf("--control's socket is left after migrate: %v", err)
			}
		})
	}
}

// TestMigrateControlCancel: migrate_cancel on --control cancels the
// migration as QEMU's does (virsh domjobabort), the guest running on at
// the source, by either engine.
func TestMigrateControlCancel(t *testing.T) {
	if testing.Short() {
		t.Skip("boots QEMUs; skipped in short mode")
	}
	for _, engine := range []string{engineQEMU, enginePagecast} {
		t.Run(engine, func(t *testing.T) {
			src, _, to := enginePair(t, engine)
			cmd, stdout, stderr, ctl, _ := startControlled(t, src, to, engine)
			if err := controlRun(t, ctl, "migrate_cancel", nil, nil); err != nil {
				t.Fatal(err)
			}
			switch exited, err := waitExit(cmd, 30*time.Second); {
			case !exited:
				t.Fatalf("migrate did not end within 30 s of migrate_cancel:\n%s", stderr.String())
			case err == nil:
				t.Fatalf("migrate succeeded after migrate_cancel:\n%s", stdout.String())
			}
			o := outcomeOf(t, stdout.String())
			if o.Status != migrator.StatusCancelled || o.Guest != guestSource {
				t.Errorf("outcome after migrate_cancel: %s", stdout.String())
			}
			if st := qmpState(t, src.sock); st != "running" {
				t.Errorf("source after migrate_cancel: %s, want running", st)
			}
		})
	}
}
