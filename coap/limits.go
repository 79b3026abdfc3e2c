package coap

import (
	"fmt"
)

// Defaults of the observation caps (Config.MaxObservationsPerUser,
// Config.MaxObservationsTotal). One observation costs about 18 kB (a bus
// subscription with its queue and the endpoint's state), so the global
// default bounds observations at about 75 MB.
const (
	DefaultMaxObservePerUser = 1024
	DefaultMaxObserveTotal   = 4096
)

// obsKey is the principal an observation counts against: its name, or
// one shared bucket for every anonymous client.
func obsKey(req *request) string {
	if req.principal.Anonymous || req.principal.Name == "" {
		return "\x00anonymous"
	}
	return req.principal.Name
}

// reserveObservation counts one more observation of user within the
// per-user and global caps; false when one of them is reached, and the
// GET is then answered as a plain GET (RFC 7641 §4.1).
func (a *Adapter) reserveObservation(user string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.obsTotal >= a.cfg.MaxObservationsTotal || a.obsByUser[user] >= a.cfg.MaxObservationsPerUser {
		return false
	}
	a.obsTotal++
	a.obsByUser[user]++
	return true
}

// releaseObservation undoes reserveObservation.
func (a *Adapter) releaseObservation(user string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.obsTotal--
	if a.obsByUser[user]--; a.obsByUser[user] <= 0 {
		delete(a.obsByUser, user)
	}
}

// validateObservationCaps applies the defaults of the observation caps
// and refuses negative ones.
func validateObservationCaps(cfg *Config) error {
	if cfg.MaxObservationsPerUser == 0 {
		cfg.MaxObservationsPerUser = DefaultMaxObservePerUser
	}
	if cfg.MaxObservationsTotal == 0 {
		cfg.MaxObservationsTotal = DefaultMaxObserveTotal
	}
	if cfg.MaxObservationsPerUser < 0 || cfg.MaxObservationsTotal < 0 {
		return fmt.Errorf("coap: MaxObservationsPerUser %d, MaxObservationsTotal %d: must be positive", cfg.MaxObservationsPerUser, cfg.MaxObservationsTotal)
	}
	return nil
}
