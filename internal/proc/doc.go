// Package proc says, from Linux's /proc, whether a process has ended
// (pagecast watches QEMUs it did not start, and a QEMU started from a shell
// that never waits for it stays a zombie after it exits), how much CPU a
// thread has had (mode auto weighs the cores a guest's vCPUs take), and
// which process holds a socket (who holds a QMP socket; which QEMU listens
// for a migration).
package proc
