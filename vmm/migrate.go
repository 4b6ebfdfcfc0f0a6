package vmm

import (
	"time"

	"github.com/pagecast/pagecast/bitmap"
	"github.com/pagecast/pagecast/migrator"
)

// Migratable is a VM as package migrator sees it: the source of a migration
// (migrator.Guest) or, created and not started, its destination
// (migrator.Destination). Its state is the vCPUs' (EncodeVCPUs); its early
// page is the guest's status page, which the monitor reads.
type Migratable struct{ vm *VM }

var (
	_ migrator.Guest       = (*Migratable)(nil)
	_ migrator.Destination = (*Migratable)(nil)
	_ migrator.PauseMarker = (*Migratable)(nil)

	// The wire format fixes the page size.
	_ [migrator.PageSize - PageSize]struct{}
	_ [PageSize - migrator.PageSize]struct{}
)

// Migratable returns vm for migrator.Outgoing, migrator.Receive or
// migrator.NewController.
func (vm *VM) Migratable() *Migratable { return &Migratable{vm: vm} }

func (m *Migratable) MemoryBytes() uint64 { return m.vm.MemoryBytes() }
func (m *Migratable) Memory() []byte      { return m.vm.Memory() }

// MemoryFD is the memfd guest memory is mapped from (migrator.MemoryFile):
// its holes are read as zeros without being touched.
func (m *Migratable) MemoryFD() int { return m.vm.memfd }

// Identity is the vCPU count and the guest image's digest.
func (m *Migratable) Identity() migrator.Identity {
	return migrator.Identity{VCPUs: m.vm.VCPUs(), Image: m.vm.ImageDigest()}
}

// Running reports whether the VM runs, and its run state as query-status
// names it: postmigrate once its guest has migrated away, inmigrate while
// it waits for one, which the engine's refusal to migrate it names (walk
// 128: told to cont a source in postmigrate, whose guest then ran twice).
func (m *Migratable) Running() (bool, string) {
	st := m.vm.RunState()
	return st == StateRunning, st
}

// MigratedOut tells the VM its guest has moved away (migrator.MigratedOuter).
func (m *Migratable) MigratedOut() { m.vm.MigratedOut() }

// Waiting reports whether the VM was created and never run, and its run
// state.
func (m *Migratable) Waiting() (bool, string) {
	st, _ := m.vm.State()
	return st == StatePrelaunch, st
}

// StartDirtyLog opens a KVM dirty log of the VM.
func (m *Migratable) StartDirtyLog() (migrator.DirtyLog, error) {
	d, err := m.vm.StartDirtyLog()
	if err != nil {
		return nil, err
	}
	return d, nil
}

func (m *Migratable) Pause() error { return m.vm.pause(true) }

// PausedAt is when the last Pause stopped the running vCPUs, the STOP
// event's time (migrator.PauseMarker).
func (m *Migratable) PausedAt() time.Time {
	m.vm.mu.Lock()
	defer m.vm.mu.Unlock()
	return m.vm.stoppedAt
}

func (m *Migratable) Resume() error             { return m.vm.Resume() }
func (m *Migratable) Throttle() int             { return m.vm.Throttle() }
func (m *Migratable) SetThrottle(pct int) error { return m.vm.SetThrottle(pct) }
func (m *Migratable) Start() error              { return m.vm.Start() }
func (m *Migratable) StartPaused() error        { return m.vm.StartPaused() }
func (m *Migratable) Stop() error               { return m.vm.Pause() }

// SaveState is the paused VM's vCPU state, EncodeVCPUs' encoding of
// SaveVCPUs.
func (m *Migratable) SaveState() ([]byte, error) {
	states, err := m.vm.SaveVCPUs()
	if err != nil {
		return nil, err
	}
	return EncodeVCPUs(states)
}

// Restore loads a SaveState of a VM with as many vCPUs.
func (m *Migratable) Restore(state []byte) error {
	states, err := DecodeVCPUs(state, m.vm.VCPUs())
	if err != nil {
		return err
	}
	return m.vm.RestoreVCPUs(states)
}

// EarlyPages is the guest's status page, if dirty: the destination's
// monitor reads it (query-status, progress) while the guest runs, so it
// must not be left missing in TSMC's stage 3.
func (m *Migratable) EarlyPages(dirty *bitmap.Bitmap) []uint64 {
	g := m.vm.Kernel().StatusAddr / PageSize
	if dirty.Has(g) {
		return []uint64{g}
	}
	return nil
}
