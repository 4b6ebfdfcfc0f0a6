package bpf

import (
	"os"
	"testing"

	"github.com/pagecast/pagecast/internal/testutil"
)

// TestAutoHookFallback checks that Load without a named hook takes the best
// one that works, and says why each better one was passed over.
func TestAutoHookFallback(t *testing.T) {
	testutil.RequiresBPF(t)
	for _, mode := range []string{ModeRing, ModeBitmap} {
		t.Run(mode, func(t *testing.T) {
			p, err := Load(Options{PID: uint32(os.Getpid()), MaxPages: 16, Mode: mode})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			probe := Probe(mode)
			var better []string
			for _, s := range probe {
				if s.Hook.Name == p.Hook().Name {
					if s.Err != nil {
						t.Fatalf("Load chose %s, which Probe says fails: %v", s.Hook.Name, s.Err)
					}
					break
				}
				if s.Err == nil && s.Hook.Name != "tracepoint/kvm/kvm_dirty_ring_push" {
					t.Fatalf("Load chose %s over %s, which works", p.Hook().Name, s.Hook.Name)
				}
				better = append(better, s.Hook.Name)
			}
			if len(p.Fallbacks) != len(better) {
				t.Fatalf("fallbacks %v, want one per better hook %v", p.Fallbacks, better)
			}
			for _, f := range p.Fallbacks {
				if f.Err == nil {
					t.Fatalf("fallback %s without a reason", f.Hook.Name)
				}
				t.Logf("passed over %s: %v", f.Hook.Name, f.Err)
			}
			t.Logf("%s mode uses %s", mode, p.Hook().Name)
		})
	}
}

func TestDirtyIn(t *testing.T) {
	state := func(hist uint64, last uint16) PageState { return PageState{State: hist<<16 | uint64(last)} }
	for _, tc := range []struct {
		name   string
		s      PageState
		e, cur uint32
		want   bool
	}{
		{"written this epoch", state(1, 7), 7, 7, true},
		{"written last epoch, read now", state(1, 6), 6, 7, true},
		{"two epochs back in history", state(0b101, 9), 7, 9, true},
		{"gap in history", state(0b101, 9), 8, 9, false},
		{"never written", state(0, 0), 3, 5, false},
		{"older than the history", state(1<<47, 100), 100 - 47, 100, true},
		{"epoch after last write", state(1, 5), 6, 9, false},
		{"16-bit wrap", state(0b11, 1), 65536, 65537, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := DirtyIn(tc.s, tc.e, tc.cur); got != tc.want {
				t.Fatalf("DirtyIn(%#x, %d, %d) = %v, want %v", tc.s.State, tc.e, tc.cur, got, tc.want)
			}
		})
	}
}
