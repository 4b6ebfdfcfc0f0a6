package tcg_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pagecast/pagecast/guest"
	"github.com/pagecast/pagecast/internal/tcgtest"
	"github.com/pagecast/pagecast/internal/testutil"
	"github.com/pagecast/pagecast/qemu"
	"github.com/pagecast/pagecast/tcg"
)

func TestWritePlugin(t *testing.T) {
	so, err := tcg.WritePlugin(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(so)
	if err != nil || !bytes.Equal(got, tcg.Plugin()) || !bytes.HasPrefix(got, []byte("\x7fELF")) {
		t.Fatalf("written plugin differs from the embedded ELF object (%v)", err)
	}
	if arg := tcg.PluginArg(so, "/dev/shm/x", 16384); arg != so+",shm=/dev/shm/x,pages=16384" {
		t.Errorf("PluginArg = %q", arg)
	}
	if arg := tcg.PluginArg(so, "", 0); arg != so {
		t.Errorf("PluginArg without options = %q", arg)
	}
}

// TestWritePluginLoaded: writing the plugin again into a directory whose
// plugin a QEMU has loaded leaves that QEMU's file as it was: the same
// plugin is not written at all, another (an older pagecast's) is replaced
// by a rename, so the loaded file's pages, mapped as the dynamic loader
// maps them, never change. (It was truncated and rewritten in place, and
// the QEMU running it died of SIGSEGV; found by a review walk.)
func TestWritePluginLoaded(t *testing.T) {
	dir := t.TempDir()
	so, err := tcg.WritePlugin(dir)
	if err != nil {
		t.Fatal(err)
	}
	inode := func() uint64 {
		var st syscall.Stat_t
		if err := syscall.Stat(so, &st); err != nil {
			t.Fatal(err)
		}
		return st.Ino
	}
	before := inode()
	if _, err := tcg.WritePlugin(dir); err != nil {
		t.Fatal(err)
	}
	if inode() != before {
		t.Error("the same plugin written again replaced the file a QEMU may run")
	}
	older := append([]byte("\x7fELF an older plugin"), make([]byte, 8192)...)
	if err := os.WriteFile(so, older, 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(so)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	loaded, err := syscall.Mmap(int(f.Fd()), 0, len(older), syscall.PROT_READ, syscall.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Munmap(loaded)
	if _, err := tcg.WritePlugin(dir); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(loaded, older) {
		t.Error("the loaded plugin's pages changed under it: written in place")
	}
	if got, err := os.ReadFile(so); err != nil || !bytes.Equal(got, tcg.Plugin()) {
		t.Errorf("the plugin at %s is not this pagecast's after the write (%v)", so, err)
	}
	if fi, err := os.Stat(so); err != nil || fi.Mode().Perm()&0o111 == 0 {
		t.Errorf("the plugin's mode: %v %v", fi.Mode(), err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("the directory holds %d files after the writes, want the plugin alone", len(ents))
	}
}

func TestFindShm(t *testing.T) {
	for _, c := range []struct {
		name string
		args []string
		want string // "" for ErrNoPlugin; DEFAULT for the default path
	}{
		{"shm", []string{"-plugin", "/x/pagecast-dirty.so,shm=/dev/shm/a,pages=10"}, "/dev/shm/a"},
		{"file=", []string{"-plugin", "file=/x/pagecast-dirty.so,pages=10,shm=/tmp/b"}, "/tmp/b"},
		{"arg=", []string{"--plugin", "file=/x/pagecast-dirty.so,arg=shm=/tmp/c"}, "/tmp/c"},
		{"default", []string{"-plugin", "/x/pagecast-dirty.so"}, "DEFAULT"},
		{"another plugin", []string{"-plugin", "/x/libhotpages.so,shm=/tmp/d"}, ""},
		{"none", []string{"-accel", "tcg"}, ""},
		{"not qemu", nil, "NOTQEMU"},
	} {
		t.Run(c.name, func(t *testing.T) {
			// A shell that sleeps carries the arguments in its command
			// line, under QEMU's name.
			cmd := exec.Command("/bin/sh", append([]string{"-c", "sleep 30", "qemu"}, c.args...)...)
			if c.want != "NOTQEMU" {
				cmd.Args[0] = "/usr/bin/qemu-system-x86_64"
			}
			if err := cmd.Start(); err != nil {
				t.Skip(err)
			}
			defer func() { cmd.Process.Kill(); cmd.Wait() }()
			time.Sleep(20 * time.Millisecond) // until exec has set the command line
			want := c.want
			if want == "DEFAULT" {
				want = tcg.DefaultShm(cmd.Process.Pid)
			}
			got, err := tcg.FindShm(cmd.Process.Pid)
			if want == "NOTQEMU" {
				// It was said to be a "qemu" without the plugin.
				if !errors.Is(err, tcg.ErrNotQEMU) || errors.Is(err, tcg.ErrNoPlugin) ||
					!strings.Contains(err.Error(), fmt.Sprintf("process %d (sh) is not a QEMU process", cmd.Process.Pid)) {
					t.Fatalf("FindShm of a shell = %q, %v; want ErrNotQEMU naming it", got, err)
				}
				t.Log(err)
				return
			}
			if want == "" {
				if !errors.Is(err, tcg.ErrNoPlugin) || !strings.Contains(err.Error(), "-plugin") {
					t.Fatalf("FindShm = %q, %v; want ErrNoPlugin saying how to start QEMU", got, err)
				}
				t.Log(err)
				return
			}
			if err != nil || got != want {
				t.Fatalf("FindShm = %q, %v; want %q", got, err, want)
			}
		})
	}
}

func TestExplainLoadError(t *testing.T) {
	for _, c := range []struct {
		name, stderr string
		want         []string // substrings; none: want nil
	}{
		{"too new", "qemu-system-x86_64: Could not load plugin /t/pagecast-dirty.so: plugin requires API version 99, but this QEMU supports only up to version 1\n",
			[]string{"version 99", "up to version 1", "regenerate"}},
		{"too old", "qemu-system-x86_64: Could not load plugin /t/pagecast-dirty.so: plugin requires API version 1, but this QEMU supports only a minimum version of 2\n",
			[]string{"version 1", "version 2", "write the plugin again"}},
		{"install refused", "pagecast-dirty: plugin API version 2, but this QEMU loads API versions 3 to 5: pagecast's plugin runs on QEMU 7.2 to 10.x\nqemu-system-x86_64: Could not load plugin /t/pagecast-dirty.so: qemu_plugin_install returned error code -1\n",
			[]string{"versions 3 to 5"}},
		{"no version", "qemu-system-x86_64: Could not load plugin /t/x.so: plugin does not declare API version No such symbol\n",
			[]string{"qemu_plugin_version"}},
		{"other load failure", "qemu-system-x86_64: Could not load plugin /t/x.so: /t/x.so: cannot open shared object file\n",
			[]string{"cannot open shared object"}},
		{"unrelated", "qemu-system-x86_64: -m 1T: cannot set up guest memory\n", nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := tcg.ExplainLoadError(c.stderr)
			if c.want == nil {
				if err != nil {
					t.Fatalf("got %v, want nil", err)
				}
				return
			}
			if err == nil || !errors.Is(err, tcg.ErrPluginRefused) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("got %v, want one line wrapping ErrPluginRefused", err)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%q lacks %q", err, w)
				}
			}
		})
	}
}

// TestQEMURefusesPlugin builds the plugin with a wrong API version and with
// a bad argument, and checks that QEMU's refusal becomes one clear line.
func TestQEMURefusesPlugin(t *testing.T) {
	testutil.RequiresQEMU(t)
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		t.Skipf("needs gcc to build a plugin variant: %v", err)
	}
	dir := t.TempDir()
	wrong := filepath.Join(dir, "pagecast-dirty-v99.so")
	out, err := exec.Command(gcc, "-shared", "-fPIC", "-O2", "-Iinclude", "-DPC_PLUGIN_API_VERSION=99",
		"-o", wrong, "dirty.c").CombinedOutput()
	if err != nil {
		t.Fatalf("build variant: %v\n%s", err, out)
	}
	good, err := tcg.WritePlugin(dir)
	if err != nil {
		t.Fatal(err)
	}
	w, _ := guest.ParseWorkload("idle")
	for _, c := range []struct{ name, plugin, want string }{
		{"api version", tcg.PluginArg(wrong, filepath.Join(dir, "a"), 0), "version 99"},
		{"argument", good + ",colour=blue", "unknown argument colour=blue"},
	} {
		t.Run(c.name, func(t *testing.T) {
			vm, err := qemu.Start(qemu.Options{Accel: qemu.AccelTCG, MemoryBytes: testMemory,
				Cmdline: w.Cmdline(1), Extra: []string{"-plugin", c.plugin}})
			if err == nil {
				vm.Close()
				t.Fatal("QEMU started with a plugin it should refuse")
			}
			explained := tcg.ExplainLoadError(err.Error())
			if explained == nil || strings.Contains(explained.Error(), "\n") ||
				!strings.Contains(explained.Error(), c.want) {
				t.Fatalf("QEMU said %q; explained as %v, want one line with %q", err, explained, c.want)
			}
			t.Log(explained)
		})
	}
}

