package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

const hostileDir = "../../testdata/hostile"

// TestHostileCLI (issue 16): each crafted input gets one line of error or
// a correct answer.
func TestHostileCLI(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string // in the error, or in stdout if ok
		ok   bool
	}{
		{[]string{"predict", "eval", "header-2p50-page1.pct"}, "page size 1 is outside", false},
		{[]string{"predict", "eval", "header-16eib.pct"}, "over the 4 PiB", false},
		{[]string{"predict", "eval", "header-1tib.pct"}, "predictors kept", true},
		{[]string{"predict", "eval", "index-gap-2p32.pct"}, "scored", true},
		{[]string{"predict", "eval", "--memory", "1G", "csv-gaps.csv"}, "leaves a gap of 1048575 empty epochs", false},
		{[]string{"predict", "eval", "--memory", "1G", "--warmup", "0", "csv-bom.csv"}, "3 epochs", true},
		{[]string{"predict", "eval", "--memory", "100000G", "--warmup", "0", "csv-bom.csv"}, "predictors kept", true},
		{[]string{"predict", "eval", "--memory", "10000000G", "csv-bom.csv"}, "over the 4 PiB", false},
		{[]string{"predict", "eval", "--memory", "1G", "--page-size", "1", "csv-bom.csv"}, "--page-size 1", false},
		{[]string{"trace", "info", "index-gap-2p32.pct"}, "1193046h28m56s), 0 empty, 4294967296 missing", true},
		{[]string{"trace", "info", "page-beyond.pct"}, "page 300000 (entry 1) is beyond", true},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			args := append([]string(nil), tc.args...)
			args[len(args)-1] = filepath.Join(hostileDir, args[len(args)-1])
			stdout, _, err := runApp(t, args...)
			if tc.ok {
				if err != nil || !strings.Contains(stdout, tc.want) {
					t.Fatalf("err %v, stdout %s", err, stdout)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("err %v, want one line with %q", err, tc.want)
			}
		})
	}
}

// TestImportInterrupted: an import ended by a signal leaves no temporary
// file.
func TestImportInterrupted(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(binary, "trace", "import", "--memory", "1G", "--epoch", "1s", "-o", filepath.Join(dir, "out.pct"), "-")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	stdin.Write([]byte("epoch,page\n0,1\n1,2\n"))
	// Wait for the temporary file, then interrupt.
	for deadline := time.Now().Add(10 * time.Second); ; {
		if m, _ := filepath.Glob(filepath.Join(dir, "*.tmp")); len(m) == 1 {
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatal("no temporary file")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGINT)
	err = cmd.Wait()
	if err == nil || !strings.Contains(stderr.String(), "interrupt") {
		t.Fatalf("exit %v, stderr %s", err, stderr.String())
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 0 {
		t.Fatalf("left %v", entries)
	}
}
