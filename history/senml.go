package history

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/fxamacker/cbor/v2"
)

// maxRecords bounds the records of one SenML pack.
const maxRecords = 1024

// relativeTimeLimit is 2**28: a resolved SenML time below it is seconds
// relative to now (RFC 8428 section 4.5.3), at or above it seconds since
// the Unix epoch.
const relativeTimeLimit = 1 << 28

// maxNameLen bounds a resolved SenML name (a field name of the history).
const maxNameLen = 256

// senmlRecord is one SenML record with the labels of RFC 8428 section 4
// (JSON) and section 6 (CBOR, integer keys). Labels Decode does not use
// (vs, vd, ut) are read only to be ignored.
type senmlRecord struct {
	BaseVersion *float64 `json:"bver" cbor:"-1,keyasint"`
	BaseName    *string  `json:"bn" cbor:"-2,keyasint"`
	BaseTime    *float64 `json:"bt" cbor:"-3,keyasint"`
	BaseUnit    *string  `json:"bu" cbor:"-4,keyasint"`
	BaseValue   *float64 `json:"bv" cbor:"-5,keyasint"`
	BaseSum     *float64 `json:"bs" cbor:"-6,keyasint"`
	Name        *string  `json:"n" cbor:"0,keyasint"`
	Unit        *string  `json:"u" cbor:"1,keyasint"`
	Value       *float64 `json:"v" cbor:"2,keyasint"`
	BoolValue   *bool    `json:"vb" cbor:"4,keyasint"`
	Sum         *float64 `json:"s" cbor:"5,keyasint"`
	Time        *float64 `json:"t" cbor:"6,keyasint"`
}

// cborDec decodes SenML CBOR with bounds on what a hostile payload may
// make it allocate.
var cborDec = func() cbor.DecMode {
	dm, err := cbor.DecOptions{
		MaxNestedLevels:  4,
		MaxArrayElements: maxRecords,
		MaxMapPairs:      32,
		IndefLength:      cbor.IndefLengthAllowed,
		DupMapKey:        cbor.DupMapKeyEnforcedAPF,
	}.DecMode()
	if err != nil {
		panic(err) // the options above are constant and valid
	}
	return dm
}()

func decodeSenMLJSON(p []byte, now time.Time) ([]Reading, error) {
	dec := json.NewDecoder(bytes.NewReader(p))
	var pack []senmlRecord
	if err := dec.Decode(&pack); err != nil {
		return nil, fmt.Errorf("history: SenML JSON: %w", err)
	}
	if dec.More() {
		return nil, errors.New("history: SenML JSON: unexpected data after the pack")
	}
	if len(pack) > maxRecords {
		return nil, fmt.Errorf("history: SenML JSON: %d records: at most %d", len(pack), maxRecords)
	}
	return resolve(pack, now, "SenML JSON")
}

func decodeSenMLCBOR(p []byte, now time.Time) ([]Reading, error) {
	var pack []senmlRecord
	if err := cborDec.Unmarshal(p, &pack); err != nil {
		return nil, fmt.Errorf("history: SenML CBOR: %w", err)
	}
	return resolve(pack, now, "SenML CBOR")
}

// resolve applies the base fields to each record (RFC 8428 section 4.6)
// and keeps the records with a numeric value: v (plus bv), s (plus bs), or
// vb as 1 or 0.
func resolve(pack []senmlRecord, now time.Time, format string) ([]Reading, error) {
	var (
		bn       string
		bt       float64
		bu       string
		bv, bs   float64
		out      []Reading
		finite   = func(f *float64) bool { return f == nil || !math.IsInf(*f, 0) && !math.IsNaN(*f) }
		nowUnixF = float64(now.UnixNano()) / 1e9
	)
	for i, r := range pack {
		for _, f := range []*float64{r.BaseTime, r.BaseValue, r.BaseSum, r.Value, r.Sum, r.Time} {
			if !finite(f) {
				return nil, fmt.Errorf("history: %s record %d: a number is not finite", format, i+1)
			}
		}
		if r.BaseName != nil {
			bn = *r.BaseName
		}
		if r.BaseTime != nil {
			bt = *r.BaseTime
		}
		if r.BaseUnit != nil {
			bu = *r.BaseUnit
		}
		if r.BaseValue != nil {
			bv = *r.BaseValue
		}
		if r.BaseSum != nil {
			bs = *r.BaseSum
		}
		var v float64
		switch {
		case r.Value != nil:
			v = bv + *r.Value
		case r.Sum != nil:
			v = bs + *r.Sum
		case r.BoolValue != nil:
			if *r.BoolValue {
				v = 1
			}
		default:
			continue // a string or data value, or base fields only
		}
		if math.IsInf(v, 0) {
			return nil, fmt.Errorf("history: %s record %d: the value overflows", format, i+1)
		}
		name := bn
		if r.Name != nil {
			name += *r.Name
		}
		if name == "" {
			name = DefaultField
		}
		if len(name) > maxNameLen {
			return nil, fmt.Errorf("history: %s record %d: name of %d bytes: at most %d", format, i+1, len(name), maxNameLen)
		}
		unit := bu
		if r.Unit != nil {
			unit = *r.Unit
		}
		rd := Reading{Field: name, Value: v, Unit: unit}
		t := bt
		if r.Time != nil {
			t += *r.Time
		}
		switch {
		case t == 0:
			// "Roughly now": the envelope's time.
		case t < relativeTimeLimit:
			rd.Time = secondsToTime(nowUnixF + t)
		default:
			rd.Time = secondsToTime(t)
		}
		out = append(out, rd)
	}
	if len(out) == 0 {
		return nil, ErrNotNumeric
	}
	return out, nil
}

// secondsToTime converts seconds since the epoch, clamped to what a
// time.Time in nanoseconds holds.
func secondsToTime(s float64) time.Time {
	const maxS = float64(math.MaxInt64) / 1e9
	switch {
	case s > maxS:
		s = maxS
	case s < -maxS:
		s = -maxS
	}
	sec, frac := math.Modf(s)
	return time.Unix(int64(sec), int64(frac*1e9)).UTC()
}
