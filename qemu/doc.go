// Package qemu boots the pagecast guest image under QEMU, the reference
// monitor pagecast is measured against: same image, same workload command
// line, same initial memory content (written into the shared file that is
// the guest's RAM before QEMU starts), and guest RAM in that shared file so
// the host reads the guest's status page directly. The QMP monitor is go-qemu's, as for pagecast's own monitor.
package qemu
