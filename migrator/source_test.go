package migrator

import "testing"

func TestStatusError(t *testing.T) {
	for _, c := range []struct {
		info Info
		want string
	}{
		{Info{Status: StatusCancelled, ErrorDesc: "migration cancelled"}, "migration cancelled"},
		{Info{Status: StatusCancelled}, "migration cancelled"},
		{Info{Status: StatusFailed, ErrorDesc: "connect to the destination: refused"}, "migration failed: connect to the destination: refused"},
	} {
		if got := statusError(c.info).Error(); got != c.want {
			t.Errorf("statusError(%+v) = %q, want %q", c.info, got, c.want)
		}
	}
}
