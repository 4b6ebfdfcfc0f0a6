package vmm_test

import (
	"encoding/binary"
	"reflect"
	"strings"
	"testing"

	"github.com/pagecast/pagecast/vmm"
)

// testVCPUStates returns n distinct vCPU states with every part set.
func testVCPUStates(n int) []vmm.VCPUState {
	states := make([]vmm.VCPUState, n)
	for i := range states {
		s := &states[i]
		s.Regs.RIP = 0x100000 + uint64(i)
		s.Regs.RSP = 0x7000 - uint64(i)*0x1000
		s.Regs.RFLAGS = 2
		s.Sregs.CS = vmm.Segment{Base: 0, Limit: 0xffffffff, Selector: 8, Type: 11, Present: 1, DB: 1, S: 1, G: 1}
		s.Sregs.GDT = vmm.DTable{Base: 0x1000, Limit: 23}
		s.Sregs.CR0 = 0x80000011
		s.Sregs.CR3 = 0x9000
		s.Sregs.InterruptBitmap[3] = 1 << 63
		for j := range s.FPU {
			s.FPU[j] = byte(j + i)
		}
		s.Events[0] = byte(i + 1)
		s.Halted = i%2 == 1
	}
	return states
}

func TestVCPUStateEncoding(t *testing.T) {
	states := testVCPUStates(2)
	enc, err := vmm.EncodeVCPUs(states)
	if err != nil {
		t.Fatal(err)
	}
	got, err := vmm.DecodeVCPUs(enc, 2)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, states) {
		t.Fatal("vcpu states differ after a round trip")
	}

	one, _ := vmm.EncodeVCPUs(testVCPUStates(1))
	badHalted := append([]byte(nil), one...)
	badHalted[len(badHalted)-1] = 2
	badPadding := append([]byte(nil), one...)
	badPadding[4+binary.Size(vmm.Regs{})+23] = 1 // CS's pad byte
	for _, tc := range []struct {
		name  string
		enc   []byte
		vcpus int
		want  string
	}{
		{"short", []byte{1, 0}, 1, "too short for a vcpu count"},
		{"none", []byte{0, 0, 0, 0}, 1, "no vcpu states"},
		{"over max", []byte{0xe8, 3, 0, 0}, 1, "1000 vcpu states, more than the 16"},
		{"other count", enc, 1, "2 vcpu states for a guest of 1 vcpus"},
		{"length", append(append([]byte(nil), enc...), 0), 2, "want 1878 for 2 vcpu states"},
		{"halted", badHalted, 1, "vcpu 0: state is not canonically encoded"},
		{"padding", badPadding, 1, "vcpu 0: state is not canonically encoded"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := vmm.DecodeVCPUs(tc.enc, tc.vcpus); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("DecodeVCPUs: %v, want an error about %q", err, tc.want)
			}
		})
	}
	for _, n := range []int{0, 17} {
		if _, err := vmm.EncodeVCPUs(make([]vmm.VCPUState, n)); err == nil {
			t.Errorf("EncodeVCPUs of %d states: no error", n)
		}
	}
}
