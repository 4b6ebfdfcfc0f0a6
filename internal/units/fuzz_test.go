package units

import (
	"strconv"
	"strings"
	"testing"
)

// FuzzParseBytes: a size read prints back to itself, and is a multiple of
// its suffix's unit; an error comes with a zero.
func FuzzParseBytes(f *testing.F) {
	for _, s := range []string{"128M", "64MiB", "1G", "1T", "4096", " 7 k ", "16E", "15E", "0", "18446744073709551615", "1B", "-1", "1.5G"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseBytes(s)
		if err != nil {
			if n != 0 {
				t.Fatalf("ParseBytes(%q) = %d with error %v", s, n, err)
			}
			return
		}
		if m, err := ParseBytes(strconv.FormatUint(n, 10)); err != nil || m != n {
			t.Fatalf("ParseBytes(%q) = %d, but its decimal reads %d, %v", s, n, m, err)
		}
		// What a size takes a rate takes too, as the same bytes a second.
		if n >= 1 && n <= MaxRate && !strings.ContainsAny(s, "bp/") {
			if r, err := ParseRate(s); err != nil || r != n {
				t.Fatalf("ParseBytes(%q) = %d but ParseRate = %d, %v", s, n, r, err)
			}
		}
	})
}

// FuzzParseRate: a rate is 1 to MaxRate bytes a second, or an error and 0;
// the rate printed in bytes a second reads back the same.
func FuzzParseRate(f *testing.F) {
	for _, s := range []string{"100MiB/s", "2.5MiB/s", "1Gbit/s", "1Gbps", "32MiBps", "4096/s", "9223372036854775807",
		"9223372036854775808", "1e400", "1e-400", "NaN", "Inf/s", "-1G", "0x10", "0.125bit/s", "8E/s", "7.99999E"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRate(s)
		if err != nil {
			if r != 0 {
				t.Fatalf("ParseRate(%q) = %d with error %v", s, r, err)
			}
			return
		}
		if r < 1 || r > MaxRate {
			t.Fatalf("ParseRate(%q) = %d, out of 1 to %d", s, r, uint64(MaxRate))
		}
		if again, err := ParseRate(strconv.FormatUint(r, 10) + "/s"); err != nil || again != r {
			t.Fatalf("ParseRate(%q) = %d, but %d/s reads %d, %v", s, r, r, again, err)
		}
	})
}
