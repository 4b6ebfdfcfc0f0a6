package main

import (
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pagecast/pagecast/migrator"
	"github.com/pagecast/pagecast/simulate"
	"github.com/pagecast/pagecast/trace"
)

// TestOutputThroughLink: -o through a symbolic link writes the file the
// link points to, existing or not, and leaves the link a link.
func TestOutputThroughLink(t *testing.T) {
	good := importTrace(t)
	in := filepath.Join(t.TempDir(), "in.csv")
	if err := os.WriteFile(in, []byte(traceCSV), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []struct {
		name string
		args []string
		want func(t *testing.T, path string)
	}{
		{"export", []string{"trace", "export", good}, func(t *testing.T, path string) {
			if b, err := os.ReadFile(path); err != nil || string(b) != exportedCSV {
				t.Fatalf("%s holds %q (%v), want the exported CSV", path, b, err)
			}
		}},
		{"import", []string{"trace", "import", "--memory", "256M", in}, func(t *testing.T, path string) {
			if _, epochs, _, err := trace.ReadFile(path); err != nil || len(epochs) != 4 {
				t.Fatalf("%s: %d epochs, %v; want the 4 imported", path, len(epochs), err)
			}
		}},
	} {
		for _, existing := range []bool{true, false} {
			t.Run(cmd.name+map[bool]string{true: " existing", false: " dangling"}[existing], func(t *testing.T) {
				dir := t.TempDir()
				if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
					t.Fatal(err)
				}
				target := filepath.Join(dir, "sub", "out")
				if existing {
					if err := os.WriteFile(target, []byte("old\n"), 0o644); err != nil {
						t.Fatal(err)
					}
				}
				link := filepath.Join(dir, "link")
				if err := os.Symlink("sub/out", link); err != nil {
					t.Fatal(err)
				}
				args := append(append([]string(nil), cmd.args[:len(cmd.args)-1]...), "-o", link, cmd.args[len(cmd.args)-1])
				if _, _, err := runApp(t, args...); err != nil {
					t.Fatal(err)
				}
				if fi, err := os.Lstat(link); err != nil || fi.Mode()&fs.ModeSymlink == 0 {
					t.Fatalf("%s is no longer a symbolic link: %v %v", link, fi.Mode(), err)
				}
				cmd.want(t, target)
				if left, _ := filepath.Glob(filepath.Join(dir, "*", "*.tmp")); len(left) != 0 {
					t.Fatalf("temporary files left behind: %v", left)
				}
			})
		}
	}
}

// TestOutputFIFO: -o a FIFO writes into it, for its reader, instead of
// renaming a file over it (the reader got nothing; the FIFO was gone).
func TestOutputFIFO(t *testing.T) {
	good := importTrace(t)
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 1)
	go func() {
		f, err := os.Open(fifo) // waits for the writer
		if err != nil {
			got <- err.Error()
			return
		}
		defer f.Close()
		b, _ := io.ReadAll(f)
		got <- string(b)
	}()
	stdout, _, err := runApp(t, "trace", "export", "-o", fifo, good)
	if err != nil || !strings.HasPrefix(stdout, "exported 7 rows to ") {
		t.Fatalf("export: %v %q", err, stdout)
	}
	if fi, err := os.Lstat(fifo); err != nil || fi.Mode()&fs.ModeNamedPipe == 0 {
		t.Fatalf("%s is no longer a FIFO: %v %v", fifo, fi.Mode(), err)
	}
	select {
	case s := <-got:
		if s != exportedCSV {
			t.Fatalf("the FIFO's reader got %q, want %q", s, exportedCSV)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the FIFO's reader got nothing in 10 s")
	}
}

// TestOutputDirectory: -o a directory is refused before any work, with an
// error that says so (it was rename's "file exists" at the end).
func TestOutputDirectory(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "adir")
	if err := os.Mkdir(out, 0o755); err != nil {
		t.Fatal(err)
	}
	absent := filepath.Join(dir, "absent") // the input is not opened
	for _, args := range [][]string{
		{"trace", "export", "-o", out, absent},
		{"trace", "export", "-o", out + "/", absent},
		{"trace", "import", "--memory", "256M", "-o", out, absent},
	} {
		_, _, err := runApp(t, args...)
		if want := "-o " + args[len(args)-2] + ": is a directory"; err == nil || err.Error() != want {
			t.Errorf("%v: err %v, want %q", args, err, want)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("left %v", entries)
	}
	// A directory that is not there is named as the user gave it, not by
	// the temporary file beside it, with -o, before any work (walk 136:
	// trace import imported, then said "…/x.csv: no such file or
	// directory").
	missing := filepath.Join(dir, "missing", "x.csv")
	for _, args := range [][]string{
		{"trace", "export", "-o", missing, "../../predictor/testdata/hotset.pct"},
		{"trace", "import", "--memory", "256M", "-o", missing, absent},
	} {
		_, _, err := runApp(t, args...)
		want := "-o " + missing + ": its directory: stat " + filepath.Dir(missing) + ": no such file or directory"
		if err == nil || err.Error() != want {
			t.Errorf("%v: err %v, want %q", args, err, want)
		}
	}
}

