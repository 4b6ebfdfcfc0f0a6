package tcg

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

//go:embed pagecast-dirty.so
var pluginSO []byte

// PluginName is the file name WritePlugin gives the plugin; FindShm looks
// for it on QEMU's command line.
const PluginName = "pagecast-dirty.so"

// Plugin is the embedded plugin (a shared object for x86-64 Linux hosts).
func Plugin() []byte { return pluginSO }

// WritePlugin writes the embedded plugin into dir and returns its path. A
// plugin there already is left as it is where it is this one, and replaced
// by a rename otherwise, never rewritten in place: a QEMU that loaded it
// runs its code from the file, and died (SIGSEGV) when pagecast plugin was
// run again into its directory, which truncated and rewrote it (found by a
// review walk).
func WritePlugin(dir string) (string, error) {
	path := filepath.Join(dir, PluginName)
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, pluginSO) {
		if err := os.Chmod(path, 0o755); err != nil {
			return "", fmt.Errorf("write tcg plugin: %w", err)
		}
		return path, nil
	}
	f, err := os.CreateTemp(dir, "."+PluginName+".*")
	if err != nil {
		return "", fmt.Errorf("write tcg plugin: %w", err)
	}
	defer os.Remove(f.Name()) // after the rename, nothing there
	_, err = f.Write(pluginSO)
	if err == nil {
		err = f.Chmod(0o755)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		return "", fmt.Errorf("write tcg plugin: %w", err)
	}
	return path, nil
}

// DefaultShm is the area the plugin creates without shm=, in QEMU pid's
// name; the plugin removes it when QEMU exits normally, RemoveStale when
// QEMU was killed.
func DefaultShm(pid int) string { return fmt.Sprintf("/dev/shm/pagecast-tcg.%d", pid) }

// PluginArg is the value of QEMU's -plugin option that loads the plugin so
// with its area at shm (DefaultShm when empty) and room for pages 4 KiB
// page frames (DefaultPages when 0). Paths cannot hold ','.
func PluginArg(so, shm string, pages uint64) string {
	arg := so
	if shm != "" {
		arg += ",shm=" + shm
	}
	if pages != 0 {
		arg += ",pages=" + strconv.FormatUint(pages, 10)
	}
	return arg
}

// ErrNotQEMU is wrapped by FindShm's error for a process that is not QEMU.
var ErrNotQEMU = errors.New("not a QEMU process")

// ErrNoPlugin is wrapped by FindShm's error for a QEMU without the plugin.
var ErrNoPlugin = errors.New("qemu runs without pagecast's TCG plugin")

// FindShm reads QEMU pid's command line and returns the path of its
// plugin area: the shm= of a -plugin option naming pagecast-dirty, or
// DefaultShm(pid). A relative shm= is the plugin's, opened in QEMU's
// working directory: it is taken there where the file is, else as it is
// (a QEMU started with -daemonize has since moved to /); Attach checks
// that the area found is the QEMU's.
func FindShm(pid int) (string, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return "", fmt.Errorf("find plugin area of qemu %d: %w", pid, err)
	}
	args := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
	if shm, ok := shmFromArgs(args, pid); ok {
		if !filepath.IsAbs(shm) {
			if cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid)); err == nil {
				if p := filepath.Join(cwd, shm); fileExists(p) {
					return p, nil
				}
			}
		}
		return shm, nil
	}
	if name := filepath.Base(args[0]); args[0] == "" || !strings.Contains(name, "qemu") {
		// pid 1 was said to be a "qemu" that "runs without pagecast's
		// TCG plugin".
		return "", fmt.Errorf("find plugin area: process %d (%s) is %w", pid, name, ErrNotQEMU)
	}
	return "", fmt.Errorf("find plugin area of qemu %d: %w: `pagecast plugin --dir DIR --memory SIZE` writes the plugin "+
		"and prints the -plugin option to start QEMU with", pid, ErrNoPlugin)
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// samePID says whether a plugin area's header pid is QEMU pid's, in the
// host's pid namespace or in the QEMU's own (NSpid: a QEMU in a container
// knows itself by another number); true where that cannot be read.
func samePID(pid int, header int) bool {
	if header == pid {
		return true
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return true
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "NSpid:"); ok {
			for _, f := range strings.Fields(rest) {
				if f == strconv.Itoa(header) {
					return true
				}
			}
			return false
		}
	}
	return true
}

