package printable

import (
	"fmt"
	"strings"
	"unicode"
)

// Line is s on one line with no control characters: a newline becomes
// "; " (a message of several lines reads on), any other control character
// an escape (\x1b, \u0085).
func Line(s string) string {
	if !strings.ContainsFunc(s, unicode.IsControl) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '\n':
			b.WriteString("; ")
		case r < 0x100 && unicode.IsControl(r):
			fmt.Fprintf(&b, "\\x%02x", r)
		case unicode.IsControl(r):
			fmt.Fprintf(&b, "\\u%04x", r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}
