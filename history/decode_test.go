package history

import (
	"errors"
	"math"
	"strconv"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
)

var testNow = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

func mustCBOR(t testing.TB, v any) []byte {
	t.Helper()
	b, err := cbor.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecode(t *testing.T) {
	t.Parallel()
	abs := float64(testNow.Add(-time.Hour).Unix())
	tests := []struct {
		name    string
		ct      string
		payload []byte
		want    []Reading
		err     bool // any error
		notNum  bool // ErrNotNumeric
	}{
		{name: "integer text", payload: []byte("21"), want: []Reading{{Field: "value", Value: 21}}},
		{name: "float text with spaces", ct: "text/plain", payload: []byte(" -3.5e1\n"), want: []Reading{{Field: "value", Value: -35}}},
		{name: "JSON number", ct: "application/json", payload: []byte("21.5"), want: []Reading{{Field: "value", Value: 21.5}}},
		{name: "text", payload: []byte("hello"), notNum: true},
		{name: "NaN text", payload: []byte("NaN"), notNum: true},
		{name: "inf text", payload: []byte("inf"), notNum: true},
		{name: "hex text", payload: []byte("0x10"), notNum: true},
		{name: "empty", payload: nil, notNum: true},
		{name: "huge exponent", payload: []byte("1e999"), notNum: true},
		{name: "object", ct: "application/json", payload: []byte(`{"t":21.5,"h":40,"name":"x","ok":true}`),
			want: []Reading{{Field: "h", Value: 40}, {Field: "t", Value: 21.5}}},
		{name: "nested object", payload: []byte(`{"a":{"b":1,"c":{"d":2}},"e":[1,2]}`),
			want: []Reading{{Field: "a.b", Value: 1}, {Field: "a.c.d", Value: 2}}},
		{name: "object without numbers", payload: []byte(`{"a":"b"}`), notNum: true},
		{name: "broken object", payload: []byte(`{"a":`), err: true},
		{name: "object and trailing data", payload: []byte(`{"a":1} {"b":2}`), err: true},
		{name: "SenML JSON base fields", ct: ContentTypeSenMLJSON,
			payload: []byte(`[{"bn":"urn:dev:ow:10e2073a01080063:","bt":1.276020076001e+09,"bu":"A","bver":5,"n":"voltage","u":"V","v":120.1},{"n":"current","t":-5,"v":1.2},{"n":"current","t":-4,"v":1.3}]`),
			want: []Reading{
				{Field: "urn:dev:ow:10e2073a01080063:voltage", Value: 120.1, Unit: "V", Time: secondsToTime(1.276020076001e+09)},
				{Field: "urn:dev:ow:10e2073a01080063:current", Value: 1.2, Unit: "A", Time: secondsToTime(1.276020076001e+09 - 5)},
				{Field: "urn:dev:ow:10e2073a01080063:current", Value: 1.3, Unit: "A", Time: secondsToTime(1.276020076001e+09 - 4)},
			}},
		{name: "SenML JSON relative time, base value, bool, string skipped", ct: "application/senml+json; charset=utf-8",
			payload: []byte(`[{"bv":20,"n":"temp","v":1.5,"t":-60},{"n":"door","vb":true},{"n":"label","vs":"kitchen"},{"n":"energy","s":3}]`),
			want: []Reading{
				{Field: "temp", Value: 21.5, Time: testNow.Add(-time.Minute)},
				{Field: "door", Value: 1},
				{Field: "energy", Value: 3},
			}},
		{name: "SenML JSON sniffed, no name", payload: []byte(`[{"v":7}]`), want: []Reading{{Field: "value", Value: 7}}},
		{name: "SenML JSON by content format 110", ct: "110", payload: []byte(`[{"n":"x","v":1,"t":` + ftoa(abs) + `}]`),
			want: []Reading{{Field: "x", Value: 1, Time: testNow.Add(-time.Hour)}}},
		{name: "SenML JSON only strings", ct: ContentTypeSenMLJSON, payload: []byte(`[{"n":"x","vs":"a"}]`), notNum: true},
		{name: "SenML JSON not an array", ct: ContentTypeSenMLJSON, payload: []byte(`{"n":"x","v":1}`), err: true},
		{name: "SenML JSON bad value type", ct: ContentTypeSenMLJSON, payload: []byte(`[{"n":"x","v":"1"}]`), err: true},
		{name: "SenML CBOR", ct: ContentTypeSenMLCBOR,
			payload: mustCBOR(t, []map[int]any{{-2: "dev:", -3: abs, 0: "temp", 1: "Cel", 2: 23.5}, {0: "hum", 2: 40, 6: 1}}),
			want: []Reading{
				{Field: "dev:temp", Value: 23.5, Unit: "Cel", Time: testNow.Add(-time.Hour)},
				{Field: "dev:hum", Value: 40, Time: testNow.Add(-time.Hour + time.Second)},
			}},
		{name: "SenML CBOR by content format 112, half float", ct: "112",
			payload: []byte{0x81, 0xa2, 0x00, 0x61, 'x', 0x02, 0xf9, 0x3e, 0x00}, // [{0:"x", 2: 1.5 (float16)}]
			want:    []Reading{{Field: "x", Value: 1.5}}},
		{name: "SenML CBOR sniffed", payload: mustCBOR(t, []map[int]any{{0: "x", 2: -1}}), want: []Reading{{Field: "x", Value: -1}}},
		{name: "SenML CBOR truncated", ct: ContentTypeSenMLCBOR, payload: mustCBOR(t, []map[int]any{{0: "x", 2: 1}})[:4], err: true},
		{name: "SenML CBOR wrong type", ct: ContentTypeSenMLCBOR, payload: mustCBOR(t, []map[int]any{{0: 5, 2: 1}}), err: true},
		{name: "SenML CBOR NaN", ct: ContentTypeSenMLCBOR, payload: mustCBOR(t, []map[int]any{{0: "x", 2: math.NaN()}}), err: true},
		{name: "binary type", ct: "application/octet-stream", payload: []byte{0x81, 0xa0}, notNum: true},
		{name: "image", ct: "image/png", payload: []byte("12"), notNum: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := Decode(tt.ct, tt.payload, testNow)
			switch {
			case tt.notNum:
				if !errors.Is(err, ErrNotNumeric) {
					t.Fatalf("Decode = %v, %v; want ErrNotNumeric", got, err)
				}
				return
			case tt.err:
				if err == nil || errors.Is(err, ErrNotNumeric) {
					t.Fatalf("Decode = %v, %v; want a decoding error", got, err)
				}
				return
			case err != nil:
				t.Fatalf("Decode: %v", err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("Decode = %+v; want %+v", got, tt.want)
			}
			for i := range got {
				g, w := got[i], tt.want[i]
				if g.Field != w.Field || g.Unit != w.Unit || math.Abs(g.Value-w.Value) > 1e-9 ||
					g.Time.Sub(w.Time).Abs() > time.Microsecond {
					t.Errorf("reading %d = %+v; want %+v", i, g, w)
				}
			}
		})
	}
}

func ftoa(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }

func FuzzDecodeText(f *testing.F) {
	for _, s := range []string{"21.5", "-1e3", " 7 ", "abc", "", "1e999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		checkReadings(t, "text/plain", []byte(s))
	})
}

