package devices

// The two name rules of this package, checked byte by byte. They were
// regular expressions (`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$` and
// `^[A-Za-z_][A-Za-z0-9_.-]{0,63}$`); Go's regexp compiles a bounded
// repetition into that many copies of its body, which made this package's
// initialisation allocate 178 KB in 2,557 allocations (65 KB of it kept for
// good) in every hub, for two character classes. FuzzValidID and
// FuzzValidParamName hold them to the expressions.

// maxIDLen and maxParamNameLen are the longest device id and parameter name.
const (
	maxIDLen        = 128
	maxParamNameLen = 64
)

// isAlnum reports whether c is an ASCII letter or digit.
func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

// validID reports whether id is 1..128 ASCII letters, digits, '.', '_' or
// '-', starting with a letter or digit.
func validID(id string) bool {
	if id == "" || len(id) > maxIDLen || !isAlnum(id[0]) {
		return false
	}
	for i := 1; i < len(id); i++ {
		if c := id[i]; !isAlnum(c) && c != '.' && c != '_' && c != '-' {
			return false
		}
	}
	return true
}

// validParamName reports whether name is 1..64 ASCII letters, digits, '_',
// '.' or '-', starting with a letter or '_'.
func validParamName(name string) bool {
	if name == "" || len(name) > maxParamNameLen {
		return false
	}
	if c := name[0]; !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c == '_') {
		return false
	}
	for i := 1; i < len(name); i++ {
		if c := name[i]; !isAlnum(c) && c != '.' && c != '_' && c != '-' {
			return false
		}
	}
	return true
}
