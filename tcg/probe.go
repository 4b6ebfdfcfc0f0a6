package tcg

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Probe asks the QEMU binary bin (default: qemu-system-x86_64 from PATH)
// to load the plugin, on an empty machine that quits at once: nil if it
// does, else why not (not installed, or the plugin refused, with
// ExplainLoadError's sentence).
func Probe(bin string) error {
	if bin == "" {
		var err error
		if bin, err = exec.LookPath("qemu-system-x86_64"); err != nil {
			return fmt.Errorf("qemu-system-x86_64 not installed (Debian package qemu-system-x86)")
		}
	}
	dir, err := os.MkdirTemp("", "pagecast-tcg-probe-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	so, err := WritePlugin(dir)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-accel", "tcg", "-M", "none", "-nodefaults", "-display", "none",
		"-monitor", "stdio", "-plugin", PluginArg(so, filepath.Join(dir, "probe.shm"), 16))
	cmd.Stdin = strings.NewReader("quit\n")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		if perr := ExplainLoadError(stderr.String()); perr != nil {
			return perr
		}
		return fmt.Errorf("%s with the plugin: %w: %s", filepath.Base(bin), err, strings.TrimSpace(stderr.String()))
	}
	return nil
}
