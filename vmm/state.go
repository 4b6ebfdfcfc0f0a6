package vmm

import "fmt"

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
