package vmm

import "time"

// ThrottleRest makes every vCPU rest for d before it next enters the
// guest, as the throttler does at the end of a period's running share.
func (vm *VM) ThrottleRest(d time.Duration) {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	vm.sleepUntil.Store(time.Now().Add(d).UnixNano())
	for _, c := range vm.vcpus {
		c.kick()
	}
}

// PauseRequested reports whether the VM asks its vCPUs to stay paused.
func (vm *VM) PauseRequested() bool {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	return vm.pauseReq
}
