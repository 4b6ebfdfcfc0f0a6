// Package qemu starts QEMU VMs: the pagecast guest image, the reference
// monitor pagecast is measured against (same image, same workload command
// line, same initial memory content, written into the shared file that is
// the guest's RAM before QEMU starts, so the host reads the guest's status
// page directly), and Linux guests (a Debian kernel and an initramfs built
// at run time: BuildInitramfs, DebianKernel, PVHKernel). It chooses the
// accelerator (ResolveAccel: KVM where /dev/kvm opens, else TCG with
// pagecast's plugin), reads QEMU's version and the guest's memory layout,
// and keeps dirty logging on. The QMP monitor is package qmpclient's, as
// for pagecast's own monitor.
package qemu
