package units

import (
	"strings"
	"testing"
)

func TestParseBytes(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want uint64
		ok   bool
	}{
		{"128M", 128 << 20, true},
		{"64MiB", 64 << 20, true},
		{"1G", 1 << 30, true},
		{"1T", 1 << 40, true},
		{"2TiB", 2 << 40, true},
		{"4P", 4 << 50, true}, // the most a 52-bit physical address reaches
		{"1EiB", 1 << 60, true},
		{"16E", 0, false},       // 2^64 bytes
		{"16777216T", 0, false}, // 2^64 bytes
		{"4096", 4096, true},
		{"2 KiB", 2048, true},
		{"12X", 0, false},
		{"-1M", 0, false},
		{"", 0, false},
		{"99999999999999999999G", 0, false},
		{"64m", 64 << 20, true}, // as QEMU's -m 64m
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseBytes(tc.in)
			if (err == nil) != tc.ok || got != tc.want {
				t.Fatalf("ParseBytes(%q) = %d, %v; want %d, ok=%v", tc.in, got, err, tc.want, tc.ok)
			}
		})
	}
}

func TestParseRate(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want uint64
		ok   bool
	}{
		{"100MiB/s", 100 << 20, true},
		{"64M/s", 64 << 20, true},
		{"2.5MiB/s", 5 << 19, true},
		{"2.8MiB/s", 2936012, true},
		{"4096/s", 4096, true},
		{"1Gbit/s", 125e6, true},
		{"2.5Gbit/s", 3125e5, true},
		{"500Mbit", 625e5, true},
		// Networking's spellings: bps is bits, Bps bytes; a lower-case b
		// after a prefix is bits; k is SI's kilo.
		{"1Gbps", 125e6, true},
		{"100Mbps", 125e5, true},
		{"1Gb/s", 125e6, true},
		{"100kb/s", 12500, true},
		{"10kbit/s", 1250, true},
		{"32MiBps", 32 << 20, true},
		{"64m/s", 64 << 20, true},
		{"0.5/s", 0, false},
		{"0MiB/s", 0, false},
		{"-1MiB/s", 0, false},
		{"NaNMiB/s", 0, false},
		{"InfGbit/s", 0, false},
		{"1e30G/s", 0, false},
		{"1.5xGbit/s", 0, false},
		{"fast", 0, false},
		{"", 0, false},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseRate(tc.in)
			if (err == nil) != tc.ok || got != tc.want {
				t.Fatalf("ParseRate(%q) = %d, %v; want %d, ok=%v", tc.in, got, err, tc.want, tc.ok)
			}
		})
	}
}

// TestParseRateTooLarge: a rate past MaxRate is refused as too large,
// naming the most taken, not as too small or as no number.
func TestParseRateTooLarge(t *testing.T) {
	for _, in := range []string{"1e30", "1e400", "1e30G/s", "9223372036854775808", "18446744073709551615",
		"99999999999999999999", "8EiB/s", "16E/s", "InfGbit/s", "1e20Tbit/s"} {
		t.Run(in, func(t *testing.T) {
			_, err := ParseRate(in)
			if err == nil || !strings.Contains(err.Error(), "is too large: the most taken is 9223372036854775807 bytes a second") {
				t.Fatalf("ParseRate(%q): %v; want too large", in, err)
			}
		})
	}
	for in, want := range map[string]uint64{"9223372036854775807": MaxRate, "9223372036854775807/s": MaxRate,
		"7EiB/s": 7 << 60, "1EiB/s": 1 << 60, "1000TiB/s": 1000 << 40, "9.2e18": 92e17} {
		if got, err := ParseRate(in); err != nil || got != want {
			t.Fatalf("ParseRate(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"0", "0.5/s", "1e-400", "-1e400"} {
		if _, err := ParseRate(in); err == nil || strings.Contains(err.Error(), "too large") {
			t.Fatalf("ParseRate(%q): %v; want a too-small or malformed rate", in, err)
		}
	}
}

func TestFormatBytes(t *testing.T) {
	for in, want := range map[float64]string{512: "512 B", 1536: "1.5 KiB", 128 << 20: "128.0 MiB", 3 << 30: "3.00 GiB", 1023 << 30: "1023.00 GiB", 1 << 40: "1.00 TiB", 4 << 50: "4.00 PiB"} {
		if got := FormatBytes(in); got != want {
			t.Errorf("FormatBytes(%v) = %q, want %q", in, got, want)
		}
	}
}
