// Package testutil holds helpers for tests that need the machine's real
// parts (KVM, QEMU): they probe the feature and skip with a reason where it
// is missing. On pagecast's own machines everything is present, so CI runs
// them.
package testutil

import (
	"os"
	"os/exec"
	"testing"
)

// RequiresKVM skips the test unless /dev/kvm can be opened read-write.
func RequiresKVM(t testing.TB) {
	t.Helper()
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("needs KVM: %v", err)
	}
	f.Close()
}

// RequiresQEMU skips the test unless qemu-system-x86_64 is installed and
// KVM is usable; it returns the binary's path.
func RequiresQEMU(t testing.TB) string {
	t.Helper()
	RequiresKVM(t)
	path, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Skipf("needs qemu-system-x86_64 (Debian package qemu-system-x86): %v", err)
	}
	return path
}

// RequiresBPF skips the test unless it runs as root on a kernel with BTF,
// which pagecast's eBPF programs need.
func RequiresBPF(t testing.TB) {
	t.Helper()
	RequiresKVM(t)
	if os.Geteuid() != 0 {
		t.Skip("needs root to load eBPF programs")
	}
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		t.Skipf("needs kernel BTF: %v", err)
	}
}
