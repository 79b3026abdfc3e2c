// Package dashboard holds the hub's web dashboard: the single-page app
// built from ../web (TypeScript, Preact, uPlot) by Vite, committed under
// dist and embedded in the binary, so that the hub serves it with no Node
// and no network at run time. The REST adapter serves it at / of the HTTP
// listener (rest.Config.Dashboard).
//
// After changing anything under web/, rebuild with
//
//	go generate ./dashboard
//
// which runs npm ci and npm run build; the build writes dist/stamp.txt,
// a hash of the sources (Stamp), and TestBuildIsCurrent fails while the
// committed build was made from other sources.
package dashboard

//go:generate sh -c "cd ../web && npm ci --no-audit --no-fund && npm run build"

import (
	"embed"
	"io/fs"
	"strings"
)

//go:embed dist
var dist embed.FS

// FS returns the built dashboard: index.html (the app), login.html (the
// sign-in page), stamp.txt and assets/ with content-hashed names.
func FS() fs.FS {
	sub, err := fs.Sub(dist, "dist")
	if err != nil {
		panic("dashboard: embedded dist: " + err.Error()) // a build without dist does not compile
	}
	return sub
}

// BuildStamp is the source hash recorded in the embedded build
// (dist/stamp.txt), "" when it has none.
func BuildStamp() string {
	b, err := dist.ReadFile("dist/stamp.txt")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
