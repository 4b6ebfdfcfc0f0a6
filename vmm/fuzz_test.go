package vmm_test

import (
	"bytes"
	"testing"

	"github.com/pagecast/pagecast/vmm"
)

// FuzzDecodeVCPUs: what decodes encodes back to the same bytes (one
// encoding a state), and a wrong count or length is refused.
func FuzzDecodeVCPUs(f *testing.F) {
	one, _ := vmm.EncodeVCPUs(make([]vmm.VCPUState, 1))
	two, _ := vmm.EncodeVCPUs(make([]vmm.VCPUState, 2))
	f.Add(one, 1)
	f.Add(two, 2)
	f.Add([]byte{0xff, 0xff, 0xff, 0xff}, 1)
	f.Fuzz(func(t *testing.T, p []byte, vcpus int) {
		states, err := vmm.DecodeVCPUs(p, vcpus)
		if err != nil {
			if states != nil {
				t.Fatalf("%d states with error %v", len(states), err)
			}
			return
		}
		if len(states) != vcpus {
			t.Fatalf("%d states for %d vcpus", len(states), vcpus)
		}
		again, err := vmm.EncodeVCPUs(states)
		if err != nil || !bytes.Equal(again, p) {
			t.Fatalf("decoded state re-encodes to %x, %v, not %x", again, err, p)
		}
	})
}
