package buildinfo

import (
	"runtime/debug"
	"strings"
)

// Version is the binary's version: the module's where it has one (a
// release, go install …@vX), else "devel" and the commit (Revision) and
// its time, where Go recorded them; "devel" alone where it recorded
// nothing (go run, tests).
func Version() string { return read().version() }

// Release is the module's version, or "devel" where it has none.
func Release() string { return read().release }

// Revision is the commit the binary was built from (12 hex digits, with
// "+changes" where the tree had uncommitted ones), "" where not recorded.
func Revision() string { return read().revision }

type info struct{ release, revision, time string }

func read() info {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return info{release: "devel"}
	}
	return parse(bi)
}

func parse(bi *debug.BuildInfo) info {
	i := info{release: "devel"}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		i.release = v
	}
	changed := false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			i.revision = s.Value[:min(len(s.Value), 12)]
		case "vcs.time":
			i.time = s.Value
		case "vcs.modified":
			changed = s.Value == "true"
		}
	}
	if changed && i.revision != "" {
		i.revision += "+changes"
	}
	return i
}

func (i info) version() string {
	if i.release != "devel" {
		return i.release
	}
	parts := []string{i.release}
	for _, p := range []string{i.revision, i.time} {
		if p != "" {
			parts = append(parts, p)
		}
	}
	return strings.Join(parts, " ")
}
