package tcg_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pagecast/pagecast/internal/tcgtest"
	"github.com/pagecast/pagecast/tcg"
)

// writeArea lays out an area file as the plugin does, with capacity pages,
// then lets edit change it, and returns its path.
func writeArea(tb testing.TB, capacity uint64, edit func(f []byte) []byte) string {
	tb.Helper()
	f := tcgtest.Area(capacity, 4242)
	if edit != nil {
		f = edit(f)
	}
	path := filepath.Join(tb.TempDir(), "area")
	if err := os.WriteFile(path, f, 0o600); err != nil {
		tb.Fatal(err)
	}
	return path
}

// mapArea maps an area file as the plugin does, to play its part.
func mapArea(tb testing.TB, path string) []byte {
	tb.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	mem, err := unix.Mmap(int(f.Fd()), 0, int(fi.Size()), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { unix.Munmap(mem) })
	return mem
}

func newArea(tb testing.TB, capacity uint64, _ int) *tcg.Area {
	tb.Helper()
	path := writeArea(tb, capacity, nil)
	a, err := tcg.Open(path)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { a.Close() })
	areas[a] = path
	return a
}

var areas = map[*tcg.Area]string{}

// areaBuffer is buffer i of a's file, as the plugin sees it.
func areaBuffer(tb testing.TB, a *tcg.Area, i int) []byte {
	mem := mapArea(tb, areas[a])
	c := a.Capacity()
	return mem[tcg.HeaderSize+uint64(i)*c : tcg.HeaderSize+uint64(i+1)*c]
}

