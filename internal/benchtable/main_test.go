package main

import "testing"

// TestFormat: four figures below 1000, so that a budget's 15.56 bytes a
// page is not read as 16 (walk 70).
func TestFormat(t *testing.T) {
	for v, want := range map[float64]string{0: "0", 15.56: "15.56", 15.06: "15.06", 0.7430: "0.743", 123.45: "123.5",
		62019000: "62019000", -3.5: "-3.500", 1000: "1000"} {
		if got := format(v); got != want {
			t.Errorf("format(%v) = %q, want %q", v, got, want)
		}
	}
}
