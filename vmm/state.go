package vmm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/pagecast/pagecast/guest"
)

// VCPUState is everything KVM holds for one vCPU of this monitor's guests:
// registers, segment and control registers, FPU/SSE state and pending
// events. The guest uses no MSRs, interrupt controller or timers.
type VCPUState struct {
	Regs   Regs
	Sregs  Sregs
	FPU    FPU
	Events VCPUEvents
	Halted bool
}

// SaveVCPUs captures the state of every vCPU. The VM must be paused (or not
// yet started).
func (vm *VM) SaveVCPUs() ([]VCPUState, error) {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	if vm.state == StateRunning {
		return nil, fmt.Errorf("save vcpu state: virtual machine is running")
	}
	out := make([]VCPUState, len(vm.vcpus))
	for i, c := range vm.vcpus {
		s := &out[i]
		for _, op := range []struct {
			name string
			err  error
		}{
			{"KVM_GET_REGS", ioctlPtr(c.fd, kvmGetRegs, &s.Regs)},
			{"KVM_GET_SREGS", ioctlPtr(c.fd, kvmGetSregs, &s.Sregs)},
			{"KVM_GET_FPU", ioctlPtr(c.fd, kvmGetFPU, &s.FPU)},
			{"KVM_GET_VCPU_EVENTS", ioctlPtr(c.fd, kvmGetVCPUEvents, &s.Events)},
		} {
			if op.err != nil {
				return nil, fmt.Errorf("vcpu %d: %s: %w", i, op.name, op.err)
			}
		}
		s.Halted = c.halted
	}
	return out, nil
}

// RestoreVCPUs loads states captured by SaveVCPUs, on this VM or another
// with the same number of vCPUs. The VM must be paused or not yet started.
func (vm *VM) RestoreVCPUs(states []VCPUState) error {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	if vm.state == StateRunning {
		return fmt.Errorf("restore vcpu state: virtual machine is running")
	}
	if len(states) != len(vm.vcpus) {
		return fmt.Errorf("restore vcpu state: %d states for %d vcpus", len(states), len(vm.vcpus))
	}
	for i, c := range vm.vcpus {
		s := &states[i]
		for _, op := range []struct {
			name string
			err  error
		}{
			{"KVM_SET_SREGS", ioctlPtr(c.fd, kvmSetSregs, &s.Sregs)},
			{"KVM_SET_REGS", ioctlPtr(c.fd, kvmSetRegs, &s.Regs)},
			{"KVM_SET_FPU", ioctlPtr(c.fd, kvmSetFPU, &s.FPU)},
			{"KVM_SET_VCPU_EVENTS", ioctlPtr(c.fd, kvmSetVCPUEvents, &s.Events)},
		} {
			if op.err != nil {
				return fmt.Errorf("vcpu %d: %s: %w", i, op.name, op.err)
			}
		}
		c.halted = s.Halted
	}
	return nil
}

// vcpuStateSize is one VCPUState's encoded size.
var vcpuStateSize = binary.Size(VCPUState{})

// EncodeVCPUs is the migration encoding of states (SaveVCPUs): count
// uint32, then each state in encoding/binary's little-endian layout. It is
// opaque to the migration engine, which carries it as the guest's state.
func EncodeVCPUs(states []VCPUState) ([]byte, error) {
	if len(states) < 1 || len(states) > guest.MaxCPUs {
		return nil, fmt.Errorf("encode vcpu state: %d vcpu states, want 1 to %d", len(states), guest.MaxCPUs)
	}
	p := binary.LittleEndian.AppendUint32(make([]byte, 0, 4+len(states)*vcpuStateSize), uint32(len(states)))
	for i := range states {
		var err error
		if p, err = binary.Append(p, binary.LittleEndian, &states[i]); err != nil {
			return nil, fmt.Errorf("encode vcpu state: vcpu %d: %w", i, err)
		}
	}
	return p, nil
}

// DecodeVCPUs reads EncodeVCPUs' encoding of exactly vcpus states. It
// accepts only the canonical encoding (no stray bits in padding or
// flags), so that a state has one meaning.
func DecodeVCPUs(p []byte, vcpus int) ([]VCPUState, error) {
	if len(p) < 4 {
		return nil, fmt.Errorf("decode vcpu state: %d bytes, too short for a vcpu count", len(p))
	}
	count := binary.LittleEndian.Uint32(p)
	switch {
	case count == 0:
		return nil, errors.New("decode vcpu state: no vcpu states")
	case count > guest.MaxCPUs:
		return nil, fmt.Errorf("decode vcpu state: %d vcpu states, more than the %d vcpus a guest can have", count, guest.MaxCPUs)
	case int(count) != vcpus:
		return nil, fmt.Errorf("decode vcpu state: %d vcpu states for a guest of %d vcpus", count, vcpus)
	}
	if want := 4 + int(count)*vcpuStateSize; len(p) != want {
		return nil, fmt.Errorf("decode vcpu state: %d bytes, want %d for %d vcpu states", len(p), want, count)
	}
	states := make([]VCPUState, count)
	var canon []byte
	for i := range states {
		enc := p[4+i*vcpuStateSize : 4+(i+1)*vcpuStateSize]
		if _, err := binary.Decode(enc, binary.LittleEndian, &states[i]); err != nil {
			return nil, fmt.Errorf("decode vcpu state: vcpu %d: %w", i, err)
		}
		// Decoding skips padding and reads any nonzero byte as a true bool;
		// re-encoding catches both.
		canon, _ = binary.Append(canon[:0], binary.LittleEndian, &states[i])
		if !bytes.Equal(canon, enc) {
			return nil, fmt.Errorf("decode vcpu state: vcpu %d: state is not canonically encoded (stray bits in padding or flags)", i)
		}
	}
	return states, nil
}
