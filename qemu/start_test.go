package qemu

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pagecast/pagecast/guest"
)

// TestStartFailsClean: a Start refused before QEMU runs (here two machine
// types) leaves no work directory
// behind. (It stayed, locked, for the life of the process, with a RAM file
// half written where writing it failed; found by a review walk.)
func TestStartFailsClean(t *testing.T) {
	base := t.TempDir()
	scratchBase = func() string { return base }
	defer func() { scratchBase = defaultScratchBase }()
	if _, err := Start(Options{Binary: "/bin/false", MemoryBytes: guest.MinMemory, Accel: AccelTCG, Machine: "pc,q35"}); err == nil {
		t.Fatal("Start with two machine types succeeded")
	}
	if ents, _ := os.ReadDir(base); len(ents) != 0 {
		t.Errorf("a failed Start left %d work directories: %v", len(ents), ents[0].Name())
	}
}

var defaultScratchBase = scratchBase

// TestStartSilentQMP: a QEMU whose QMP socket accepts and never greets
// (stuck before its main loop) fails Start within its wait, saying so; it
// held Start for ever (found by a review walk). The fake QEMU is this test
// binary (TestMain), listening on the socket Start gives it.
func TestStartSilentQMP(t *testing.T) {
	base := t.TempDir()
	scratchBase = func() string { return base }
	defer func() { scratchBase = defaultScratchBase }()
	handshakeWait = 300 * time.Millisecond
	defer func() { handshakeWait = 30 * time.Second }()
	t.Setenv(silentQEMU, "1")
	done := make(chan error, 1)
	go func() {
		v, err := Start(Options{Binary: os.Args[0], MemoryBytes: guest.MinMemory, Accel: AccelTCG})
		if err == nil {
			v.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "no greeting in 300ms") {
			t.Errorf("Start on a QEMU that never greets: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Start still waits on a QEMU that never greets after 20 s")
	}
}

// silentQEMU, set in its environment, makes this test binary a QEMU that
// listens on its first -qmp socket and never greets.
const silentQEMU = "PAGECAST_TEST_SILENT_QEMU"

func TestMain(m *testing.M) {
	if os.Getenv(silentQEMU) == "1" {
		for i, a := range os.Args {
			if a == "-qmp" && i+1 < len(os.Args) {
				path, _, _ := strings.Cut(strings.TrimPrefix(os.Args[i+1], "unix:"), ",")
				l, err := net.Listen("unix", path)
				if err != nil {
					os.Exit(3)
				}
				var held []net.Conn
				for {
					c, err := l.Accept()
					if err != nil {
						os.Exit(4)
					}
					held = append(held, c)
				}
			}
		}
		os.Exit(2)
	}
	os.Exit(m.Run())
}

// TestWaitSerialStopped: a wait for a line on the serial port ends when
// its context does (a signal to vm run or demo), not at its timeout:
// vm run waited out its 2 minutes after SIGTERM (found by a review walk).
func TestWaitSerialStopped(t *testing.T) {
	serial := filepath.Join(t.TempDir(), "serial.log")
	if err := os.WriteFile(serial, []byte("booting…\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	v := &VM{serial: serial, exited: make(chan struct{}), stderr: &lockedBuffer{}}
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	_, err := v.WaitSerialContext(ctx, LinuxStartMarker, time.Minute)
	if err == nil || !errors.Is(err, context.Canceled) {
		t.Errorf("a wait whose context ended: %v", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("the wait ended %v after its context: want at once", d)
	}
}
