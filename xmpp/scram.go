package xmpp

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"strings"

	"github.com/hubsmith/hub/store"
)

// errSASL is a failed authentication; the server answers <not-authorized/>.
var errSASL = errors.New("sasl: not authorized")

// errSASLMalformed is a malformed SASL exchange (<malformed-request/>).
var errSASLMalformed = errors.New("sasl: malformed request")

// scramHash returns the hash of a SCRAM mechanism.
func scramHash(mech string) func() hash.Hash {
	switch mech {
	case "SCRAM-SHA-256":
		return sha256.New
	case "SCRAM-SHA-1":
		return sha1.New
	}
	return nil
}

// scramServer runs the server side of one RFC 5802 exchange against stored
// credentials (StoredKey, ServerKey, salt, iterations). Channel binding is
// not offered (no -PLUS mechanisms), so a client asking for it is refused.
type scramServer struct {
	mech        string
	h           func() hash.Hash
	lookup      func(ctx context.Context, user, mech string) (store.SCRAMCredential, error)
	fakeKey     []byte // salts the made-up credentials of unknown users
	fakeIter    int    // their iteration count: the store's current one
	domain      string
	user        string
	cred        store.SCRAMCredential
	known       bool
	gs2         string
	clientFirst string // client-first-message-bare
	serverFirst string
	nonce       string
	step        int
	testNonce   string // fixed server nonce part, for test vectors only
}

// start handles the client-first message and returns the server-first one.
func (s *scramServer) start(ctx context.Context, msg []byte) ([]byte, error) {
	m := string(msg)
	// gs2-header: cbind-flag "," [authzid] ","
	flag, rest, ok := strings.Cut(m, ",")
	if !ok {
		return nil, fmt.Errorf("%w: no gs2 header", errSASLMalformed)
	}
	switch {
	case flag == "n", flag == "y":
	case strings.HasPrefix(flag, "p="):
		return nil, fmt.Errorf("%w: channel binding was not offered", errSASL)
	default:
		return nil, fmt.Errorf("%w: bad channel binding flag %q", errSASLMalformed, flag)
	}
	authz, bare, ok := strings.Cut(rest, ",")
	if !ok {
		return nil, fmt.Errorf("%w: no gs2 header", errSASLMalformed)
	}
	s.gs2 = flag + "," + authz + ","
	s.clientFirst = bare
	attrs := strings.Split(bare, ",")
	if len(attrs) < 2 || !strings.HasPrefix(attrs[0], "n=") || !strings.HasPrefix(attrs[1], "r=") {
		return nil, fmt.Errorf("%w: client-first-message needs n= and r=", errSASLMalformed)
	}
	user, err := saslName(attrs[0][2:])
	if err != nil {
		return nil, err
	}
	if authz != "" {
		az, err := saslName(strings.TrimPrefix(authz, "a="))
		if err != nil || !strings.HasPrefix(authz, "a=") {
			return nil, fmt.Errorf("%w: bad authzid", errSASLMalformed)
		}
		if az != user && az != user+"@"+s.domain {
			return nil, fmt.Errorf("%w: authzid %q differs from %q", errSASL, az, user)
		}
	}
	cnonce := attrs[1][2:]
	if cnonce == "" || user == "" {
		return nil, fmt.Errorf("%w: empty user or nonce", errSASLMalformed)
	}
	s.user = user
	cred, err := s.lookup(ctx, user, s.mech)
	switch {
	case err == nil:
		s.cred, s.known = cred, true
	case errors.Is(err, store.ErrNotFound):
		// Go on with made-up credentials so that the exchange does not tell
		// whether the user exists.
		mac := hmac.New(sha256.New, s.fakeKey)
		mac.Write([]byte(user))
		s.cred = store.SCRAMCredential{Mechanism: s.mech, Salt: mac.Sum(nil)[:16], Iterations: s.fakeIter}
		if s.cred.Iterations < 1 {
			s.cred.Iterations = store.SCRAMIterations
		}
	default:
		return nil, fmt.Errorf("sasl: credentials of %q: %w", user, err)
	}
	var nb [18]byte
	_, _ = rand.Read(nb[:])
	s.nonce = cnonce + base64.RawStdEncoding.EncodeToString(nb[:])
	if s.testNonce != "" {
		s.nonce = cnonce + s.testNonce
	}
	s.serverFirst = "r=" + s.nonce + ",s=" + base64.StdEncoding.EncodeToString(s.cred.Salt) + ",i=" + strconv.Itoa(s.cred.Iterations)
	s.step = 1
	return []byte(s.serverFirst), nil
}

