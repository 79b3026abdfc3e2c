package gateway

import (
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

func TestParseByteSize(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want ByteSize
		ok   bool
	}{
		{"4096", 4096, true},
		{"-1", -1, true},
		{"0", 0, true},
		{"64MiB", 64 << 20, true},
		{"64 mib", 64 << 20, true},
		{"256MiB", 256 << 20, true},
		{"1.5GiB", 3 << 29, true},
		{"10KB", 10000, true},
		{"2M", 2 << 20, true},
		{"512B", 512, true},
		{"1GB", 1000000000, true},
		{"", 0, false},
		{"MiB", 0, false},
		{"lots", 0, false},
		{"9223372036854775807GiB", 0, false},
		{"NaN", 0, false},
		{"1e30", 0, false},
	} {
		got, err := ParseByteSize(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseByteSize(%q) = %d, %v; want %d, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestFilesConfigYAML(t *testing.T) {
	t.Parallel()
	c := Defaults()
	if err := yaml.Unmarshal([]byte("files:\n  max_file_size: 1MiB\n  quota_per_principal: 10000\n  default_ttl: 24h\n"), &c); err != nil {
		t.Fatal(err)
	}
	if c.Files.MaxFileSize != 1<<20 || c.Files.QuotaPerPrincipal != 10000 || c.Files.DefaultTTL.Hours() != 24 {
		t.Errorf("files = %+v", c.Files)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
	out, err := yaml.Marshal(c.Files)
	if err != nil || !strings.Contains(string(out), "max_file_size: 1MiB") {
		t.Errorf("marshal: %s, %v", out, err)
	}
	for _, tc := range []struct{ yaml, msg string }{
		{"files:\n  max_file_size: huge\n", "size \"huge\""},
		{"files:\n  max_file_size: [1]\n", "a size must be"},
	} {
		c := Defaults()
		if err := yaml.Unmarshal([]byte(tc.yaml), &c); err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%q: %v, want %q", tc.yaml, err, tc.msg)
		}
	}
	for _, tc := range []struct {
		mod func(*FilesConfig)
		msg string
	}{
		{func(f *FilesConfig) { f.MaxFileSize = -2 }, "files.max_file_size"},
		{func(f *FilesConfig) { f.DefaultTTL = -1 }, "files.default_ttl"},
		{func(f *FilesConfig) { f.BaseURL = "gw:8080" }, "files.base_url"},
		{func(f *FilesConfig) { f.MaxSlots = -1 }, "files.max_slots"},
	} {
		c := Defaults()
		tc.mod(&c.Files)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("Validate = %v, want %q", err, tc.msg)
		}
	}
}

// FuzzParseByteSize checks that the size parser never panics and that a
// plain number reads as itself.
func FuzzParseByteSize(f *testing.F) {
	for _, s := range []string{"64MiB", "1.5 GB", "-1", "4096", "k", "1e400", "NaNKiB"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := ParseByteSize(s)
		if err != nil {
			return
		}
		if v2, err := ParseByteSize(strings.ToUpper(s)); err != nil || v2 != v {
			t.Fatalf("ParseByteSize(%q) = %d but upper case gives %d, %v", s, v, v2, err)
		}
	})
}
