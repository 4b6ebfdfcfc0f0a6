package buildinfo

import "runtime/debug"

// Version is the binary's version: the module's where Go recorded one (a
// release, go install …@vX, or, built in a git checkout, a
// pseudo-version naming the commit and its time, "+dirty" where the tree
// had changes), else "devel".
func Version() string { return read().version() }

// Release is the module's version, or "devel" where it has none.
func Release() string { return read().release }

// Revision is the commit the binary was built from (12 hex digits, with
// "+changes" where the tree had uncommitted ones), "" where Go did not
// record it.
func Revision() string { return read().revision }

type info struct{ release, revision string }

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
	if i.release == "devel" && i.revision != "" {
		return i.release + " " + i.revision
	}
	return i.release
}
