package migrator

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
)

// FuzzSetParameters: migrate-set-parameters on pagecast's monitor either
// takes every member, query-migrate-parameters then reporting each as set,
// or refuses and changes nothing (a fuzzing walk found downtime-limit 0
// taken, and read back as 300).
func FuzzSetParameters(f *testing.F) {
	for _, s := range []string{`{"max-bandwidth":1048576,"downtime-limit":500}`, `{"downtime-limit":0}`,
		`{"x-pagecast-mode":"predictive","x-pagecast-threshold":0.3,"x-pagecast-epoch-ms":50}`,
		`{"x-pagecast-max-rounds":3,"x-pagecast-observe":600,"x-pagecast-prefer":"bytes","x-pagecast-profile":"p"}`,
		`{"x-pagecast-mode":""}`, `{"max-bandwidth":18446744073709551615,"downtime-limit":2000000}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, args string) {
		c := NewController(nil, nil, nil)
		query := func() map[string]any {
			q, _ := c.queryParameters(context.Background(), nil)
			b, _ := json.Marshal(q)
			var m map[string]any
			json.Unmarshal(b, &m)
			return m
		}
		before := query()
		_, err := c.setParameters(context.Background(), json.RawMessage(args))
		after := query()
		if err != nil {
			for k, v := range before {
				if after[k] != v {
					t.Fatalf("refused %s (%v), but %s went from %v to %v", args, err, k, v, after[k])
				}
			}
			return
		}
		var set map[string]any
		if json.Unmarshal([]byte(args), &set) != nil {
			return
		}
		for k, v := range set {
			if got, ok := after[k]; ok && got != v {
				t.Fatalf("set %s: %s=%v reads back as %v", args, k, v, got)
			}
		}
	})
}

// TestRoundCapBounded: x-pagecast-max-rounds takes 1 to MaxRoundsLimit;
// one near the int's end went negative in QEMU's plan (walk 68).
func TestRoundCapBounded(t *testing.T) {
	c := NewController(nil, nil, nil)
	for args, ok := range map[string]bool{`{"x-pagecast-max-rounds":10000}`: true, `{"x-pagecast-max-rounds":10001}`: false,
		`{"x-pagecast-max-rounds":9223372036854775807}`: false, `{"x-pagecast-max-rounds":0}`: false} {
		if _, err := c.setParameters(context.Background(), json.RawMessage(args)); (err == nil) != ok {
			t.Errorf("%s: %v, want taken %v", args, err, ok)
		}
	}
	if err := SetParameters(nil, Params{MaxRounds: MaxRoundsLimit + 1}); err == nil {
		t.Error("SetParameters with a round cap past the bound: sent")
	}
}

// TestMigrateChecksLink: QMP migrate on pagecast's monitor refuses a cap
// and downtime limit no migration can meet, as pagecast migrate does.
func TestMigrateChecksLink(t *testing.T) {
	c := NewController(nil, nil, nil)
	if _, err := c.setParameters(context.Background(), json.RawMessage(`{"max-bandwidth":1,"downtime-limit":1}`)); err != nil {
		t.Fatal(err)
	}
	_, err := c.migrate(context.Background(), json.RawMessage(`{"uri":"tcp:127.0.0.1:1"}`))
	if err == nil || !strings.Contains(err.Error(), "less than one 4096-byte page") {
		t.Errorf("migrate at 1 B/s within 1 ms: %v", err)
	}
}