// TestRelativeShm: the plugin opens a relative shm= in QEMU's working
// directory, so pagecast takes it there, not in its own, where another
// VM's area by that name was opened (found by a review walk); and Attach
// refuses an area another process made, a QEMU that has since moved
// directory (-daemonize moves to /) leaving only pagecast's own to look in.
func TestRelativeShm(t *testing.T) {
	qemuDir, ourDir := t.TempDir(), t.TempDir()
	cmd := exec.Command("/bin/sh", "-c", "sleep 30", "qemu", "-plugin", "/x/pagecast-dirty.so,shm=vm.area,pages=64")
	cmd.Args[0] = "/usr/bin/qemu-system-x86_64"
	cmd.Dir = qemuDir
	if err := cmd.Start(); err != nil {
		t.Skip(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	time.Sleep(20 * time.Millisecond) // until exec has set the command line
	pid := cmd.Process.Pid
	area := func(dir string, pid int) string {
		f := tcgtest.Area(64, pid)
		path := filepath.Join(dir, "vm.area")
		if err := os.WriteFile(path, f, 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	other := area(ourDir, 999999) // another VM's, where pagecast runs
	t.Chdir(ourDir)
	// QEMU's own, in its directory.
	own := area(qemuDir, pid)
	if got, err := tcg.FindShm(pid); err != nil || got != own {
		t.Fatalf("FindShm = %q, %v; want %q, in QEMU's working directory", got, err, own)
	}
	a, err := tcg.Attach(pid)
	if err != nil {
		t.Fatal(err)
	}
	a.Close()
	// Not there: only the other VM's is found, and refused.
	if err := os.Remove(own); err != nil {
		t.Fatal(err)
	}
	if a, err := tcg.Attach(pid); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("is process 999999's, not qemu %d's", pid)) {
		if a != nil {
			a.Close()
		}
		t.Errorf("Attach found %s, another VM's area: %v, want it refused", other, err)
	}
}

// TestShmOfAnotherQEMU: a QEMU given the shm= of another QEMU that runs is
// refused, saying so, and the first's area is left as it was (both wrote
// into one file, and a profile of either took both guests' pages: found by
// a new-user walk); an area left by a QEMU that is gone is taken over.
func TestShmOfAnotherQEMU(t *testing.T) {
	testutil.RequiresQEMU(t)
	dir := t.TempDir()
	so, err := tcg.WritePlugin(dir)
	if err != nil {
		t.Fatal(err)
	}
	shm := filepath.Join(dir, "area")
	w, _ := guest.ParseWorkload("idle")
	start := func(extra ...string) (*qemu.VM, error) {
		return qemu.Start(qemu.Options{Accel: qemu.AccelTCG, MemoryBytes: testMemory, Cmdline: w.Cmdline(1),
			Extra: append([]string{"-plugin", tcg.PluginArg(so, shm, testMemory>>tcg.PageShift)}, extra...)})
	}
	first, err := start("-name", "first,process=vmfirst") // renamed, as QEMU lets a user: still a QEMU
	if err != nil {
		t.Fatal(err)
	}
	a, err := tcg.Open(shm)
	if err != nil {
		t.Fatal(err)
	}
	pid := a.Stats().PID
	a.Close()
	second, err := start()
	if err == nil {
		second.Close()
		t.Fatal("a second QEMU started on the first's area")
	}
	explained := tcg.ExplainLoadError(err.Error())
	if want := fmt.Sprintf("%s is the area of QEMU process %d, which runs: give each QEMU a shm= of its own", shm, pid); explained == nil || !strings.Contains(explained.Error(), want) {
		t.Errorf("second QEMU: %v (%v), want %q", explained, err, want)
	}
	if a, err := tcg.Open(shm); err != nil || a.Stats().PID != pid || a.Stats().Exited {
		t.Errorf("the first QEMU's area after the second's refusal: %v, %+v", err, a)
	} else {
		a.Close()
	}
	// Gone without its atexit: the area says running, of a dead pid.
	if err := syscall.Kill(first.PID(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-first.Done()
	first.Close()
	third, err := start()
	if err != nil {
		t.Fatalf("a QEMU on the area a killed one left: %v", err)
	}
	third.Close()
	// Left by a killed QEMU whose pid a kernel thread has since (2,
	// kthreadd: no command line), or saying pid 0: taken over (they were
	// refused as QEMUs that run).
	for _, pid := range []int{2, 0} {
		if err := os.WriteFile(shm, tcgtest.Area(testMemory>>tcg.PageShift, pid), 0o600); err != nil {
			t.Fatal(err)
		}
		vm, err := start()
		if err != nil {
			t.Fatalf("a QEMU on an area left saying pid %d: %v", pid, err)
		}
		vm.Close()
	}
}
