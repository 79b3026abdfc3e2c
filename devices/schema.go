package devices

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Limits of a command declaration, so that a declaration fits a data form
// and a retained message.
const (
	MaxCommands         = 64
	MaxParams           = 32
	MaxDescription      = 1024
	MaxEnum             = 64
	MaxDeclarationBytes = 64 << 10
)

// Param types a declared parameter may have (JSON Schema's simple types).
const (
	TypeString  = "string"
	TypeNumber  = "number"
	TypeInteger = "integer"
	TypeBoolean = "boolean"
)

var paramTypes = []string{TypeString, TypeNumber, TypeInteger, TypeBoolean}

// Command is a command a device declares: its name, what it does, and its
// parameters as a small JSON Schema (an object of simple-typed
// properties). A command with no Params takes whatever JSON it is given.
type Command struct {
	Name        string  `json:"name"`
	Description string  `json:"description,omitempty"`
	Params      *Schema `json:"params,omitempty"`
}

// Schema is the JSON Schema subset of a command's parameters: type
// "object", its properties in declaration order, the required ones.
type Schema struct {
	// Properties are the parameters in the order they were declared (the
	// order of an XEP-0004 form's fields).
	Properties []Param
	// Required names the parameters that must be given.
	Required []string
}

// Param is one declared parameter.
type Param struct {
	Name        string
	Type        string
	Description string
	// Enum, when not empty, lists the values allowed, each of Type.
	Enum []any
	// Default is the value used when the parameter is absent (nil: none).
	Default any
}

// paramJSON is a Param as JSON Schema writes it.
type paramJSON struct {
	Type        string `json:"type"`
	Description string `json:"description,omitempty"`
	Enum        []any  `json:"enum,omitempty"`
	Default     any    `json:"default,omitempty"`
}

// IsRequired reports whether parameter name is required.
func (s *Schema) IsRequired(name string) bool { return slices.Contains(s.Required, name) }

// Param returns the declared parameter name.
func (s *Schema) Param(name string) (Param, bool) {
	for _, p := range s.Properties {
		if p.Name == name {
			return p, true
		}
	}
	return Param{}, false
}

