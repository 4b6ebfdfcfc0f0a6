package predictor

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/pagecast/pagecast/trace"
)

// realTraces is where the traces of a real Linux guest running real
// programs are (see its README.md): 256 MiB guests, epochs of 100 ms.
const realTraces = "../../shared/traces"

// loadRealTrace reads one of the real traces, or skips the test if they
// are not there.
func loadRealTrace(tb testing.TB, name string) ([]trace.Epoch, uint64) {
	tb.Helper()
	path := filepath.Join(realTraces, name+".csv.gz")
	if _, err := os.Stat(path); err != nil {
		tb.Skipf("real traces not available: %v", err)
	}
	m, epochs, _, err := ReadTrace(path, CSVOptions{MemoryBytes: 256 << 20})
	if err != nil {
		tb.Fatal(err)
	}
	return epochs, m.Pages()
}
