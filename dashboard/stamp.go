package dashboard

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"
)

// Stamp is the hash of the dashboard's sources in dir (the web/
// directory): every regular file but those under node_modules and dot
// files, in byte order of their slash-separated paths, each as its path,
// a newline, the hex sha256 of its content and a newline, hashed with
// sha256. web/stamp.mjs computes the same at build time; keep them in
// step.
func Stamp(dir string) (string, error) {
	var files []string
	err := fs.WalkDir(os.DirFS(dir), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == "." {
			return nil
		}
		name := d.Name()
		if strings.HasPrefix(name, ".") || name == "node_modules" {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if d.Type().IsRegular() {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("dashboard: stamp %s: %w", dir, err)
	}
	slices.Sort(files)
	h := sha256.New()
	for _, f := range files {
		b, err := os.ReadFile(dir + "/" + f)
		if err != nil {
			return "", fmt.Errorf("dashboard: stamp: %w", err)
		}
		sum := sha256.Sum256(b)
		fmt.Fprintf(h, "%s\n%s\n", f, hex.EncodeToString(sum[:]))
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
