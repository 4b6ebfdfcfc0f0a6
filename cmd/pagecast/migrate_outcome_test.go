package main

import (
	"bytes"
	"encoding/json"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pagecast/pagecast/migrator"
)

// outcomeOf reads migrate --json's stdout: exactly one JSON object, and
// nothing else.
func outcomeOf(t *testing.T, stdout string) migrationOutcome {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(stdout))
	dec.DisallowUnknownFields()
	var o migrationOutcome
	if err := dec.Decode(&o); err != nil {
		t.Fatalf("migrate --json's stdout is not its JSON outcome: %v\n%s", err, stdout)
	}
	if rest, _ := dec.Token(); rest != nil || dec.More() {
		t.Fatalf("migrate --json's stdout holds more than one object:\n%s", stdout)
	}
	return o
}

// TestMigrateJSON: migrate --json prints how the migration ended as one
// JSON object on stdout, the text for people (auto's predictions among
// it) on stderr: completed, with the mode auto chose, and a migrate
// refused before it began.
func TestMigrateJSON(t *testing.T) {
	if testing.Short() {
		t.Skip("boots QEMUs; skipped in short mode")
	}
	src, _, stdout, stderr := migrateQEMUCLI(t, "--mode", "auto", "--observe", "5", "--bandwidth", "32MiB/s", "--dest-qmp", destQMP, "--json")
	o := outcomeOf(t, stdout)
	t.Logf("stdout: %s", stdout)
	if o.Status != migrator.StatusCompleted || o.Error != "" || o.Engine != enginePagecast || o.Guest != guestDestination || o.DowntimeLimit != 300 ||
		o.Source != "unix:"+src.sock || !strings.HasPrefix(o.Destination, "tcp:") {
		t.Errorf("outcome: status %q, error %q, engine %q, guest %q, downtime limit %d; want completed, none, %s, destination, 300", o.Status, o.Error, o.Engine, o.Guest, o.DowntimeLimit, enginePagecast)
	}
	i := o.Info
	if i == nil || i.RAM == nil || i.RAM.Total < 32<<20 || i.RAM.Transferred == 0 || i.Pagecast == nil || !i.Pagecast.Verified {
		t.Fatalf("outcome's query-migrate: %+v", i)
	}
	if a := i.Pagecast.Auto; a == nil || a.Mode != o.Mode || o.Mode == "auto" || len(a.Predictions) == 0 {
		t.Errorf("mode %q; auto's report %+v: want the mode auto chose, with its predictions", o.Mode, a)
	}
	if o.GuestPaused == nil || *o.GuestPaused <= 0 {
		t.Errorf("guest paused %v: --dest-qmp was given", o.GuestPaused)
	}
	if o.QEMU != nil {
		t.Errorf("QEMU's plan in pagecast's engine's outcome: %+v", o.QEMU)
	}
	// The modes auto cannot run here are named (walk 86: tsmc's absence
	// under --prefer downtime went unsaid).
	for _, want := range []string{"auto chose ", "predicted from ", "auto: tsmc, predictive+tsmc", "left out: they need post-copy", "QEMU's runs tsmc and precopy+postcopy",
		"predicted against outcome: total time "} { // the outcome beside the prediction (walk 121: in the JSON alone)
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}

	// The source now in postmigrate: refused before anything began, its
	// guest elsewhere (it said source: walk 128).
	cmd := exec.Command(binary, "migrate", "--qmp", "unix:"+src.sock, "--to", "tcp:"+freeAddr(t), "--json", "--quiet")
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err == nil {
		t.Fatalf("migrating a source in postmigrate succeeded:\n%s", out.String())
	}
	o = outcomeOf(t, out.String())
	if o.Status != migrator.StatusNone || o.Error == "" || o.Info != nil || !strings.Contains(errOut.String(), o.Error) || o.Guest != guestElsewhere ||
		o.Source != "unix:"+src.sock {
		t.Errorf("refused migrate: status %q, error %q, query-migrate %+v; stderr:\n%s", o.Status, o.Error, o.Info, errOut.String())
	}
	// Auto to nobody: the source's state is said first, not that nothing
	// listens (walk 141).
	_, stderr, err := runApp(t, "migrate", "--qmp", "unix:"+src.sock, "--to", "tcp:"+freeAddr(t), "--mode", "auto", "--bandwidth", "32MiB/s")
	if err == nil || !strings.Contains(err.Error(), "postmigrate: it has migrated away already") || strings.Contains(err.Error(), "nothing to migrate to") {
		t.Errorf("auto from a source in postmigrate to nobody: %v; stderr:\n%s", err, stderr)
	}
}