// finish checks the client-final message and returns the server-final one
// (v=ServerSignature).
func (s *scramServer) finish(msg []byte) ([]byte, error) {
	if s.step != 1 {
		return nil, fmt.Errorf("%w: unexpected response", errSASLMalformed)
	}
	s.step = 2
	m := string(msg)
	i := strings.LastIndex(m, ",p=")
	if i < 0 {
		return nil, fmt.Errorf("%w: no proof", errSASLMalformed)
	}
	withoutProof, proofB64 := m[:i], m[i+3:]
	attrs := strings.Split(withoutProof, ",")
	if len(attrs) < 2 || !strings.HasPrefix(attrs[0], "c=") || !strings.HasPrefix(attrs[1], "r=") {
		return nil, fmt.Errorf("%w: client-final-message needs c= and r=", errSASLMalformed)
	}
	cb, err := base64.StdEncoding.DecodeString(attrs[0][2:])
	if err != nil || string(cb) != s.gs2 {
		return nil, fmt.Errorf("%w: channel binding data does not match", errSASL)
	}
	if attrs[1][2:] != s.nonce {
		return nil, fmt.Errorf("%w: nonce does not match", errSASL)
	}
	proof, err := base64.StdEncoding.DecodeString(proofB64)
	if err != nil {
		return nil, fmt.Errorf("%w: proof is not base64", errSASLMalformed)
	}
	authMsg := s.clientFirst + "," + s.serverFirst + "," + withoutProof
	if !s.known || len(proof) != len(s.cred.StoredKey) {
		return nil, fmt.Errorf("%w: %q", errSASL, s.user)
	}
	sig := hmacSum(s.h, s.cred.StoredKey, authMsg)
	clientKey := make([]byte, len(proof))
	for i := range proof {
		clientKey[i] = proof[i] ^ sig[i]
	}
	h := s.h()
	h.Write(clientKey)
	if subtle.ConstantTimeCompare(h.Sum(nil), s.cred.StoredKey) != 1 {
		return nil, fmt.Errorf("%w: wrong password for %q", errSASL, s.user)
	}
	return []byte("v=" + base64.StdEncoding.EncodeToString(hmacSum(s.h, s.cred.ServerKey, authMsg))), nil
}

func hmacSum(h func() hash.Hash, key []byte, msg string) []byte {
	mac := hmac.New(h, key)
	mac.Write([]byte(msg))
	return mac.Sum(nil)
}

// saslName decodes an RFC 5802 saslname (=2C is ',', =3D is '=').
func saslName(s string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == ',':
			return "", fmt.Errorf("%w: ',' in a name", errSASLMalformed)
		case s[i] != '=':
			b.WriteByte(s[i])
		case strings.HasPrefix(s[i:], "=2C"):
			b.WriteByte(',')
			i += 2
		case strings.HasPrefix(s[i:], "=3D"):
			b.WriteByte('=')
			i += 2
		default:
			return "", fmt.Errorf("%w: bad escape in name %q", errSASLMalformed, s)
		}
	}
	return b.String(), nil
}

// parsePlain splits a PLAIN message (authzid NUL authcid NUL password).
func parsePlain(msg []byte) (authz, user, pass string, err error) {
	parts := strings.Split(string(msg), "\x00")
	if len(parts) != 3 || parts[1] == "" {
		return "", "", "", fmt.Errorf("%w: PLAIN needs authzid NUL authcid NUL password", errSASLMalformed)
	}
	return parts[0], parts[1], parts[2], nil
}
