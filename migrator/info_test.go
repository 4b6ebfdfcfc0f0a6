package migrator

import "testing"

func TestGuestSlowdown(t *testing.T) {
	for _, tt := range []struct {
		name string
		i    Info
		want float64
	}{
		{"no pagecast figures", Info{TotalTime: 1000}, 0},
		{"no vCPU count", Info{TotalTime: 1000, Pagecast: &Extra{Slowdown: Slowdown{ThrottleTime: 500}}}, 0},
		{"nothing lost", Info{TotalTime: 1000, Pagecast: &Extra{Slowdown: Slowdown{VCPUs: 2}}}, 0},
		// 2 vCPUs over 1000 ms less 200 ms of downtime: 1600 ms of vCPU
		// time, 400 throttled and 400 waiting.
		{"throttle and faults", Info{TotalTime: 1000, Downtime: 200, Pagecast: &Extra{Slowdown: Slowdown{VCPUs: 2, ThrottleTime: 400, FaultTime: 400}}}, 0.5},
		{"all downtime", Info{TotalTime: 100, Downtime: 100, Pagecast: &Extra{Slowdown: Slowdown{VCPUs: 1, FaultTime: 5}}}, 0},
		{"rounding past the whole", Info{TotalTime: 100, Pagecast: &Extra{Slowdown: Slowdown{VCPUs: 1, ThrottleTime: 99, FaultTime: 3}}}, 1},
	} {
		if got := tt.i.GuestSlowdown(); got != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
		}
	}
}
