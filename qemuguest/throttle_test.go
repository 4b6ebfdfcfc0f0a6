package qemuguest

import (
	"testing"
	"time"
)

func TestCFSPeriod(t *testing.T) {
	for _, tt := range []struct {
		pct    int
		period time.Duration
	}{{1, 20 * time.Millisecond}, {50, 20 * time.Millisecond}, {95, 20 * time.Millisecond}, {96, 25 * time.Millisecond}, {99, 100 * time.Millisecond}} {
		p := cfsPeriod(tt.pct)
		quota := p * time.Duration(100-tt.pct) / 100
		if p != tt.period || quota < time.Millisecond || p > time.Second {
			t.Errorf("cfsPeriod(%d) = %s (quota %s), want %s", tt.pct, p, quota, tt.period)
		}
	}
}
