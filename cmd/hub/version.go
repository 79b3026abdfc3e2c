package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"strings"
)

// version, when set at link time (-ldflags "-X main.version=v1.2.3"), is
// printed instead of the module version from the build info.
var version string

// versionCommand runs "hub version".
func versionCommand(args []string, stdout io.Writer) error {
	fs := newFlags("hub version", "hub version",
		"Prints the hub's version, the VCS revision it was built from (and whether\nthe tree had uncommitted changes), and the Go version and platform.")
	pos, err := fs.parse(args, stdout)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return fs.usagef("unexpected argument %q", pos[0])
	}
	bi, ok := debug.ReadBuildInfo()
	fmt.Fprint(stdout, versionText(version, bi, ok))
	return nil
}

// buildVCS is what the build info says about the source tree.
type buildVCS struct {
	revision, time string
	modified       bool
	goos, goarch   string
	goarm          string
}

func vcsOf(bi *debug.BuildInfo) buildVCS {
	var v buildVCS
	if bi == nil {
		return v
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			v.revision = s.Value
		case "vcs.time":
			v.time = s.Value
		case "vcs.modified":
			v.modified = s.Value == "true"
		case "GOOS":
			v.goos = s.Value
		case "GOARCH":
			v.goarch = s.Value
		case "GOARM":
			v.goarm = s.Value
		}
	}
	return v
}

// moduleVersion is the version to show: the one set at link time, else
// the main module's from the build info; "(devel)" and "" (go run, go
// test, a build outside version control) give "dev".
func moduleVersion(linked string, bi *debug.BuildInfo) string {
	if linked != "" {
		return linked
	}
	if bi != nil && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

// versionText is what "hub version" prints:
//
//	hub v0.0.0-20261201093000-36b0b5b1c2d3+dirty
//	revision 36b0b5b1c2d3... (2026-12-01T09:30:00Z), modified: built with uncommitted changes
//	go1.26.8 linux/arm64
func versionText(linked string, bi *debug.BuildInfo, ok bool) string {
	var b strings.Builder
	if !ok {
		bi = nil
	}
	fmt.Fprintf(&b, "hub %s\n", moduleVersion(linked, bi))
	v := vcsOf(bi)
	switch {
	case v.revision != "":
		fmt.Fprintf(&b, "revision %s", v.revision)
		if v.time != "" {
			fmt.Fprintf(&b, " (%s)", v.time)
		}
		if v.modified {
			b.WriteString(", modified: built with uncommitted changes")
		}
		b.WriteString("\n")
	case bi == nil:
		b.WriteString("revision unknown: the binary carries no build information\n")
	default:
		b.WriteString("revision unknown: built without version control information (go run, go test or -buildvcs=false)\n")
	}
	goVersion := runtime.Version()
	if bi != nil && bi.GoVersion != "" {
		goVersion = bi.GoVersion
	}
	goos, goarch := runtime.GOOS, runtime.GOARCH
	if v.goos != "" {
		goos, goarch = v.goos, v.goarch
	}
	platform := goos + "/" + goarch
	if v.goarm != "" {
		platform += " GOARM=" + v.goarm
	}
	fmt.Fprintf(&b, "%s %s\n", goVersion, platform)
	return b.String()
}

// shortVersion is the version for the start-up log line: the version and
// the first 12 digits of the revision, "+dirty" for a modified tree.
func shortVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		bi = nil
	}
	s := moduleVersion(version, bi)
	v := vcsOf(bi)
	if v.revision != "" && !strings.Contains(s, v.revision[:min(12, len(v.revision))]) {
		s += " " + v.revision[:min(12, len(v.revision))]
		if v.modified {
			s += "+dirty"
		}
	}
	return s
}
