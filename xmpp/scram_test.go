package xmpp

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/hubsmith/hub/store"
)

// rfc7677 is the SCRAM-SHA-256 example of RFC 7677 section 3 (user "user",
// password "pencil").
var rfc7677 = struct {
	salt                                  string
	iter                                  int
	clientFirst, serverNonce, clientFinal string
	serverFinal                           string
}{
	salt:        "W22ZaJ0SNY7soEsUEjb6gQ==",
	iter:        4096,
	clientFirst: "n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
	serverNonce: "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
	clientFinal: "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
	serverFinal: "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
}

func rfc7677Cred() store.SCRAMCredential {
	salt, _ := base64.StdEncoding.DecodeString(rfc7677.salt)
	salted := pbkdf2SHA256([]byte("pencil"), salt, rfc7677.iter)
	clientKey := hmacSum(sha256.New, salted, "Client Key")
	stored := sha256.Sum256(clientKey)
	return store.SCRAMCredential{Mechanism: "SCRAM-SHA-256", Salt: salt, Iterations: rfc7677.iter,
		StoredKey: stored[:], ServerKey: hmacSum(sha256.New, salted, "Server Key")}
}

// pbkdf2SHA256 is PBKDF2 with one output block, enough for SHA-256 keys.
func pbkdf2SHA256(password, salt []byte, iter int) []byte {
	mac := hmac.New(sha256.New, password)
	mac.Write(salt)
	mac.Write([]byte{0, 0, 0, 1})
	u := mac.Sum(nil)
	out := append([]byte(nil), u...)
	for i := 1; i < iter; i++ {
		mac.Reset()
		mac.Write(u)
		u = mac.Sum(nil)
		for j := range out {
			out[j] ^= u[j]
		}
	}
	return out
}

func newTestSCRAM(cred store.SCRAMCredential, nonce string) *scramServer {
	return &scramServer{
		mech: "SCRAM-SHA-256", h: sha256.New, fakeKey: []byte("k"), domain: "localhost",
		lookup: func(_ context.Context, user, _ string) (store.SCRAMCredential, error) {
			if user != "user" {
				return store.SCRAMCredential{}, store.ErrNotFound
			}
			return cred, nil
		},
		testNonce: nonce,
	}
}

func TestSCRAMVector(t *testing.T) {
	t.Parallel()
	s := newTestSCRAM(rfc7677Cred(), "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0")
	first, err := s.start(context.Background(), []byte(rfc7677.clientFirst))
	if err != nil {
		t.Fatal(err)
	}
	if want := "r=" + rfc7677.serverNonce + ",s=" + rfc7677.salt + ",i=4096"; string(first) != want {
		t.Fatalf("server-first %q, want %q", first, want)
	}
	final, err := s.finish([]byte(rfc7677.clientFinal))
	if err != nil {
		t.Fatal(err)
	}
	if string(final) != rfc7677.serverFinal {
		t.Errorf("server-final %q, want %q", final, rfc7677.serverFinal)
	}
}

func TestSCRAMRejects(t *testing.T) {
	t.Parallel()
	nonce := "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
	tests := []struct {
		name, first, final string
		want               error
	}{
		{"channel binding asked", "p=tls-unique,,n=user,r=abc", "", errSASL},
		{"no gs2 header", "n=user", "", errSASLMalformed},
		{"bad flag", "x,,n=user,r=abc", "", errSASLMalformed},
		{"no nonce", "n,,n=user", "", errSASLMalformed},
		{"other authzid", "n,a=admin,n=user,r=rOprNGfwEbeRWgbNEkqO", "", errSASL},
		{"bad name escape", "n,,n=us=er,r=abc", "", errSASLMalformed},
		{"wrong proof", rfc7677.clientFirst, strings.Replace(rfc7677.clientFinal, "p=dHzb", "p=AHzb", 1), errSASL},
		{"wrong nonce", rfc7677.clientFirst, strings.Replace(rfc7677.clientFinal, "r=rOpr", "r=xOpr", 1), errSASL},
		{"wrong channel binding data", rfc7677.clientFirst, strings.Replace(rfc7677.clientFinal, "c=biws", "c=eSws", 1), errSASL},
		{"no proof", rfc7677.clientFirst, "c=biws,r=" + rfc7677.serverNonce, errSASLMalformed},
		{"unknown user", "n,,n=nobody,r=abc", "c=biws,r=abc" + nonce + ",p=AAAA", errSASL},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newTestSCRAM(rfc7677Cred(), nonce)
			_, err := s.start(context.Background(), []byte(tt.first))
			if err == nil {
				_, err = s.finish([]byte(tt.final))
			}
			if !errors.Is(err, tt.want) {
				t.Errorf("error %v, want %v", err, tt.want)
			}
		})
	}
}

// FuzzSCRAMServer feeds arbitrary client messages to the SCRAM server: it
// must never panic nor accept without the password.
func FuzzSCRAMServer(f *testing.F) {
	f.Add(rfc7677.clientFirst, rfc7677.clientFinal)
	f.Add("n,,n=user,r=x", "c=biws,r=x,p=AAAA")
	f.Add("y,a=user,n=user,r=", "c=,r=,p=")
	cred := rfc7677Cred()
	f.Fuzz(func(t *testing.T, first, final string) {
		s := newTestSCRAM(cred, "fixed")
		if _, err := s.start(context.Background(), []byte(first)); err != nil {
			return
		}
		if _, err := s.finish([]byte(final)); err == nil && !strings.Contains(final, "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=") {
			t.Fatalf("accepted %q / %q", first, final)
		}
	})
}

// TestSCRAMUnknownUserLooksKnown: the server-first message of an unknown
// user carries the iteration count known users have now, so the count does
// not tell who exists.
func TestSCRAMUnknownUserLooksKnown(t *testing.T) {
	t.Parallel()
	s := newTestSCRAM(rfc7677Cred(), "n")
	s.fakeIter = 12345
	first, err := s.start(context.Background(), []byte("n,,n=nobody,r=abc"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(string(first), ",i=12345") {
		t.Errorf("server-first %q, want i=12345", first)
	}
}
