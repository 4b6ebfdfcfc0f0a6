// Package testutil holds helpers for tests that need the machine's real
// parts (KVM, QEMU, eBPF): they probe the feature and skip with a reason
// where it is missing. Each skip reason starts with one of the Need*
// prefixes, so a run can count what it skipped and why (internal/testsummary).
package testutil

import (
	"os"
	"os/exec"
	"testing"

	"github.com/pagecast/pagecast/qemu"
)

// The first words of every skip reason this package gives.
const (
	NeedKVM  = "needs /dev/kvm"
	NeedBPF  = "needs eBPF"
	NeedQEMU = "needs QEMU"
)

// RequiresKVM skips the test unless /dev/kvm can be opened read-write.
func RequiresKVM(t testing.TB) {
	t.Helper()
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("%s: %v", NeedKVM, err)
	}
	f.Close()
}

// QEMUAccel is the accelerator for tests of the QEMU guest on both paths:
// "kvm" wherever /dev/kvm opens read-write, "tcg" elsewhere. Unlike
// qemu.AccelAuto it takes kvm-pvm's /dev/kvm too (slow, since it emulates
// the guest), so that a machine with any KVM tests QEMU's KVM path.
func QEMUAccel() string {
	if qemu.KVMUsable() != nil {
		return qemu.AccelTCG
	}
	return qemu.AccelKVM
}

// RequiresQEMU skips the test unless qemu-system-x86_64 is installed; it
// returns the binary's path. Such tests run under qemu.AccelAuto unless they
// ask for an accelerator (QEMUAccel).
func RequiresQEMU(t testing.TB) string {
	t.Helper()
	path, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Skipf("%s: qemu-system-x86_64 (Debian package qemu-system-x86): %v", NeedQEMU, err)
	}
	return path
}

// RequiresQEMUWithKVM skips the test unless QEMU is installed and KVM is
// usable, for tests of what only KVM has (the dirty ring, eBPF on KVM's
// tracepoints).
func RequiresQEMUWithKVM(t testing.TB) string {
	t.Helper()
	RequiresKVM(t)
	return RequiresQEMU(t)
}

// RequiresBPF skips the test unless it runs as root on a kernel with BTF
// and KVM, which pagecast's eBPF programs hook.
func RequiresBPF(t testing.TB) {
	t.Helper()
	RequiresKVM(t)
	if os.Geteuid() != 0 {
		t.Skipf("%s: root to load programs", NeedBPF)
	}
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		t.Skipf("%s: kernel BTF: %v", NeedBPF, err)
	}
}

// RequiresLinuxGuest skips the test in short mode or unless QEMU, a Debian
// kernel in /boot and a static busybox (for the initramfs) are there, and
// returns the kernel.
func RequiresLinuxGuest(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("boots QEMU; skipped in short mode")
	}
	RequiresQEMU(t)
	kernel, err := qemu.DebianKernel()
	if err != nil {
		t.Skipf("needs a Linux kernel for the guest: %v", err)
	}
	if _, err := os.Stat("/bin/busybox"); err != nil {
		t.Skipf("needs /bin/busybox (Debian package busybox-static) for the initramfs: %v", err)
	}
	return kernel
}
