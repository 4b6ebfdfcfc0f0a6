package vmm

import (
	"fmt"
	"time"
)

// throttlePeriod is the duty cycle of vCPU throttling: in each period the
// vCPUs run for (100-pct)% and sleep for pct%, as QEMU's cpu-throttle does
// with its 10 ms timeslice. (The period stretches when the host oversleeps
// the running part, so that the share holds.)
const throttlePeriod = 10 * time.Millisecond

// SetThrottle takes pct percent of the vCPUs' time away from the guest
// (0 lifts the throttle; at most 99). A migration uses it to slow a guest
// that dirties memory faster than the link can carry it. A throttler
// goroutine kicks the vCPUs out of KVM_RUN every period; each then sleeps
// until the period's running share comes round again.
func (vm *VM) SetThrottle(pct int) error {
	if pct < 0 || pct > 99 {
		return fmt.Errorf("throttle %d%%: want 0 to 99", pct)
	}
	vm.mu.Lock()
	defer vm.mu.Unlock()
	vm.throttlePct.Store(int32(pct))
	if pct > 0 && !vm.throttling && vm.state != StateShutdown {
		vm.throttling = true
		go vm.throttler()
	}
	return nil
}

// Throttle is the percentage of vCPU time taken away now.
func (vm *VM) Throttle() int { return int(vm.throttlePct.Load()) }

// throttler decides to end, and says so (throttling false), under vm.mu,
// where SetThrottle sets the share: a SetThrottle(n) after a SetThrottle(0)
// then either finds it running or starts another. (It read 0 and said so
// later, in a deferred function waiting for vm.mu: a SetThrottle(n) in
// between found it running, started none, and nothing throttled; found by
// a review walk.)
func (vm *VM) throttler() {
	for {
		vm.mu.Lock()
		pct := time.Duration(vm.throttlePct.Load())
		if pct == 0 || vm.quitting {
			vm.throttling = false
			vm.mu.Unlock()
			return
		}
		vm.mu.Unlock()
		started := time.Now()
		time.Sleep(throttlePeriod * (100 - pct) / 100)
		// The vCPUs ran for as long as the sleep really took, timer slack
		// included (a 0.1 ms sleep takes a millisecond or more on a busy
		// host); size their rest from that so the share holds at 99 % too.
		ran := time.Since(started)
		vm.mu.Lock()
		if vm.quitting {
			vm.throttling = false
			vm.mu.Unlock()
			return
		}
		sleep := ran * pct / (100 - pct)
		vm.sleepUntil.Store(time.Now().Add(sleep).UnixNano())
		for _, c := range vm.vcpus {
			c.kick()
		}
		vm.mu.Unlock()
		time.Sleep(sleep)
	}
}

// throttleSleep is called by a vCPU thread before it enters the guest: it
// sleeps out the current throttle period, if any, in slices of at most
// throttleWake, so that a pause or quit cuts it short. (At 99% a period's
// rest is 100 ms or more: slept whole, it held a switch-over's pause, which
// waits for every vCPU, for up to 937 ms.)
func (c *vcpu) throttleSleep() {
	for {
		d := time.Until(time.Unix(0, c.vm.sleepUntil.Load()))
		if d <= 0 || c.vm.stopping.Load() {
			return
		}
		time.Sleep(min(d, throttleWake))
	}
}

// throttleWake is how soon a throttled vCPU notices a pause.
const throttleWake = time.Millisecond
