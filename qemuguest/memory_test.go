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
		// A 3 GiB guest is all below 4 GiB (the page at 2.75 GiB was
		// once taken for the hole, and the pages from there on were
		// never resent: the migration's checksums caught it).
		{"3 GiB guest at 2.75 GiB", 0xB0000, 3 * gib, 0xB0000, true},
		{"3 GiB guest's last page", 3*gib - 1, 3 * gib, 3*gib - 1, true},
		{"past a 3 GiB guest's end", 3 * gib, 3 * gib, 0, false},
		// A 4 GiB guest keeps 3 GiB below 4 GiB, 1 GiB above.
		{"large guest below the hole", 3*gib - 1, 4 * gib, 3*gib - 1, true},
		{"in the hole", 3 * gib, 4 * gib, 0, false},
		{"just below 4 GiB", 4*gib - 1, 4 * gib, 0, false},
		{"at 4 GiB", 4 * gib, 4 * gib, 3 * gib, true},
		{"last page", 5*gib - 1, 4 * gib, 4*gib - 1, true},
		{"past the end", 5 * gib, 4 * gib, 0, false},
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