// TestProgressBarRate: the bar's rate is over the interval since its last
// line, 0 B/s when nothing moved (it repeated the engine's last rate,
// "8.0 MiB/s", for a minute on a link that had stalled).
func TestProgressBarRate(t *testing.T) {
	var out bytes.Buffer
	b := newProgressBar(&out, false)
	at := time.Unix(1000, 0)
	b.now = func() time.Time { return at }
	ram := func(sent uint64) migrator.Info {
		return migrator.Info{Status: migrator.StatusActive, RAM: &migrator.RAMStats{Transferred: sent, Remaining: 32 << 20, Mbps: 8 * 8 * 1.048576}}
	}
	b.update(ram(8 << 20)) // first line: the engine's own rate
	at = at.Add(2 * time.Second)
	b.update(ram(12 << 20)) // 4 MiB in 2 s
	at = at.Add(2 * time.Second)
	b.update(ram(12 << 20)) // nothing
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("progress lines:\n%s", out.String())
	}
	for n, want := range []string{"8.0 MiB/s", "2.0 MiB/s", "0 B/s"} {
		if !strings.HasSuffix(lines[n], "  "+want) {
			t.Errorf("line %d %q, want it to end with %q", n+1, lines[n], want)
		}
	}
}

// TestProgressBarShare: the bar is the share of the guest's memory in
// place at the destination, as virsh migrate --verbose shows it, with
// the rate the guest dirties it at: a migration that does not converge,
// 44 MiB of 64 left round after round, crept to 97% as sent over sent and
// left (walk 106).
func TestProgressBarShare(t *testing.T) {
	var out bytes.Buffer
	b := newProgressBar(&out, false)
	b.update(migrator.Info{Status: migrator.StatusActive, RAM: &migrator.RAMStats{Transferred: 1270 << 20, Remaining: 44 << 20, Total: 64 << 20,
		DirtyPagesRate: 7680, PageSize: 4096, Mbps: 8 * 8 * 1.048576}})
	if line := out.String(); !strings.Contains(line, "]  31% active round 0  sent 1.24 GiB  left 44.0 MiB  8.0 MiB/s  dirtying 30.0 MiB/s") {
		t.Errorf("progress line %q", line)
	}
}

// TestProgressBarHeldBack: where the policy holds pages back, the bar
// says how much, and that their rewrites are not in the dirty rate, which
// counts pages made pending again (walk 163: "dirtying 8.0 KiB/s" in
// predictive where the guest wrote 70 MiB/s); without any held back it
// says nothing of it.
func TestProgressBarHeldBack(t *testing.T) {
	for _, tc := range []struct {
		deferred uint64
		want     string
	}{
		{5120, "left 44.0 MiB  8.0 MiB/s  dirtying 8.0 KiB/s  held back this round 20.0 MiB (in left; their rewrites not in dirtying)"},
		{0, ""},
	} {
		var out bytes.Buffer
		b := newProgressBar(&out, false)
		b.update(migrator.Info{Status: migrator.StatusActive, RAM: &migrator.RAMStats{Transferred: 1270 << 20, Remaining: 44 << 20, Total: 64 << 20,
			DirtyPagesRate: 2, PageSize: 4096, Mbps: 8 * 8 * 1.048576}, Pagecast: &migrator.Extra{Round: 2, Deferred: tc.deferred}})
		line := out.String()
		if held := strings.Contains(line, "held back"); held != (tc.want != "") || !strings.Contains(line, tc.want) {
			t.Errorf("%d deferred: progress line %q, want %q", tc.deferred, line, tc.want)
		}
	}
}

// TestProgressBarLabel: the demo's bars, one migration after another on
// one stderr, each say which migration they follow (walk 155: some 35
// lines, none saying which mode).
func TestProgressBarLabel(t *testing.T) {
	var out bytes.Buffer
	b := newProgressBar(&out, false)
	b.label = "QEMU precopy"
	b.update(migrator.Info{Status: migrator.StatusActive, RAM: &migrator.RAMStats{Transferred: 1 << 20, Remaining: 1 << 20}})
	if line := out.String(); !strings.HasPrefix(line, "QEMU precopy  [") {
		t.Errorf("progress line %q, want it to begin with the label", line)
	}
}

