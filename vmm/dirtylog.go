package vmm

import (
	"errors"
	"fmt"
	"runtime"
	"time"
)

// DirtyLog is one consumer's view of KVM dirty logging: every page the
// guest (or the monitor) wrote since the log was started or last
// harvested. Several logs can be open at once (a dirty-rate measurement, a
// profiler, a migration); each sees every page, and KVM logging stays on
// while any is open.
type DirtyLog struct {
	vm     *VM
	set    *Bitmap
	closed bool
}

// StartDirtyLog opens a dirty log. The first one turns on KVM dirty logging
// for guest memory.
func (vm *VM) StartDirtyLog() (*DirtyLog, error) {
	vm.dirtyMu.Lock()
	defer vm.dirtyMu.Unlock()
	if vm.mem == nil || vm.logsShut {
		return nil, errors.New("start dirty log: virtual machine is closed")
	}
	if len(vm.logs) == 0 {
		if err := vm.setMemoryRegion(kvmMemLogDirtyPages); err != nil {
			return nil, fmt.Errorf("enable dirty logging: %w", err)
		}
		// Anything the tracker held from an earlier session is stale.
		if err := vm.tracker.harvest(NewBitmap(vm.cfg.MemoryBytes / PageSize)); err != nil {
			return nil, fmt.Errorf("reset dirty log: %w", err)
		}
		vm.monitorDirty.Clear()
		vm.reaperStop = make(chan struct{})
		vm.reapers.Add(1)
		go vm.reap(vm.reaperStop)
	} else if err := vm.harvestLocked(); err != nil {
		return nil, err
	}
	d := &DirtyLog{vm: vm, set: NewBitmap(vm.cfg.MemoryBytes / PageSize)}
	vm.logs[d] = struct{}{}
	return d, nil
}

// harvestLocked collects newly dirtied pages into every open log.
func (vm *VM) harvestLocked() error {
	if len(vm.logs) == 0 {
		return nil
	}
	fresh := NewBitmap(vm.cfg.MemoryBytes / PageSize)
	if err := vm.tracker.harvest(fresh); err != nil {
		return fmt.Errorf("harvest dirty pages: %w", err)
	}
	fresh.Or(vm.monitorDirty)
	vm.monitorDirty.Clear()
	for d := range vm.logs {
		d.set.Or(fresh)
	}
	return nil
}

// The reaper collects from KVM while logs are open and nobody asks. KVM
// only reports a page again once its earlier report was collected, so
// regular collection is what lets every write of a page be seen (QEMU's
// dirty ring reaper does the same). Rings are drained into the tracker
// far more often than bitmaps are read: where KVM emulates instructions
// every store takes a ring entry, a 64 Ki-entry ring fills in about 30 ms
// of whole-page writes, and a ring KVM overfills is lost (ErrRingOverflow).
// The reaper has an OS thread of its own so Go's scheduler never delays it.
const (
	ringReapInterval   = 2 * time.Millisecond
	bitmapReapInterval = 100 * time.Millisecond
)

func (vm *VM) reap(stop chan struct{}) {
	defer vm.reapers.Done()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	rt, ring := vm.tracker.(*ringTracker)
	interval := bitmapReapInterval
	if ring {
		interval = ringReapInterval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		var err error
		if ring {
			err = rt.reap()
		} else {
			vm.dirtyMu.Lock()
			err = vm.harvestLocked()
			vm.dirtyMu.Unlock()
		}
		if err != nil {
			vm.log.Error("reap dirty pages", "err", err)
		}
	}
}

// Harvest returns the pages dirtied since the log started or was last
// harvested, and starts a new interval. Pages still sitting in a running
// vCPU's hardware buffers are caught by the next harvest; pause the VM
// first for an exact cut.
func (d *DirtyLog) Harvest() (*Bitmap, error) {
	vm := d.vm
	vm.dirtyMu.Lock()
	defer vm.dirtyMu.Unlock()
	if d.closed {
		return nil, errors.New("harvest: dirty log is closed")
	}
	if err := vm.harvestLocked(); err != nil {
		return nil, err
	}
	out := d.set
	d.set = NewBitmap(vm.cfg.MemoryBytes / PageSize)
	return out, nil
}

// Close ends the log. The last one turns KVM dirty logging off.
func (d *DirtyLog) Close() error {
	vm := d.vm
	vm.dirtyMu.Lock()
	defer vm.dirtyMu.Unlock()
	if d.closed {
		return nil
	}
	d.closed = true
	delete(vm.logs, d)
	if len(vm.logs) > 0 || vm.mem == nil {
		return nil
	}
	close(vm.reaperStop) // VM.Close waits for the reaper to be gone
	if err := vm.setMemoryRegion(0); err != nil {
		return fmt.Errorf("disable dirty logging: %w", err)
	}
	return nil
}

// DirtyLogging reports whether any dirty log is open.
func (vm *VM) DirtyLogging() bool {
	vm.dirtyMu.Lock()
	defer vm.dirtyMu.Unlock()
	return len(vm.logs) > 0
}

// WriteGuest copies data into guest memory at guest physical address addr.
// KVM does not see these writes, so the monitor marks the pages dirty
// itself while dirty logging is on.
func (vm *VM) WriteGuest(addr uint64, data []byte) error {
	vm.dirtyMu.Lock() // Close unmaps the memory under it
	defer vm.dirtyMu.Unlock()
	if vm.mem == nil {
		return errors.New("write guest memory: the virtual machine is closed")
	}
	if addr+uint64(len(data)) > uint64(len(vm.mem)) || addr+uint64(len(data)) < addr {
		return fmt.Errorf("write guest memory: %d bytes at %#x is outside %d bytes of RAM", len(data), addr, len(vm.mem))
	}
	copy(vm.mem[addr:], data)
	if len(vm.logs) > 0 && len(data) > 0 {
		for p := addr / PageSize; p <= (addr+uint64(len(data))-1)/PageSize; p++ {
			vm.monitorDirty.Set(p)
		}
	}
	return nil
}
