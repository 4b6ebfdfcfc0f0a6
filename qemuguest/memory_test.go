package qemuguest

import "testing"

func TestRAMPage(t *testing.T) {
	const gib = 1 << 30 / 4096 // pages
	tests := []struct {
		name          string
		gfn, ramPages uint64
		want          uint64
		ok            bool
	}{
		{"small guest", 100, 16384, 100, true},
		{"past a small guest's end", 16384, 16384, 0, false},
		{"large guest below the hole", 0xAFFFF, 4 * gib, 0xAFFFF, true},
		{"in the hole", 0xB0000, 4 * gib, 0, false},
		{"just below 4 GiB", 4*gib - 1, 4 * gib, 0, false},
		{"at 4 GiB", 4 * gib, 4 * gib, 0xB0000, true},
		{"last page", 4*gib + (4*gib - 0xB0000) - 1, 4 * gib, 4*gib - 1, true},
		{"past the end", 4*gib + (4*gib - 0xB0000), 4 * gib, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := ramPage(tt.gfn, tt.ramPages)
			if ok != tt.ok || (ok && got != tt.want) {
				t.Errorf("ramPage(%#x, %#x) = %#x, %v; want %#x, %v", tt.gfn, tt.ramPages, got, ok, tt.want, tt.ok)
			}
		})
	}
}
