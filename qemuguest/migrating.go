package qemuguest

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"

	"github.com/pagecast/pagecast/qemu"
	"github.com/pagecast/pagecast/tcg"
)

// HoldMigration marks the guest of the QEMU on mon as being migrated by
// this process until release is called (or the process ends): a flock on
// its LockDir/migrate-PID.lock, which MigrationHolder reads. migrate takes
// it as soon as it has connected to the source, with either engine, so
// that a vm run stopped while migrate sets up (before pagecast's engine
// holds the dirty log, or while QEMU's own migration runs) waits for the
// migration instead of ending the guest (found by a CI run). A second
// pagecast migrate of the QEMU is an error naming the first. Where the
// QEMU's process cannot be found from here (another PID namespace) or
// LockDir is not writable, nothing is marked and release does nothing.
func HoldMigration(mon Monitor) (release func(), err error) {
	none := func() {}
	pid, err := ProcessOf(mon)
	if err != nil {
		slog.Debug("migration not marked for vm run", "err", err)
		return none, nil
	}
	f, err := takeLock("migrate", pid, "a vm run stopped during this migration would not wait for it")
	var busy *tcg.BusyError
	switch {
	case errors.As(err, &busy):
		return none, fmt.Errorf("%s is migrating this VM already (it holds %s): one migration of a guest at a time; wait for it to end, or stop it (Ctrl-C)", busy.Holder, busy.Path)
	case err != nil:
		return none, err
	case f == nil:
		return none, nil
	}
	// One left by a migrate killed before: this migration is now the
	// guest's.
	clearSwitchover(pid)
	return func() { f.Close() }, nil
}

// ProcessOf is the process ID of the QEMU on mon, found from its vCPU
// threads (query-cpus-fast): an error where QEMU does not say or its
// process is not seen from here (another PID namespace).
func ProcessOf(mon Monitor) (int, error) {
	cpus, err := vcpus(mon)
	if err != nil {
		return 0, err
	}
	return qemuPID(cpus[0].ThreadID)
}

// MigrationHolder names the pagecast migrate moving QEMU pid's guest, if
// one is: the process that holds its migrate lock (HoldMigration), its
// dirty log's (the KVM dirty-log lock, or the TCG plugin's area) with
// migrate on its command line. A profile holding the plugin's area is not
// one.
func MigrationHolder(pid int) (string, bool) {
	paths := []string{qemu.LockPath("migrate", pid), qemu.LockPath("dirty-log", pid)}
	if shm, err := tcg.FindShm(pid); err == nil {
		paths = append(paths, shm)
	}
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			continue
		}
		who, args := tcg.LockHolder(f)
		f.Close()
		if slices.Contains(args, "migrate") {
			return who, true
		}
	}
	return "", false
}

// A pagecast migrate whose engine has paused the guest for its
// switch-over (SaveState: QEMU's run state is then postmigrate, before the
// destination has the guest) says so in LockDir/switchover-PID.lock until
// it closes the Source, whatever the migration's end. Killed in between
// (SIGKILL), it leaves the file: the guest is paused here and may not be
// anywhere else, though QEMU's run state says it migrated (walk 103: vm
// run said the migration had completed, and a stop then ended the only
// copy of the guest).

// markSwitchover writes the switch-over file of QEMU pid, naming this
// process.
func markSwitchover(pid int) {
	writeSwitchover(pid, "", "a pagecast migrate killed during the switch-over would leave the guest paused unsaid")
}

// leaveUnconfirmed leaves QEMU pid's switch-over file for a migration
// that completed but whose destination did not confirm it runs the guest:
// the guest may be only here, paused, as after a migrate killed in its
// switch-over (walk 123: a stop of the source's vm run then ended the
// only copy left, at the first signal).
func leaveUnconfirmed(pid int) {
	writeSwitchover(pid, Unconfirmed, "a vm run of this guest would stop it at the first signal, though the destination did not confirm it runs the guest")
}

// writeSwitchover writes QEMU pid's switch-over file: this process, then
// why; where it cannot, it logs unwritten, what that leaves unsaid.
func writeSwitchover(pid int, why, unwritten string) {
	f, err := qemu.OpenLock("switchover", pid)
	if err != nil {
		slog.Warn(unwritten, "err", err)
		return
	}
	defer f.Close()
	f.Truncate(0)
	fmt.Fprintf(f, "process %d (%s)%s", os.Getpid(), strings.Join(os.Args, " "), why)
}

// Unconfirmed ends what AbandonedSwitchover names where the migrate
// exited after a migration its destination did not confirm
// (leaveUnconfirmed), not killed in its switch-over.
const Unconfirmed = ", whose destination did not confirm it runs the guest,"

// clearSwitchover removes QEMU pid's switch-over file.
func clearSwitchover(pid int) { os.Remove(qemu.LockPath("switchover", pid)) }

// ForgetSwitchover removes what a pagecast migrate killed during its
// switch-over left of QEMU pid (AbandonedSwitchover), once the guest
// runs there again; nothing while a migrate moves the guest.
func ForgetSwitchover(pid int) {
	if _, held := MigrationHolder(pid); !held {
		clearSwitchover(pid)
	}
}

// AbandonedSwitchover names the pagecast migrate that paused QEMU pid's
// guest for its switch-over and exited without ending the migration
// (killed), if one did and no pagecast migrate moves the guest now.
func AbandonedSwitchover(pid int) (string, bool) {
	if _, held := MigrationHolder(pid); held {
		return "", false
	}
	b, err := os.ReadFile(qemu.LockPath("switchover", pid))
	switch {
	case err != nil:
		return "", false
	case len(b) == 0:
		return "a pagecast migrate", true // killed before it named itself
	}
	return string(b), true
}
