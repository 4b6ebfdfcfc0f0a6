package qemuguest

import (
	"cmp"
	"fmt"
	"path/filepath"

	"github.com/pagecast/pagecast/internal/scratch"
	"github.com/pagecast/pagecast/qemu"
	"github.com/pagecast/pagecast/tcg"
)

// StartSource boots a QEMU (qemu.Start with o) that pagecast's engine can
// migrate: guest RAM in a shared file (as qemu.Start always does),
// pagecast's plugin under TCG, the 64 Ki-entry dirty ring under KVM. Close
// stops QEMU.
func StartSource(o qemu.Options) (*Source, error) {
	v, cleanup, err := start(o)
	if err != nil {
		return nil, err
	}
	s, err := FromVM(v)
	if err != nil {
		cleanup()
		return nil, err
	}
	s.v = v
	s.owned = append(s.owned, cleanup)
	return s, nil
}

// StartDest boots a QEMU as StartSource does, waiting for a migration:
// with -incoming defer (Restore then names the socket) unless o.Incoming
// says otherwise (unix:PATH, tcp:HOST:PORT). Close stops QEMU.
func StartDest(o qemu.Options) (*Dest, error) {
	if o.Incoming == "" {
		o.Incoming = "defer"
	}
	v, cleanup, err := start(o)
	if err != nil {
		return nil, err
	}
	d, err := DestFromVM(v)
	if err != nil {
		cleanup()
		return nil, err
	}
	d.v = v
	d.owned = append(d.owned, cleanup)
	return d, nil
}

// VM is the QEMU StartSource or StartDest booted (nil otherwise).
func (g *vm) VM() *qemu.VM { return g.v }

// start boots QEMU with what the engine needs; cleanup stops it and removes
// the plugin's files.
func start(o qemu.Options) (_ *qemu.VM, cleanup func() error, err error) {
	accel, _, err := qemu.ResolveAccel(o.Accel)
	if err != nil {
		return nil, nil, err
	}
	o.Accel = accel
	dir := ""
	switch accel {
	case qemu.AccelTCG:
		if o.Plugin == "" {
			// The plugin's area is not in /dev/shm's default place: QEMU
			// removes it only when it exits normally, not when killed.
			if dir, err = scratch.Dir(scratch.Base(), "pagecast-qemuguest-"); err != nil {
				return nil, nil, err
			}
			so, err := tcg.WritePlugin(dir)
			if err != nil {
				scratch.Remove(dir)
				return nil, nil, err
			}
			o.Plugin = tcg.PluginArg(so, filepath.Join(dir, "dirty.shm"), qemu.PluginPagesFor(o.Binary, cmp.Or(o.Machine, "pc"), o.MemoryBytes))
		}
	case qemu.AccelKVM:
		if o.DirtyRingSize == 0 {
			o.DirtyRingSize = 65536
		}
	}
	v, err := qemu.Start(o)
	if err != nil {
		if dir != "" {
			scratch.Remove(dir)
		}
		if perr := tcg.ExplainLoadError(fmt.Sprint(err)); perr != nil {
			err = perr
		}
		return nil, nil, err
	}
	return v, func() error {
		err := v.Close()
		if dir != "" {
			scratch.Remove(dir)
		}
		return err
	}, nil
}
