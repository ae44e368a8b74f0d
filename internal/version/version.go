// Package version reports what build of PM is running, from the module
// and VCS information the Go toolchain embeds in every binary.
package version

import (
	"runtime/debug"
	"sync"
)

// Version may be set at link time (-ldflags "-X
// github.com/oaas/pm/internal/version.Version=v1.2.3"); otherwise it comes
// from the build info.
var Version = ""

var once = sync.OnceValue(func() string {
	if Version != "" {
		return Version
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := info.Main.Version
	rev, dirty := "", false
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if (v == "" || v == "(devel)") && rev != "" {
		if len(rev) > 12 {
			rev = rev[:12]
		}
		v = "devel-" + rev
		if dirty {
			v += "-dirty"
		}
	}
	if v == "" {
		v = "(devel)"
	}
	return v
})

// String returns the running build's version, e.g. "v0.3.0" or
// "devel-1a2b3c4d5e6f-dirty".
func String() string { return once() }
