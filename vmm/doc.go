// Package vmm is pagecast's own small KVM virtual machine monitor.
//
// It runs the guest image from package guest on /dev/kvm through raw ioctls:
// guest RAM in one memfd-backed memory slot at guest physical address 0,
// vCPUs on locked OS threads entering in 32-bit protected mode the way a
// multiboot loader leaves them, and a COM1 serial port whose lines go to the
// log. The VM can be paused and resumed as a whole, and its vCPU state saved
// and restored.
//
// Dirty page tracking is KVM's, in either of its two forms, chosen when the
// VM is created: the per-vCPU dirty ring (KVM_CAP_DIRTY_LOG_RING; the form
// whose kvm_dirty_ring_push tracepoint the eBPF profiler watches) or the
// per-slot dirty bitmap (KVM_GET_DIRTY_LOG with
// KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 and KVM_CLEAR_DIRTY_LOG). Consumers open
// a DirtyLog; each sees every page dirtied since it last harvested, and
// logging is on while any is open.
//
// RegisterQMP exposes the VM through a QMP-compatible socket (package
// qmpserver) so that QEMU's tools, go-qemu and pagecast itself drive this
// monitor and QEMU the same way.
package vmm
