package devices

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
)

// The expressions validID and validParamName replaced; they are the
// specification the functions are held to.
var (
	idRule        = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)
	paramNameRule = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.-]{0,63}$`)
)

// nameCases are names at and around the edges of both rules.
var nameCases = []string{
	"", "a", "Z", "0", "9", "_", ".", "-", "_a", "a_", "a.b-c_d", "0abc", ".abc", "-abc",
	"a b", "a/b", "a+b", "a#b", "$x", "a:b", "a@b", "é", "aé", "a\x00", "a\n", "\na", "a\xff",
	strings.Repeat("z", 63), strings.Repeat("z", 64), strings.Repeat("z", 65),
	strings.Repeat("z", 127), strings.Repeat("z", 128), strings.Repeat("z", 129),
	"_" + strings.Repeat("9", 63), "_" + strings.Repeat("9", 64),
}

func TestValidNames(t *testing.T) {
	t.Parallel()
	for _, s := range nameCases {
		if got, want := validID(s), idRule.MatchString(s); got != want {
			t.Errorf("validID(%q) = %v, the expression says %v", s, got, want)
		}
		if got, want := validParamName(s), paramNameRule.MatchString(s); got != want {
			t.Errorf("validParamName(%q) = %v, the expression says %v", s, got, want)
		}
	}
	for _, tc := range []struct {
		id   string
		want bool
	}{{"sensor-1", true}, {"sensor/1", false}, {"", false}, {strings.Repeat("a", 128), true}, {strings.Repeat("a", 129), false}} {
		if err := ValidateID(tc.id); (err == nil) != tc.want {
			t.Errorf("ValidateID(%q) = %v, want valid %v", tc.id, err, tc.want)
		}
	}
}

func FuzzValidID(f *testing.F) {
	for _, s := range nameCases {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := validID(s), idRule.MatchString(s); got != want {
			t.Fatalf("validID(%q) = %v, the expression says %v", s, got, want)
		}
	})
}

func FuzzValidParamName(f *testing.F) {
	for _, s := range nameCases {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := validParamName(s), paramNameRule.MatchString(s); got != want {
			t.Fatalf("validParamName(%q) = %v, the expression says %v", s, got, want)
		}
	})
}

// BenchmarkValidateID is the check every device request makes of its id.
func BenchmarkValidateID(b *testing.B) {
	for _, id := range []string{"sensor-1", strings.Repeat("z", 128)} {
		b.Run(fmt.Sprintf("func/len%d", len(id)), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_ = validID(id)
			}
		})
		b.Run(fmt.Sprintf("regexp/len%d", len(id)), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_ = idRule.MatchString(id)
			}
		})
	}
}