func TestOpenRejects(t *testing.T) {
	le := binary.LittleEndian
	for _, c := range []struct {
		name string
		edit func(f []byte) []byte
	}{
		{"empty", func(f []byte) []byte { return nil }},
		{"short header", func(f []byte) []byte { return f[:100] }},
		{"no magic yet", func(f []byte) []byte { le.PutUint32(f[0:], 0); return f }},
		{"wrong magic", func(f []byte) []byte { le.PutUint32(f[0:], 0xdeadbeef); return f }},
		{"wrong version", func(f []byte) []byte { le.PutUint32(f[4:], 99); return f }},
		{"zero capacity", func(f []byte) []byte { le.PutUint64(f[16:], 0); return f }},
		{"huge capacity", func(f []byte) []byte { le.PutUint64(f[16:], 1<<62); return f }},
		{"capacity past the file", func(f []byte) []byte { le.PutUint64(f[16:], 1<<20); return f }},
		{"truncated buffers", func(f []byte) []byte { return f[:len(f)-1] }},
	} {
		t.Run(c.name, func(t *testing.T) {
			a, err := tcg.Open(writeArea(t, 4096, c.edit))
			if err == nil {
				a.Close()
				t.Fatal("Open accepted a bad area")
			}
			if !errors.Is(err, tcg.ErrBadArea) {
				t.Fatalf("error %q does not wrap ErrBadArea", err)
			}
			t.Log(err)
		})
	}
	if _, err := tcg.Open(filepath.Join(t.TempDir(), "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

func TestReadEpoch(t *testing.T) {
	// 4099 pages: buffer 1 starts off an 8-byte boundary, and both end in
	// a partial word.
	const capacity = 4099
	path := writeArea(t, capacity, nil)
	a, err := tcg.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	plugin := mapArea(t, path)
	if a.Capacity() != capacity {
		t.Fatalf("capacity %d", a.Capacity())
	}
	for e := uint32(0); e < 4; e++ {
		a.SetEpoch(e)
		if got := binary.LittleEndian.Uint32(plugin[24:]); got != e || a.Epoch() != e {
			t.Fatalf("epoch %d: plugin sees %d, Epoch %d", e, got, a.Epoch())
		}
		want := []uint64{0, 1, 7, 8, 63, 64, 1000 + uint64(e), 4095, 4096, capacity - 1}
		buf := plugin[tcg.HeaderSize+uint64(e&1)*capacity:][:capacity]
		for _, p := range want {
			buf[p] = 1
		}
		plugin[tcg.HeaderSize+uint64(1-e&1)*capacity+5] = 1 // the other epoch
		got := a.ReadEpoch(e, []uint64{12345})
		if !slices.Equal(got[1:], want) || got[0] != 12345 {
			t.Fatalf("epoch %d: got %v, want %v after the caller's 12345", e, got, want)
		}
		if again := a.ReadEpoch(e, nil); len(again) != 0 {
			t.Fatalf("epoch %d: not cleared: %v", e, again)
		}
		a.ReadEpoch(e+1, nil)
	}
}

func TestStats(t *testing.T) {
	path := writeArea(t, 64, nil)
	a, err := tcg.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	plugin := mapArea(t, path)
	le := binary.LittleEndian
	for vcpu := range 60 { // slots at 256 + 64*i: writes, out of range, I/O
		le.PutUint64(plugin[256+64*vcpu:], 10)
		le.PutUint64(plugin[256+64*vcpu+8:], 2)
		le.PutUint64(plugin[256+64*vcpu+16:], 1)
	}
	want := tcg.Stats{Writes: 600, OutOfRange: 120, IO: 60, APIMin: 1, APICur: 1, PluginAPI: 1, PID: 4242}
	if s := a.Stats(); s != want {
		t.Fatalf("stats %+v, want %+v", s, want)
	}
	le.PutUint32(plugin[28:], 2)
	if !a.Stats().Exited {
		t.Fatal("exited state not seen")
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestOneReader: an area has one reader at a time. A second Open is
// refused, saying who holds it (two profiles of one QEMU silently took
// each other's epochs; a profile beside a migration made it miss pages),
// while the first reads on; once the first closes, the area opens again.
func TestOneReader(t *testing.T) {
	path := writeArea(t, 64, nil)
	first, err := tcg.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	plugin := mapArea(t, path)

	second, err := tcg.Open(path)
	if err == nil {
		second.Close()
		t.Fatal("a second reader of one area was let in")
	}
	if !errors.Is(err, tcg.ErrAreaBusy) || !strings.Contains(err.Error(), fmt.Sprintf("this process (pid %d)", os.Getpid())) {
		t.Fatalf("second reader: %v, want ErrAreaBusy naming this process", err)
	}
	t.Log(err)

	first.SetEpoch(3)
	plugin[tcg.HeaderSize+64+7] = 1 // buffer 1: odd epochs
	first.SetEpoch(4)
	if got := first.ReadEpoch(3, nil); !slices.Equal(got, []uint64{7}) {
		t.Fatalf("the first reader after the refusal read %v, want [7]", got)
	}

	// Another process holding it is named by its pid and command line.
	first.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHoldArea$")
	cmd.Env = append(os.Environ(), "PAGECAST_HOLD_AREA="+path)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	if _, err := stdout.Read(make([]byte, 1)); err != nil { // it holds the area
		t.Fatalf("the holding process: %v", err)
	}
	_, err = tcg.Open(path)
	if !errors.Is(err, tcg.ErrAreaBusy) || !strings.Contains(err.Error(), fmt.Sprintf("process %d (%s -test.run", cmd.Process.Pid, os.Args[0])) {
		t.Fatalf("held by process %d: %v", cmd.Process.Pid, err)
	}
	t.Log(err)
	cmd.Process.Kill()
	cmd.Wait()

	third, err := tcg.Open(path)
	if err != nil {
		t.Fatalf("after the holder closed it: %v", err)
	}
	third.Close()
}

// TestHoldArea is TestOneReader's other process: it opens the area in
// $PAGECAST_HOLD_AREA, says so on stdout and waits to be killed.
func TestHoldArea(t *testing.T) {
	path := os.Getenv("PAGECAST_HOLD_AREA")
	if path == "" {
		t.Skip("TestOneReader's helper")
	}
	a, err := tcg.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	os.Stdout.WriteString("held\n")
	time.Sleep(time.Minute)
}

// TestCheckCovers: a plugin recording less than the guest's RAM is told
// apart, with both sizes and the pages= to give (a 64 MiB plugin in a
// 256 MiB guest recorded a quarter of it without a word).
func TestCheckCovers(t *testing.T) {
	a := newArea(t, 16384, 0) // 64 MiB
	defer a.Close()
	if err := a.CheckCovers(64<<20, 16384); err != nil {
		t.Errorf("64 MiB guest: %v", err)
	}
	if err := a.CheckCovers(32<<20, 8192); err != nil {
		t.Errorf("32 MiB guest: %v", err)
	}
	err := a.CheckCovers(256<<20, 65536)
	if !errors.Is(err, tcg.ErrTooSmall) {
		t.Fatalf("256 MiB guest: %v, want ErrTooSmall", err)
	}
	for _, want := range []string{"pages=16384 (64M)", "the guest has 256M", "pages=65536", "--memory 256M"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
	t.Log(err)
}

// TestRemoveStale: the area of a QEMU that has gone without removing it
// (SIGKILL) is removed; an area whose QEMU runs, one a reader holds, a
// file that is not the plugin's and one named otherwise are left.
func TestRemoveStale(t *testing.T) {
	dir := t.TempDir()
	// A pid that has gone: a process that ran and was reaped.
	done := exec.Command("true")
	if err := done.Run(); err != nil {
		t.Fatal(err)
	}
	dead := done.Process.Pid
	area := func(name string, pid int) string {
		src := writeArea(t, 64, func(f []byte) []byte {
			binary.LittleEndian.PutUint32(f[32:], uint32(pid))
			return f
		})
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	stale := area(fmt.Sprintf("pagecast-tcg.%d", dead), dead)
	// A QEMU killed but not yet waited for by its parent: a zombie.
	zombie := exec.Command("sleep", "30")
	if err := zombie.Start(); err != nil {
		t.Fatal(err)
	}
	defer zombie.Wait()
	zombie.Process.Kill()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		stat, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", zombie.Process.Pid))
		if strings.Contains(string(stat), ") Z") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sleep %d not a zombie in 5s: %s", zombie.Process.Pid, stat)
		}
	}
	killed := area(fmt.Sprintf("pagecast-tcg.%d", zombie.Process.Pid), zombie.Process.Pid)
	running := area(fmt.Sprintf("pagecast-tcg.%d", os.Getpid()), os.Getpid())
	otherPID := area(fmt.Sprintf("pagecast-tcg.%d", dead+1<<22), dead) // header names another pid
	otherName := area(fmt.Sprintf("vm1.%d", dead), dead)
	notOurs := filepath.Join(dir, fmt.Sprintf("pagecast-tcg.%d", 1<<22+1))
	if err := os.WriteFile(notOurs, []byte("someone else's"), 0o600); err != nil {
		t.Fatal(err)
	}
	heldPID := dead + 1<<22 + 2 // past pid_max: gone
	held := area(fmt.Sprintf("pagecast-tcg.%d", heldPID), heldPID)
	reader, err := tcg.Open(held)
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()

	removed, err := tcg.RemoveStaleIn(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{stale, killed}
	slices.Sort(want)
	if slices.Sort(removed); !slices.Equal(removed, want) {
		t.Errorf("removed %v, want only %v", removed, want)
	}
	for _, p := range []string{stale, killed} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s (QEMU gone) still there: %v", p, err)
		}
	}
	for _, p := range []string{running, otherPID, otherName, notOurs, held} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s removed: %v", p, err)
		}
	}
}

// TestBusyMigrating: an area's holder is taken for a migration where its
// command is pagecast migrate, after pagecast's own flags, and not where
// "migrate" is only a word of another command's (a profile writing to a
// file named migrate was; found by a review walk).
func TestBusyMigrating(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want bool
	}{
		{[]string{"/usr/local/bin/pagecast", "migrate", "--qmp", "unix:q.sock"}, true},
		{[]string{"pagecast", "--log-level", "warn", "migrate", "--mode", "auto"}, true},
		{[]string{"pagecast", "--log-level=warn", "migrate"}, true},
		{[]string{"pagecast", "profile", "--qmp", "unix:q.sock", "--out", "migrate"}, false},
		{[]string{"pagecast", "--log-level", "migrate", "profile"}, false},
		{[]string{"qemu-system-x86_64", "migrate"}, false},
		{[]string{"pagecast"}, false},
		{nil, false},
	} {
		if got := (&tcg.BusyError{Args: tc.args}).Migrating(); got != tc.want {
			t.Errorf("%q: migrating %v, want %v", tc.args, got, tc.want)
		}
	}
}
