package qemuguest

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/pagecast/pagecast/qemu"
	"github.com/pagecast/pagecast/qmpclient"
)

// Monitor is a QMP connection to QEMU: a *qmpclient.Client (for
// instance qemu.VM.Monitor) satisfies it.
type Monitor = qemu.Runner

// dial connects to the QMP socket at path, giving a busy one up after 5 s.
func dial(path string) (*qmpclient.Client, error) {
	c, err := qmpclient.Open(path, 5*time.Second)
	if err == nil {
		c.SetAnswerWait(attachAnswerWait)
	}
	return c, err
}

// attachAnswerWait is how long Dial and DialDest wait for each of QEMU's
// answers while they attach; the bound is lifted once attached. A monitor
// that greeted and then fell silent (a QEMU stopped with SIGSTOP, or
// stuck) held pagecast receive for good (walk 134).
var attachAnswerWait = 10 * time.Second

// vcpu is one entry of query-cpus-fast.
type vcpu struct {
	Index    int    `json:"cpu-index"`
	ThreadID int    `json:"thread-id"`
	QOMType  string `json:"qom-type"` // QEMU 8.0 and later
	QOMPath  string `json:"qom-path"`
}

func vcpus(mon Monitor) ([]vcpu, error) {
	var cpus []vcpu
	if err := qemu.QMP(mon, "query-cpus-fast", nil, &cpus); err != nil {
		return nil, err
	}
	if len(cpus) == 0 {
		return nil, errors.New("qmp query-cpus-fast: no vCPUs")
	}
	return cpus, nil
}

// qemuPID is the process holding vCPU thread tid.
func qemuPID(tid int) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", tid))
	if err != nil {
		return 0, fmt.Errorf("find qemu's process from its vCPU thread: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Tgid:"); ok {
			return strconv.Atoi(strings.TrimSpace(v))
		}
	}
	return 0, fmt.Errorf("find qemu's process: no Tgid in /proc/%d/status", tid)
}

// ignoreShared are the migration capabilities of a device-state-only
// stream: shared RAM left out, and nothing an earlier QEMU-driven migration
// set (xbzrle, post-copy, multifd, auto-converge) changing the stream's
// shape. Source and destination must agree on x-ignore-shared (QEMU checks
// it in the stream's configuration section).
var ignoreShared = []map[string]any{
	{"capability": "x-ignore-shared", "state": true},
	{"capability": "xbzrle", "state": false},
	{"capability": "postcopy-ram", "state": false},
	{"capability": "multifd", "state": false},
	{"capability": "auto-converge", "state": false},
}

// setIgnoreShared sets ignoreShared on QEMU pid and returns what those
// capabilities were before, for clearIgnoreShared (nil where QEMU did not
// say). What they were is also kept in a file (LockDir's
// ignore-shared-PID.lock, gone with the QEMU) until clearIgnoreShared: a
// pagecast receive or migrate killed between the two left x-ignore-shared
// on, the next one took that for the owner's setting and restored it, and
// a later QEMU migration out of the QEMU failed (found by a walk).
func setIgnoreShared(mon Monitor, pid int) (prior map[string]bool, err error) {
	prior, _ = qemu.MigrationCapabilities(mon) // nil where QEMU did not say
	if f, err := qemu.OpenLock("ignore-shared", pid); err == nil {
		if b, _ := io.ReadAll(f); len(b) > 0 {
			var kept map[string]bool
			if json.Unmarshal(b, &kept) == nil {
				prior = kept
			}
		} else if b, err := json.Marshal(prior); err == nil {
			f.Write(b)
		}
		f.Close()
	}
	return prior, qemu.QMP(mon, "migrate-set-capabilities", map[string]any{"capabilities": ignoreShared}, nil)
}

// clearIgnoreShared sets the capabilities setIgnoreShared changed back to
// prior once the state has moved, so that a migration QEMU drives itself
// later (pagecast migrate on a QEMU, or its owner's) carries RAM as usual
// and with the owner's xbzrle, post-copy, multifd or auto-converge (they
// were left off; found by a review walk). Without prior, x-ignore-shared
// alone goes off.
func clearIgnoreShared(mon Monitor, pid int, prior map[string]bool) error {
	back := []map[string]any{{"capability": "x-ignore-shared", "state": prior["x-ignore-shared"]}}
	if prior != nil {
		for _, c := range ignoreShared[1:] {
			name := c["capability"].(string)
			if on, known := prior[name]; known && on {
				back = append(back, map[string]any{"capability": name, "state": true})
			}
		}
	}
	if err := qemu.QMP(mon, "migrate-set-capabilities", map[string]any{"capabilities": back}, nil); err != nil {
		return err
	}
	os.Remove(qemu.LockPath("ignore-shared", pid))
	return nil
}

// accelIsKVM says whether QEMU runs its guest under KVM (else TCG). Only
// query-kvm is asked: QEMU 7.2 under TCG crashes on some dirty-rate
// commands.
func accelIsKVM(mon Monitor) (bool, error) {
	var kvm struct {
		Enabled bool `json:"enabled"`
	}
	if err := qemu.QMP(mon, "query-kvm", nil, &kvm); err != nil {
		return false, err
	}
	return kvm.Enabled, nil
}