// TestMigrateJSONRefused: migrate --json prints its outcome, none begun,
// for a command line refused before anything was tried: a flag missing,
// unknown, of a bad value, or checked by migrate itself (review 63: it
// printed nothing on stdout for the first three).
func TestMigrateJSONRefused(t *testing.T) {
	for _, args := range [][]string{
		{"--json", "--qmp", "unix:/nonexistent.sock"},
		{"--json", "--qmp", "unix:/nonexistent.sock", "--to", "tcp:127.0.0.1:1", "--downtime-limit", "abc"},
		{"--bogus", "--json", "--qmp", "unix:/nonexistent.sock"},
		{"--qmp", "unix:/nonexistent.sock", "--to", "tcp:127.0.0.1:1", "--max-rounds", "-1", "--json"},
		{"--qmp", "unix:/nonexistent.sock", "--to", "tcp:127.0.0.1:1", "--json"},
		{"--json=1", "--bogus", "--qmp", "unix:/nonexistent.sock"},
		{"--json=false", "--json", "--bogus"}, // the last wins (review 66)
	} {
		stdout, stderr, err := runApp(t, append([]string{"migrate"}, args...)...)
		if err == nil {
			t.Errorf("migrate %q succeeded", args)
			continue
		}
		o := outcomeOf(t, stdout)
		if o.Status != "none" || o.Error != oneLine(err) || o.Info != nil || o.Guest != guestSource {
			t.Errorf("migrate %q: %+v, error %v, stderr %q", args, o, err, stderr)
		}
		// A command line that parsed names the VM and the destination
		// (walk 83: a script running several had to tell them apart).
		if parsed := slices.Contains(args, "--to") && !slices.Contains(args, "abc"); parsed &&
			(o.Source != "unix:/nonexistent.sock" || o.Destination != "tcp:127.0.0.1:1") {
			t.Errorf("migrate %q: source %q, destination %q", args, o.Source, o.Destination)
		}
	}
	// Refused once the command line was read, by a source not there: what
	// it asked is said (walk 154: no mode, engine or limit).
	stdout, _, err := runApp(t, "migrate", "--json", "--qmp", "unix:/nonexistent.sock", "--to", "tcp:127.0.0.1:1",
		"--mode", "predictive", "--engine", "pagecast", "--downtime-limit", "150ms")
	if o := outcomeOf(t, stdout); err == nil || o.Mode != "predictive" || o.Engine != "pagecast" || o.DowntimeLimit != 150 {
		t.Errorf("a source not there: %s (%v), want mode predictive, engine pagecast, downtime-limit 150", stdout, err)
	}
}

// TestMigrateJSONNotAsked: --json given as another flag's value, or as
// false, is not asked for (review 64).
func TestMigrateJSONNotAsked(t *testing.T) {
	for _, args := range [][]string{
		{"--qmp", "--json", "--bogus"},
		{"--json=false", "--bogus"},
		{"--json", "--json=false", "--bogus"},
	} {
		stdout, _, err := runApp(t, append([]string{"migrate"}, args...)...)
		if err == nil || stdout != "" {
			t.Errorf("migrate %q: %v, stdout %q; want an error and nothing on stdout", args, err, stdout)
		}
	}
}

// TestSaneDowntime: a QEMU downtime longer than the whole migration (QEMU
// 7.2's clock since boot after a post-copy: walk 78) gives way to the
// guest's own pause where it is known, and is said either way; a sane one
// stays.
func TestSaneDowntime(t *testing.T) {
	i := migrator.Info{TotalTime: 4900, Downtime: 50345352}
	if note := saneDowntime(&i, 13*time.Millisecond); i.Downtime != 13 || !strings.Contains(note, "QEMU reported a downtime of 13h59m5.352s, longer than the whole migration (4.9s)") {
		t.Errorf("downtime %d, %q", i.Downtime, note)
	}
	i = migrator.Info{TotalTime: 4900, Downtime: 50345352}
	if note := saneDowntime(&i, -1); i.Downtime != 50345352 || !strings.Contains(note, "give --dest-qmp") {
		t.Errorf("no pause known: downtime %d, %q", i.Downtime, note)
	}
	i = migrator.Info{TotalTime: 4900, Downtime: 12}
	if note := saneDowntime(&i, 13*time.Millisecond); i.Downtime != 12 || note != "" {
		t.Errorf("a sane downtime: %d, %q", i.Downtime, note)
	}
}

// TestUnconfirmedGuest: an unconfirmed migration whose destination said
// its guest runs puts the guest there, said unverified; without that word
// where it is is not known (walk 153).
func TestUnconfirmedGuest(t *testing.T) {
	i := migrator.Info{Status: migrator.StatusCompleted, Pagecast: &migrator.Extra{Unconfirmed: "read: connection reset by peer"}}
	if g, err := unconfirmedGuest(i), unconfirmed(i); g != guestUnknown || err == nil || !strings.Contains(err.Error(), "it runs the guest if the commit reached it") {
		t.Errorf("unconfirmed, no word that the guest runs: guest %s, %v", g, err)
	}
	i.Pagecast.GuestStarted = true
	if g, err := unconfirmedGuest(i), unconfirmed(i); g != guestDestination || err == nil || !strings.Contains(err.Error(), "completed but unverified: the destination said its guest runs") {
		t.Errorf("unconfirmed after the word that the guest runs: guest %s, %v", g, err)
	}
}
