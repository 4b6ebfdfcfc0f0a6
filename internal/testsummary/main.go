// Command testsummary reads `go test -json` on stdin and prints what plain
// `go test` prints (an ok line per package; for a failing one the failing
// tests' output, subtests indented, and its FAIL lines; build errors), then
// closes with the counts and the reasons tests were skipped:
//
//	412 passed, 0 failed, 41 skipped
//	skipped for want of: /dev/kvm 31, eBPF 6, QEMU 0; other reasons 4
//
// Skip reasons starting with internal/testutil's Need* prefixes are counted
// by what they need, so a green run on a machine without KVM is visibly
// thinner; the other reasons are listed with their tests above the counts,
// and so are the five slowest top-level tests of 10 s or more (one the
// timeout stopped too, by the time its panic gives), to say where a
// suite's time goes.
// It exits 1 when a test or a package (its build included) failed, when the
// input ends before a package does, or when it holds no package at all
// (make test).
package main

import (
	"fmt"
	"os"
)

func main() {
	ok, err := summarize(os.Stdin, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "testsummary:", err)
		os.Exit(2)
	}
	if !ok {
		os.Exit(1)
	}
}
