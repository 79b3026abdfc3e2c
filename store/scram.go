package store

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/sha1"
	"crypto/sha256"
	"fmt"
	"hash"
)

// SCRAM mechanism names (RFC 5802, RFC 7677).
const (
	MechSCRAMSHA1   = "SCRAM-SHA-1"
	MechSCRAMSHA256 = "SCRAM-SHA-256"
)

// SCRAMIterations is the default PBKDF2 iteration count of new
// credentials: above RFC 7677's minimum of 4,096, which is cheap to guess
// against on today's hardware, and still a few milliseconds on a Pi.
const SCRAMIterations = 10000

// MinSCRAMIterations is the least count SetSCRAMIterations accepts
// (RFC 7677's minimum).
const MinSCRAMIterations = 4096

// saltLen is the length of a fresh random salt in bytes.
const saltLen = 16

// mechanisms lists the SCRAM mechanisms a credential is stored for.
var mechanisms = []string{MechSCRAMSHA1, MechSCRAMSHA256}

// mechHash returns the hash function of a SCRAM mechanism.
func mechHash(mechanism string) (func() hash.Hash, error) {
	switch mechanism {
	case MechSCRAMSHA1:
		return sha1.New, nil
	case MechSCRAMSHA256:
		return sha256.New, nil
	}
	return nil, fmt.Errorf("unsupported SCRAM mechanism %q (want %s or %s)", mechanism, MechSCRAMSHA1, MechSCRAMSHA256)
}

// DeriveSCRAM computes the SCRAM credential of password for mechanism
// (RFC 5802 section 3): SaltedPassword = PBKDF2(password, salt, iter),
// StoredKey = H(HMAC(SaltedPassword, "Client Key")) and
// ServerKey = HMAC(SaltedPassword, "Server Key"). The password is used as
// given: callers that want SASLprep apply it first.
func DeriveSCRAM(mechanism, password string, salt []byte, iterations int) (SCRAMCredential, error) {
	h, err := mechHash(mechanism)
	if err != nil {
		return SCRAMCredential{}, err
	}
	if iterations < 1 {
		return SCRAMCredential{}, fmt.Errorf("SCRAM iterations %d: must be at least 1", iterations)
	}
	stored, server, err := deriveKeys(password, salt, iterations, h)
	if err != nil {
		return SCRAMCredential{}, err
	}
	return SCRAMCredential{
		Mechanism:  mechanism,
		Salt:       append([]byte(nil), salt...),
		Iterations: iterations,
		StoredKey:  stored,
		ServerKey:  server,
	}, nil
}

// deriveKeys returns StoredKey and ServerKey for password.
func deriveKeys(password string, salt []byte, iterations int, h func() hash.Hash) (stored, server []byte, err error) {
	salted, err := pbkdf2.Key(h, password, salt, iterations, h().Size())
	if err != nil {
		return nil, nil, fmt.Errorf("pbkdf2: %w", err)
	}
	clientKey := hmacSum(h, salted, "Client Key")
	sum := h()
	sum.Write(clientKey)
	return sum.Sum(nil), hmacSum(h, salted, "Server Key"), nil
}

func hmacSum(h func() hash.Hash, key []byte, msg string) []byte {
	m := hmac.New(h, key)
	m.Write([]byte(msg))
	return m.Sum(nil)
}
