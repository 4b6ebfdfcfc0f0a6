package printable

import "testing"

func TestLine(t *testing.T) {
	for in, want := range map[string]string{
		"plain text, ü":                    "plain text, ü",
		"boom\nline2":                      "boom; line2",
		"\x1b[2J\x1b[31mred\x1b]0;pwn\x07": `\x1b[2J\x1b[31mred\x1b]0;pwn\x07`,
		"a\tb\rc\u0085d":                   `a\x09b\x0dc\x85d`,
		"":                                 "",
		"bad\xff\xfe\xc3(ok\x9b[2J":        `bad\xff\xfe\xc3(ok\x9b[2J`,
		"ü\xffü":                           `ü\xffü`,
		"abc\u202edcba.pct \u2066x\u2069":  `abc\u202edcba.pct \u2066x\u2069`,
		"café 日本 \u200d":                   "café 日本 \u200d",
	} {
		if got := Line(in); got != want {
			t.Errorf("Line(%q) = %q, want %q", in, got, want)
		}
	}
}
