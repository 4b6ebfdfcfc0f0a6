// Package units parses and prints the sizes and rates pagecast's flags
// take: sizes "128M", "64MiB", "1G", "1T", "4096"; rates "100MiB/s", "2.5MiB/s",
// "1Gbit/s".
package units

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

var suffixes = []struct {
	s string
	n uint64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40}, {"PiB", 1 << 50}, {"EiB", 1 << 60},
	{"KB", 1 << 10}, {"MB", 1 << 20}, {"GB", 1 << 30}, {"TB", 1 << 40}, {"PB", 1 << 50}, {"EB", 1 << 60},
	{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"T", 1 << 40}, {"P", 1 << 50}, {"E", 1 << 60},
	{"k", 1 << 10}, {"m", 1 << 20}, {"g", 1 << 30}, {"t", 1 << 40}, {"p", 1 << 50}, {"e", 1 << 60}, // as QEMU's -m 64m
	{"B", 1},
}

// ParseBytes reads a size: a whole number with an optional binary suffix
// (K, M, G, T, P, E, KiB … EiB; KB … EB and k … e are read as binary too,
// as QEMU reads them).
func ParseBytes(s string) (uint64, error) {
	t := strings.TrimSpace(s)
	mult := uint64(1)
	for _, suf := range suffixes {
		if strings.HasSuffix(t, suf.s) {
			t, mult = strings.TrimSuffix(t, suf.s), suf.n
			break
		}
	}
	n, err := strconv.ParseUint(strings.TrimSpace(t), 10, 64)
	if errors.Is(err, strconv.ErrRange) {
		return 0, fmt.Errorf("size %q is too large", s) // a whole number, past 2^64 (walk 128)
	}
	if err != nil {
		return 0, fmt.Errorf("size %q: want a whole number with an optional K, M, G, T, P or E suffix", s)
	}
	if n > (1<<64-1)/mult {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return n * mult, nil
}

// ParseRate reads a rate in bytes a second: a size over a second (100MiB/s,
// 2.5M/s, 4096/s) or bits (1Gbit/s, 2.5Gbit/s, 500Mbit/s); the /s may be
// left out. Unlike a size, a rate may have a fraction.
func ParseRate(s string) (uint64, error) {
	t := strings.TrimSpace(s)
	// The per-second spellings of networking: 1Gbps (bits), 32MiBps (bytes).
	if v, ok := strings.CutSuffix(t, "bps"); ok {
		t = v + "bit/s"
	} else if v, ok := strings.CutSuffix(t, "Bps"); ok {
		t = v + "B/s"
	}
	t = strings.TrimSuffix(t, "/s")
	mult := 0.0
	for _, u := range []struct {
		s string
		n float64
	}{{"Tbit", 1e12 / 8}, {"Gbit", 1e9 / 8}, {"Mbit", 1e6 / 8}, {"Kbit", 1e3 / 8}, {"kbit", 1e3 / 8},
		{"Tb", 1e12 / 8}, {"Gb", 1e9 / 8}, {"Mb", 1e6 / 8}, {"Kb", 1e3 / 8}, {"kb", 1e3 / 8}, // a lower-case b is bits
		{"bit", 1.0 / 8}} {
		if v, ok := strings.CutSuffix(t, u.s); ok {
			t, mult = v, u.n
			break
		}
	}
	if mult == 0 {
		mult = 1
		for _, suf := range suffixes {
			if v, ok := strings.CutSuffix(t, suf.s); ok {
				t, mult = v, float64(suf.n)
				break
			}
		}
	}
	const units = "bytes (K, M, G, T binary, as QEMU reads them: 100M/s = 100MB/s = 100MiB/s) or bits (decimal: 1Gbit/s = 1Gb/s = 1Gbps)"
	tooLarge := fmt.Errorf("rate %q is too large: the most taken is %d bytes a second (8 EiB/s less a byte)", s, uint64(MaxRate))
	num := strings.TrimSpace(t)
	// A whole number of bytes is read exactly: 9223372036854775807 is
	// taken, though as a float64 it rounds up to 2^63.
	if n, err := strconv.ParseUint(num, 10, 64); err == nil && mult >= 1 && mult == float64(uint64(mult)) {
		m := uint64(mult)
		if n > MaxRate/m {
			return 0, tooLarge
		}
		if n == 0 {
			return 0, fmt.Errorf("rate %q: want at least 1 byte a second, in %s", s, units)
		}
		return n * m, nil
	} else if errors.Is(err, strconv.ErrRange) && !strings.HasPrefix(num, "-") {
		return 0, tooLarge
	}
	f, err := strconv.ParseFloat(num, 64)
	if errors.Is(err, strconv.ErrRange) && f > 0 { // e.g. 1e400, past float64's range
		return 0, tooLarge
	}
	if err != nil && !(errors.Is(err, strconv.ErrRange) && f == 0) { // 1e-400 is just too small
		return 0, fmt.Errorf("rate %q: want a number and a unit of %s, e.g. 100MiB/s, 2.5MiB/s or 1Gbit/s", s, units)
	}
	r := f * mult
	if r >= 1<<63 { // +Inf too; 2^63 itself is one past MaxRate
		return 0, tooLarge
	}
	if r >= 1 { // not NaN
		return uint64(r), nil
	}
	return 0, fmt.Errorf("rate %q: want at least 1 byte a second, in %s", s, units)
}

// MaxRate is the largest rate ParseRate takes, in bytes a second: the
// largest that fits an int64, as the rates' users multiply it with
// durations.
const MaxRate = 1<<63 - 1

// FormatBytes prints a size with a binary unit, e.g. "128 MiB", "1.5 KiB".
func FormatBytes(n float64) string {
	switch {
	case n >= 1<<50:
		return fmt.Sprintf("%.2f PiB", n/(1<<50))
	case n >= 1<<40:
		return fmt.Sprintf("%.2f TiB", n/(1<<40))
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", n/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", n/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", n/(1<<10))
	}
	return fmt.Sprintf("%.0f B", n)
}