// shmFromArgs finds the plugin's area in a QEMU command line.
func shmFromArgs(args []string, pid int) (string, bool) {
	for i, a := range args {
		var val string
		switch {
		case (a == "-plugin" || a == "--plugin") && i+1 < len(args):
			val = args[i+1]
		case strings.HasPrefix(a, "-plugin="), strings.HasPrefix(a, "--plugin="):
			_, val, _ = strings.Cut(a, "=")
		default:
			continue
		}
		file, shm := "", ""
		for j, opt := range strings.Split(val, ",") {
			key, v, hasEq := strings.Cut(opt, "=")
			switch {
			case j == 0 && !hasEq:
				file = opt
			case key == "file":
				file = v
			case key == "shm":
				shm = v
			case key == "arg" && strings.HasPrefix(v, "shm="): // QEMU's older arg=key=value form
				shm = strings.TrimPrefix(v, "shm=")
			}
		}
		if !strings.Contains(filepath.Base(file), "pagecast-dirty") {
			continue
		}
		if shm == "" {
			shm = DefaultShm(pid)
		}
		return shm, true
	}
	return "", false
}

// ErrPluginRefused is wrapped by ExplainLoadError's errors.
var ErrPluginRefused = errors.New("qemu refused pagecast's TCG plugin")

var (
	reTooNew  = regexp.MustCompile(`plugin requires API version (\d+), but this QEMU supports only up to version (\d+)`)
	reTooOld  = regexp.MustCompile(`plugin requires API version (\d+), but this QEMU supports only a minimum version of (\d+)`)
	reOwnLine = regexp.MustCompile(`pagecast-dirty: (.*)`)
)

// ExplainLoadError turns QEMU's stderr after a failed start into one line
// saying why the plugin was refused, with the plugin's and QEMU's plugin
// API versions and what to do. It returns nil if stderr shows no plugin
// load failure.
func ExplainLoadError(stderr string) error {
	if m := reTooNew.FindStringSubmatch(stderr); m != nil {
		return fmt.Errorf("%w: the plugin speaks plugin API version %s, this QEMU only up to version %s: "+
			"use a QEMU that loads version %d or %d (pagecast's plugin: QEMU 7.2 to 10.x), or regenerate the plugin (go generate ./tcg)",
			ErrPluginRefused, m[1], m[2], PluginAPIOldest, PluginAPINewest)
	}
	if m := reTooOld.FindStringSubmatch(stderr); m != nil {
		if oldest, _ := strconv.Atoi(m[2]); oldest > PluginAPINewest {
			return fmt.Errorf("%w: the plugin speaks plugin API version %s, this QEMU loads version %s and newer only, which pagecast's plugin does not speak: "+
				"use QEMU 7.2 to 10.x, or port the plugin to this QEMU's API", ErrPluginRefused, m[1], m[2])
		}
		// On QEMU 9 and 10, a plugin written by an older pagecast, which
		// declared 1 to every QEMU (review 112).
		return fmt.Errorf("%w: the plugin speaks plugin API version %s, this QEMU loads version %s and newer only: "+
			"write the plugin again with this pagecast (pagecast plugin), whose plugin declares version %d to QEMU 9.0 and later",
			ErrPluginRefused, m[1], m[2], PluginAPINewest)
	}
	if m := reOwnLine.FindStringSubmatch(stderr); m != nil {
		return fmt.Errorf("%w: %s", ErrPluginRefused, strings.TrimSpace(m[1]))
	}
	if strings.Contains(stderr, "does not declare API version") {
		return fmt.Errorf("%w: the file has no qemu_plugin_version symbol (not pagecast's plugin, or damaged): "+
			"write it again with tcg.WritePlugin", ErrPluginRefused)
	}
	if i := strings.Index(stderr, "Could not load plugin"); i >= 0 {
		line, _, _ := strings.Cut(stderr[i:], "\n")
		return fmt.Errorf("%w: %s", ErrPluginRefused, strings.TrimSpace(line))
	}
	return nil
}
