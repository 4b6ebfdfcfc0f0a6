package buildinfo

import (
	"runtime/debug"
	"testing"
)

func TestVersion(t *testing.T) {
	for _, tc := range []struct {
		bi   debug.BuildInfo
		want string
	}{
		{debug.BuildInfo{Main: debug.Module{Version: "v0.3.1"}}, "v0.3.1"},
		{debug.BuildInfo{Main: debug.Module{Version: "v0.0.0-20261206141902-a6cbfecc7da9+dirty"}, Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "a6cbfecc7da9aaaa"}, {Key: "vcs.modified", Value: "true"}}},
			"v0.0.0-20261206141902-a6cbfecc7da9+dirty"},
		{debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "905b876e1f2a3b4c5d6e7f8091a2b3c4d5e6f708"}, {Key: "vcs.time", Value: "2026-12-06T14:11:55Z"}, {Key: "vcs.modified", Value: "false"}}},
			"devel 905b876e1f2a"},
		{debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "905b876e1f2a3b4c"}, {Key: "vcs.modified", Value: "true"}}},
			"devel 905b876e1f2a+changes"},
		{debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, "devel"},
	} {
		if got := parse(&tc.bi).version(); got != tc.want {
			t.Errorf("version(%+v) = %q, want %q", tc.bi, got, tc.want)
		}
	}
}
