package rest

import (
	"encoding/json"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// ginToOpenAPI turns "/a/:id/*topic" into "/a/{id}/{topic}".
func ginToOpenAPI(p string) string {
	return regexp.MustCompile(`[:*]([A-Za-z_]+)`).ReplaceAllString(p, "{$1}")
}

// TestOpenAPIRoutes holds the router and openapi.json to each other: every
// route is documented and every documented operation is routed.
func TestOpenAPIRoutes(t *testing.T) {
	t.Parallel()
	h := startHub(t, hubOpts{})
	var doc struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	s, hdr, b := h.do("GET", "/api/v1/openapi.json", "", "", "")
	if s != 200 || hdr.Get("Content-Type") != "application/json" {
		t.Fatalf("openapi.json: %d %s", s, hdr.Get("Content-Type"))
	}
	if err := json.Unmarshal([]byte(b), &doc); err != nil {
		t.Fatalf("openapi.json does not parse: %v", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Fatalf("openapi version %q", doc.OpenAPI)
	}
	methods := []string{"get", "put", "post", "delete", "patch", "head", "options"}
	documented := map[string]bool{}
	for path, ops := range doc.Paths {
		for m := range ops {
			if slices.Contains(methods, m) {
				documented[strings.ToUpper(m)+" "+path] = true
			}
		}
	}
	routed := map[string]bool{}
	for _, r := range h.a.engine.Routes() {
		routed[r.Method+" "+ginToOpenAPI(r.Path)] = true
	}
	for op := range routed {
		if !documented[op] {
			t.Errorf("route %s is not in openapi.json", op)
		}
	}
	for op := range documented {
		if !routed[op] {
			t.Errorf("openapi.json documents %s, which is not routed", op)
		}
	}
	if len(routed) < 20 {
		t.Errorf("only %d routes", len(routed))
	}
	// Every $ref points at a schema that exists.
	var full struct {
		Components struct {
			Schemas map[string]json.RawMessage `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal([]byte(b), &full); err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile(`"#/components/schemas/([A-Za-z]+)"`).FindAllStringSubmatch(b, -1) {
		if _, ok := full.Components.Schemas[m[1]]; !ok {
			t.Errorf("$ref to missing schema %s", m[1])
		}
	}
}

func TestGinToOpenAPI(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"/api/v1/topics/*topic":              "/api/v1/topics/{topic}",
		"/api/v1/devices/:id/commands/:name": "/api/v1/devices/{id}/commands/{name}",
		"/healthz":                           "/healthz",
	} {
		if got := ginToOpenAPI(in); got != want {
			t.Errorf("%s -> %s, want %s", in, got, want)
		}
	}
}