// TestOutputKeepsMode: a file -o replaces keeps its permissions (a trace
// made private, 0600, became 0644 under umask 022), and a new file has
// the usual 0666 less the umask.
func TestOutputKeepsMode(t *testing.T) {
	dir := t.TempDir()
	private := filepath.Join(dir, "private.csv")
	if err := os.WriteFile(private, []byte("old\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(private, 0o640); err != nil {
		t.Fatal(err)
	}
	write := func(w io.Writer) error { _, err := io.WriteString(w, "new\n"); return err }
	if err := writeOutput(private, write); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(private); err != nil || st.Mode().Perm() != 0o640 {
		t.Errorf("replaced: %v (%v), want mode 0640 kept", st.Mode(), err)
	}
	if b, _ := os.ReadFile(private); string(b) != "new\n" {
		t.Errorf("replaced: holds %q", b)
	}
	// The umask read, not set: tests beside this one create files.
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	at := bytes.Index(status, []byte("Umask:"))
	if at < 0 {
		t.Skip("no Umask in /proc/self/status (Linux before 4.7)")
	}
	var umask int
	if _, err := fmt.Sscanf(string(status[at:]), "Umask: %o", &umask); err != nil {
		t.Fatalf("umask from /proc/self/status: %v", err)
	}
	fresh := filepath.Join(dir, "new.csv")
	if err := writeOutput(fresh, write); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(fresh); err != nil || st.Mode().Perm() != fs.FileMode(0o666&^umask) {
		t.Errorf("new: %v (%v), want %v", st.Mode(), err, fs.FileMode(0o666&^umask))
	}
}

// TestTableMS: a table's durations carry three decimals from a second up,
// so that a right-aligned column lines up.
func TestTableMS(t *testing.T) {
	for v, want := range map[int64]string{0: "0s", 85: "85ms", 999: "999ms", 1000: "1.000s", 2500: "2.500s", 5600: "5.600s", 5584: "5.584s", 59975: "59.975s",
		62000: "1m2.000s", 742915: "12m22.915s", 3723456: "1h2m3.456s"} {
		if got := tableMS(v); got != want {
			t.Errorf("tableMS(%d) = %q, want %q", v, got, want)
		}
	}
}

// TestCheckTimeNote: the note on the memory check's share of the total
// names simulate's --checksum-rate only where there is one: migrate's
// auto has none (walk 106).
func TestCheckTimeNote(t *testing.T) {
	r := simulate.Result{Mode: "precopy"}
	r.Info.TotalTime = 1000
	r.Info.Pagecast = &migrator.Extra{CheckTime: 400}
	var b strings.Builder
	writeCheckTime(&b, []simulate.Result{r}, autoCheckRate)
	if got := b.String(); strings.Contains(got, "--checksum-rate") || !strings.Contains(got, "at some 2.00 GiB/s while the guest runs on the destination: precopy 400ms (40%)") {
		t.Errorf("migrate's note: %q", got)
	}
}

// TestWriteStops: the demo's live table is followed, as simulate's is, by
// which modes the round cap stopped and which went over the downtime
// limit (walk 147: precopy's 321 ms against 300 went unsaid there).
func TestWriteStops(t *testing.T) {
	capped := migrator.Info{Downtime: 321, Pagecast: &migrator.Extra{Mode: "precopy", Round: 31, StopReason: "round cap 30 reached with 1048576 bytes pending"}}
	fine := migrator.Info{Downtime: 254, Pagecast: &migrator.Extra{Mode: "predictive", Round: 13, StopReason: "fit"}}
	var b strings.Builder
	writeStops(&b, []modeOutcome{{"precopy", capped, 300 * time.Millisecond}, {"predictive", fine, 300 * time.Millisecond}})
	want := "did not converge: precopy (the round cap, --max-rounds, forced the stop-and-copy with what was still pending)\n" +
		"over the 300ms downtime limit: precopy 321ms\n"
	if b.String() != want {
		t.Errorf("printed %q, want %q", b.String(), want)
	}
	b.Reset()
	writeStops(&b, []modeOutcome{{"predictive", fine, 300 * time.Millisecond}})
	if b.Len() != 0 {
		t.Errorf("printed %q for a migration that converged within the limit", b.String())
	}
}