// MarshalJSON writes the schema as JSON Schema, properties in order.
func (s Schema) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteString(`{"type":"object","properties":{`)
	for i, p := range s.Properties {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(p.Name) // a string always encodes
		v, err := json.Marshal(paramJSON{Type: p.Type, Description: p.Description, Enum: p.Enum, Default: p.Default})
		if err != nil {
			return nil, fmt.Errorf("devices: param %q: %w", p.Name, err)
		}
		b.Write(k)
		b.WriteByte(':')
		b.Write(v)
	}
	b.WriteByte('}')
	if len(s.Required) > 0 {
		r, _ := json.Marshal(s.Required) // strings always encode
		b.WriteString(`,"required":`)
		b.Write(r)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// UnmarshalJSON reads a JSON Schema object, keeping the properties'
// order; Validate checks what it read.
func (s *Schema) UnmarshalJSON(data []byte) error {
	var raw struct {
		Type       string          `json:"type"`
		Properties json.RawMessage `json:"properties"`
		Required   []string        `json:"required"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return err
	}
	if raw.Type != "" && raw.Type != "object" {
		return fmt.Errorf("type %q: must be \"object\"", trunc(raw.Type))
	}
	s.Required = raw.Required
	s.Properties = nil
	if len(bytes.TrimSpace(raw.Properties)) == 0 || string(bytes.TrimSpace(raw.Properties)) == "null" {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw.Properties))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return errors.New("properties: must be an object")
	}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return fmt.Errorf("properties: %w", err)
		}
		name, _ := t.(string) // object keys are strings
		var pj paramJSON
		if err := dec.Decode(&pj); err != nil {
			return fmt.Errorf("properties: %q: %w", trunc(name), err)
		}
		s.Properties = append(s.Properties, Param{Name: name, Type: pj.Type, Description: pj.Description, Enum: pj.Enum, Default: pj.Default})
	}
	return nil
}

// ParseCommands reads a command declaration: a JSON array of commands, or
// an object {"commands": [...]}, and validates it.
func ParseCommands(data []byte) ([]Command, error) {
	data = bytes.TrimSpace(data)
	if len(data) > MaxDeclarationBytes {
		return nil, fmt.Errorf("%w: commands: %d bytes, at most %d", ErrInvalid, len(data), MaxDeclarationBytes)
	}
	var cs []Command
	if len(data) > 0 && data[0] == '{' {
		var w struct {
			Commands []Command `json:"commands"`
		}
		if err := json.Unmarshal(data, &w); err != nil {
			return nil, fmt.Errorf("%w: commands: %v", ErrInvalid, err)
		}
		cs = w.Commands
	} else if err := json.Unmarshal(data, &cs); err != nil {
		return nil, fmt.Errorf("%w: commands: must be a JSON array of {name, description, params}: %v", ErrInvalid, err)
	}
	if cs == nil {
		cs = []Command{}
	}
	if err := ValidateCommands(cs); err != nil {
		return nil, err
	}
	return cs, nil
}

// ValidateCommands checks a list of declared commands: unique valid
// names, parameters of simple types with matching enums and defaults.
func ValidateCommands(cs []Command) error {
	if len(cs) > MaxCommands {
		return fmt.Errorf("%w: %d commands, at most %d", ErrInvalid, len(cs), MaxCommands)
	}
	seen := map[string]bool{}
	for _, c := range cs {
		if err := ValidateID(c.Name); err != nil {
			return fmt.Errorf("%w: command name %q: must be 1..128 letters, digits, '.', '_' or '-'", ErrInvalid, trunc(c.Name))
		}
		if seen[c.Name] {
			return fmt.Errorf("%w: command %q declared twice", ErrInvalid, c.Name)
		}
		seen[c.Name] = true
		if err := checkText(c.Description); err != nil {
			return fmt.Errorf("%w: command %q: description: %v", ErrInvalid, c.Name, err)
		}
		if c.Params != nil {
			if err := c.Params.validate(); err != nil {
				return fmt.Errorf("%w: command %q: params: %v", ErrInvalid, c.Name, err)
			}
		}
	}
	return nil
}

func checkText(s string) error {
	if !utf8.ValidString(s) {
		return errors.New("not valid UTF-8")
	}
	if len(s) > MaxDescription {
		return fmt.Errorf("%d bytes, at most %d", len(s), MaxDescription)
	}
	return nil
}

func (s *Schema) validate() error {
	if len(s.Properties) > MaxParams {
		return fmt.Errorf("%d parameters, at most %d", len(s.Properties), MaxParams)
	}
	seen := map[string]bool{}
	for _, p := range s.Properties {
		// A data form field var and a JSON key anyone can type.
		if !validParamName(p.Name) {
			return fmt.Errorf("parameter %q: name must be 1..64 letters, digits, '_', '.' or '-', starting with a letter or '_'", trunc(p.Name))
		}
		if seen[p.Name] {
			return fmt.Errorf("parameter %q declared twice", p.Name)
		}
		seen[p.Name] = true
		if !slices.Contains(paramTypes, p.Type) {
			return fmt.Errorf("parameter %q: type %q: must be one of %v", p.Name, trunc(p.Type), paramTypes)
		}
		if err := checkText(p.Description); err != nil {
			return fmt.Errorf("parameter %q: description: %v", p.Name, err)
		}
		if len(p.Enum) > MaxEnum {
			return fmt.Errorf("parameter %q: %d enum values, at most %d", p.Name, len(p.Enum), MaxEnum)
		}
		for _, v := range p.Enum {
			if _, err := p.check(v); err != nil {
				return fmt.Errorf("parameter %q: enum value %v: %v", p.Name, v, err)
			}
		}
		if p.Default != nil {
			if _, err := p.checkValue(p.Default); err != nil {
				return fmt.Errorf("parameter %q: default: %v", p.Name, err)
			}
		}
	}
	for _, r := range s.Required {
		if !seen[r] {
			return fmt.Errorf("required parameter %q is not declared", trunc(r))
		}
	}
	return nil
}

// check checks v against the parameter's type and returns it normalized
// (an integer as float64 with no fraction).
func (p Param) check(v any) (any, error) {
	switch p.Type {
	case TypeString:
		if _, ok := v.(string); !ok {
			return nil, fmt.Errorf("want a string, got %s", jsonKind(v))
		}
	case TypeBoolean:
		if _, ok := v.(bool); !ok {
			return nil, fmt.Errorf("want true or false, got %s", jsonKind(v))
		}
	case TypeNumber, TypeInteger:
		f, ok := v.(float64)
		if !ok {
			return nil, fmt.Errorf("want a number, got %s", jsonKind(v))
		}
		if p.Type == TypeInteger && f != math.Trunc(f) {
			return nil, fmt.Errorf("want an integer, got %v", f)
		}
	}
	return v, nil
}

// checkValue is check plus the enum.
func (p Param) checkValue(v any) (any, error) {
	v, err := p.check(v)
	if err != nil {
		return nil, err
	}
	if len(p.Enum) > 0 && !slices.ContainsFunc(p.Enum, func(e any) bool { return e == v }) {
		return nil, fmt.Errorf("%s is not one of %s", jsonText(v), enumText(p.Enum))
	}
	return v, nil
}

func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case float64:
		return "a number"
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}

func jsonText(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

func enumText(vs []any) string {
	parts := make([]string, len(vs))
	for i, v := range vs {
		parts[i] = jsonText(v)
	}
	return strings.Join(parts, ", ")
}

// ParamError says which parameter of a command is wrong and why; it is an
// ErrInvalid (REST 400, XMPP bad-request).
type ParamError struct {
	Command string
	Param   string
	Reason  string
}

func (e *ParamError) Error() string {
	if e.Param == "" {
		return fmt.Sprintf("devices: command %q: params: %s", e.Command, e.Reason)
	}
	return fmt.Sprintf("devices: command %q: parameter %q: %s", e.Command, e.Param, e.Reason)
}

// Unwrap makes a ParamError an ErrInvalid.
func (e *ParamError) Unwrap() error { return ErrInvalid }

// CheckParams validates JSON params against c's declaration and returns
// them as compact JSON with the defaults of absent parameters filled in.
// A command without declared Params takes any JSON. Unknown parameters
// are refused, so a typo is not silently ignored.
func (c Command) CheckParams(params json.RawMessage) (json.RawMessage, error) {
	params, err := NormalizeParams(params)
	if err != nil {
		return nil, err
	}
	if c.Params == nil {
		return params, nil
	}
	obj := map[string]any{}
	if string(params) != "null" {
		if err := json.Unmarshal(params, &obj); err != nil || obj == nil {
			return nil, &ParamError{Command: c.Name, Reason: "must be a JSON object of the declared parameters"}
		}
	}
	for k := range obj {
		if _, ok := c.Params.Param(k); !ok {
			return nil, &ParamError{Command: c.Name, Param: k, Reason: "not a parameter of this command (declared: " + strings.Join(c.paramNames(), ", ") + ")"}
		}
	}
	for _, p := range c.Params.Properties {
		v, ok := obj[p.Name]
		if !ok || v == nil {
			if p.Default != nil {
				obj[p.Name] = p.Default
				continue
			}
			if c.Params.IsRequired(p.Name) {
				return nil, &ParamError{Command: c.Name, Param: p.Name, Reason: "required"}
			}
			delete(obj, p.Name)
			continue
		}
		if _, err := p.checkValue(v); err != nil {
			return nil, &ParamError{Command: c.Name, Param: p.Name, Reason: err.Error()}
		}
	}
	out, err := json.Marshal(obj)
	if err != nil {
		return nil, fmt.Errorf("devices: command %q: encode params: %w", c.Name, err)
	}
	return out, nil
}

func (c Command) paramNames() []string {
	var ns []string
	for _, p := range c.Params.Properties {
		ns = append(ns, p.Name)
	}
	return ns
}

// ParseValue turns the text of a form field into a value of the
// parameter's type ("true"/"1" for a boolean, as XEP-0004 says), checked
// against its enum.
func (p Param) ParseValue(text string) (any, error) {
	var v any
	switch p.Type {
	case TypeString:
		v = text
	case TypeBoolean:
		switch strings.TrimSpace(text) {
		case "1", "true":
			v = true
		case "0", "false":
			v = false
		default:
			return nil, fmt.Errorf("want true, false, 1 or 0, got %q", trunc(text))
		}
	case TypeNumber, TypeInteger:
		f, err := strconv.ParseFloat(strings.TrimSpace(text), 64)
		if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
			return nil, fmt.Errorf("want a number, got %q", trunc(text))
		}
		v = f
	default:
		return nil, fmt.Errorf("type %q unknown", p.Type)
	}
	return p.checkValue(v)
}

// FormatValue writes a parameter value as form field text.
func FormatValue(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case bool:
		if x {
			return "true"
		}
		return "false"
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	}
	return jsonText(v)
}

// FindCommand returns the command called name in cs.
func FindCommand(cs []Command, name string) (Command, bool) {
	for _, c := range cs {
		if c.Name == name {
			return c, true
		}
	}
	return Command{}, false
}
