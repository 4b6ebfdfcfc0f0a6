// Package collector profiles a running virtual machine's memory writes with
// pagecast's eBPF programs on KVM's tracepoints (package bpf), or, for a
// QEMU running its guest under TCG, with pagecast's TCG plugin (package
// tcg), whose per-page marks it reads from shared memory.
//
// It finds the VM through its QMP socket (pagecast's own monitor or QEMU):
// the VMM's process id from its vCPU threads, the guest memory size, the
// KVM dirty tracking mode and memory slots. It keeps KVM dirty logging on
// while it runs (x-pagecast-dirty-log-start on pagecast's monitor; a vCPU
// dirty limit far above any real rate on QEMU, which keeps QEMU's dirty
// ring reaper running without throttling), closes an epoch every interval,
// turns the hook's per-page records into the set of pages dirtied in each
// epoch, and exports Prometheus metrics. Under TCG there is no KVM dirty
// log to keep on: the plugin marks every guest store.
package collector
