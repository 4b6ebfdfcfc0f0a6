package qemuguest

import (
	"strings"
	"testing"
)

func TestIncomingArg(t *testing.T) {
	tests := []struct {
		cmdline, want string
		ok            bool
	}{
		{"qemu-system-x86_64 -m 64M -incoming defer -S", "defer", true},
		{"qemu-system-x86_64 --incoming unix:/tmp/in.sock", "unix:/tmp/in.sock", true},
		{"qemu-system-x86_64 -incoming=tcp:127.0.0.1:4444", "tcp:127.0.0.1:4444", true},
		{"qemu-system-x86_64 -m 64M", "", false},
		{"qemu-system-x86_64 -incoming", "", false},
	}
	for _, tt := range tests {
		got, ok := incomingArg(strings.Fields(tt.cmdline))
		if got != tt.want || ok != tt.ok {
			t.Errorf("%q: %q, %v; want %q, %v", tt.cmdline, got, ok, tt.want, tt.ok)
		}
	}
}