func FuzzDecodeJSONObject(f *testing.F) {
	for _, s := range []string{`{"a":1}`, `{"a":{"b":2.5}}`, `{"a":[1]}`, `{`, `{"":1}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		checkReadings(t, "application/json", []byte(s))
	})
}

func FuzzDecodeSenMLJSON(f *testing.F) {
	for _, s := range []string{`[{"bn":"a:","n":"t","v":1,"t":-1}]`, `[{"vb":false}]`, `[{"bt":1e300,"v":1}]`, `[]`, `[{"v":1e308,"bv":1e308}]`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		checkReadings(t, ContentTypeSenMLJSON, []byte(s))
	})
}

func FuzzDecodeSenMLCBOR(f *testing.F) {
	f.Add(mustCBOR(f, []map[int]any{{-2: "dev:", -3: 1.7e9, 0: "temp", 2: 23.5}, {0: "hum", 2: 40, 6: 1}}))
	f.Add([]byte{0x81, 0xa2, 0x00, 0x61, 'x', 0x02, 0xf9, 0x3e, 0x00})
	f.Add([]byte{0x9f, 0xa1, 0x02, 0x01, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		checkReadings(t, ContentTypeSenMLCBOR, b)
		checkReadings(t, "", b)
	})
}

// checkReadings holds any decoded reading to what the store relies on.
func checkReadings(t *testing.T, ct string, b []byte) {
	t.Helper()
	rs, err := Decode(ct, b, testNow)
	if err != nil {
		if len(rs) != 0 {
			t.Fatalf("readings %v with error %v", rs, err)
		}
		return
	}
	if len(rs) == 0 || len(rs) > maxRecords {
		t.Fatalf("%d readings without an error", len(rs))
	}
	for _, r := range rs {
		if r.Field == "" || len(r.Field) > maxNameLen || math.IsNaN(r.Value) || math.IsInf(r.Value, 0) {
			t.Fatalf("bad reading %+v", r)
		}
	}
}
