package migrator

import (
	"testing"
	"time"
)

// TestRestop: a downtime limit or link cap changed during a round sets the
// round's stop anew at the next harvest: a raised limit lets more pages
// stop it, a cap lowered below the round's rate fewer; a cap raised
// promises no more than the round has measured, and a lowered cap holds
// against round 1's measure; nothing changed, or no stop set (tsmc's
// stage 1), leaves it.
func TestRestop(t *testing.T) {
	m := &Migration{limit: NewLimiter(8 << 20)}
	m.downtime.Store(int64(300 * time.Millisecond))
	s := &sender{m: m, wireShare: 1}
	s.round = roundRate{bw: 8 << 20, stopBW: 8 << 20, limit: m.DowntimeLimit()}
	s.stopAt = uint64(s.transferable(s.round.stopBW, 0) / PageSize)
	at300 := s.stopAt // 0.9 × 8 MiB/s × 0.3 s: 553 pages
	if at300 != 552 && at300 != 553 {
		t.Fatalf("stopAt %d at 8 MiB/s and 300 ms, want 553", at300)
	}
	s.restop()
	if s.stopAt != at300 {
		t.Errorf("nothing changed: stopAt %d, want %d", s.stopAt, at300)
	}
	m.SetDowntimeLimit(3 * time.Second)
	s.restop()
	if s.stopAt < 10*at300-10 || s.stopAt > 10*at300+10 {
		t.Errorf("limit raised tenfold: stopAt %d, want about %d", s.stopAt, 10*at300)
	}
	m.limit.SetRate(1 << 20)
	s.restop()
	if s.stopAt < 10*at300/8-10 || s.stopAt > 10*at300/8+10 {
		t.Errorf("cap lowered to an eighth: stopAt %d, want about %d", s.stopAt, 10*at300/8)
	}
	// remeasure, in round 1, sets the stop for the round's average rate,
	// above the cap lowered since: the cap holds (review 105).
	s.round.stopBW = 5 << 20
	s.stopAt = uint64(s.transferable(s.round.stopBW, 0) / PageSize)
	s.restop()
	if s.stopAt < 10*at300/8-10 || s.stopAt > 10*at300/8+10 {
		t.Errorf("round 1's average above the lowered cap: stopAt %d, want about %d", s.stopAt, 10*at300/8)
	}
	m.limit.SetRate(64 << 20)
	s.restop()
	if s.stopAt < 10*at300/8-10 || s.stopAt > 10*at300/8+10 {
		t.Errorf("cap raised again: stopAt %d, want the %d of the rate measured", s.stopAt, 10*at300/8)
	}
	tsmc := &sender{m: m, wireShare: 1}
	tsmc.restop()
	if tsmc.stopAt != 0 {
		t.Errorf("no round's stop set: stopAt %d, want 0", tsmc.stopAt)
	}
}
