package main

import (
	"strings"
	"testing"

	"github.com/pagecast/pagecast/guest"
)

// TestClampNote: a hot set larger than the guest's arena, which the guest
// clamps without a word, is said; one it holds, or a line that is not the
// banner, says nothing.
func TestClampNote(t *testing.T) {
	banner := "pagecast-guest v1 workload=hotset cpus=1 write=word delay=0 gate=0 hot=3072 p=58982 seed=1 arena=1024+3072 pages"
	for _, tc := range []struct {
		spec, line, want string
	}{
		{"hotset:hot=99999", banner, "the guest holds a hot set of 3072 pages, not the 99999 asked"},
		{"hotset:hot=3072", banner, ""},
		{"hotset:hot=99999", "some other line hot=3 ", ""},
		{"uniform", banner, ""},
	} {
		w, err := guest.ParseWorkload(tc.spec)
		if err != nil {
			t.Fatal(err)
		}
		got := clampNote(tc.line, w)
		if tc.want == "" && got != "" || tc.want != "" && !strings.Contains(got, tc.want) {
			t.Errorf("%s, %q: %q, want %q", tc.spec, tc.line, got, tc.want)
		}
	}
}
