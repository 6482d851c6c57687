package configs

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"reflect"
	"slices"
	"strings"

	"github.com/agcluster/caddy-agcluster/agent"
)

// parsePrefix is the prefix agent.ParseConfig puts on decoding errors.
const parsePrefix = "parse agent config: "

// fileErrors turns an error of agent.ParseConfig for data into LoadErrors
// naming file, the field (or line and column) and the reason.
func fileErrors(file string, data []byte, err error) []error {
	// Validation problems: one or more *agent.ConfigError, joined.
	var parts []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		parts = j.Unwrap()
	} else {
		parts = []error{err}
	}
	var out []error
	for _, p := range parts {
		var ce *agent.ConfigError
		if errors.As(p, &ce) {
			out = append(out, &LoadError{File: file, Field: ce.Field, Reason: ce.Reason, Err: ce})
			continue
		}
		out = append(out, decodeError(file, data, p))
	}
	return out
}

// decodeError describes a JSON decoding error of agent.ParseConfig.
func decodeError(file string, data []byte, err error) *LoadError {
	e := &LoadError{File: file, Err: err}
	msg := strings.TrimPrefix(err.Error(), parsePrefix)

	// Errors from SystemPrompt.UnmarshalJSON start with the field's name.
	if strings.HasPrefix(msg, "system_prompt") {
		field, reason, _ := strings.Cut(msg, " ")
		e.Field, e.Reason = field, reason
		return e
	}
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		e.Line, e.Column = position(data, se.Offset)
		e.Reason = "invalid JSON: " + se.Error()
	case errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF):
		e.Line, e.Column = position(data, int64(len(data))+1)
		e.Reason = "invalid JSON: unexpected end of input"
	case errors.As(err, &te):
		e.Line, e.Column = position(data, te.Offset)
		e.Field = te.Field
		if e.Field == "" {
			e.Field = "(document)"
		}
		e.Reason = fmt.Sprintf("must be %s, not a JSON %s", describeType(te.Type), te.Value)
	case strings.HasPrefix(msg, `json: unknown field "`):
		name := strings.TrimSuffix(strings.TrimPrefix(msg, `json: unknown field "`), `"`)
		e.Field = name
		e.Reason = "unknown field"
		var raw any
		if json.NewDecoder(bytes.NewReader(data)).Decode(&raw) == nil {
			if at, known, ok := findUnknown(raw, reflect.TypeFor[agent.Config](), "", name); ok {
				e.Field = at
				e.Reason = "unknown field (known: " + strings.Join(known, ", ") + ")"
			}
		}
	default:
		e.Reason = msg
	}
	return e
}

// position converts a json error offset (the number of bytes read, so the
// bad byte is the one before it) into a 1-based line and column.
func position(data []byte, offset int64) (line, col int) {
	p := int(offset) - 1
	p = max(0, min(p, len(data)))
	before := data[:p]
	line = 1 + bytes.Count(before, []byte{'\n'})
	col = p - (bytes.LastIndexByte(before, '\n') + 1) + 1
	return line, col
}

// describeType names a Go type the way a config author thinks of it.
func describeType(t reflect.Type) string {
	if t == nil {
		return "another type"
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "a list"
	case reflect.Map, reflect.Struct:
		return "an object"
	}
	return t.String()
}

var unmarshalerType = reflect.TypeFor[json.Unmarshaler]()

// findUnknown looks in the decoded JSON value v, meant for type t, for an
// object key called name that t does not have. It returns the key's JSON
// path (at is the path of v) and the keys t knows.
func findUnknown(v any, t reflect.Type, at, name string) (string, []string, bool) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Implements(unmarshalerType) || reflect.PointerTo(t).Implements(unmarshalerType) {
		return "", nil, false // decodes itself; its errors name the field
	}
	switch t.Kind() {
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			return "", nil, false
		}
		known := jsonFields(t)
		for _, k := range slices.Sorted(maps.Keys(m)) {
			f, ok := fieldByJSONName(t, k)
			if !ok {
				if k == name {
					return joinPath(at, k), known, true
				}
				continue
			}
			if p, kn, ok := findUnknown(m[k], f.Type, joinPath(at, k), name); ok {
				return p, kn, true
			}
		}
	case reflect.Map:
		m, ok := v.(map[string]any)
		if !ok {
			return "", nil, false
		}
		for _, k := range slices.Sorted(maps.Keys(m)) {
			if p, kn, ok := findUnknown(m[k], t.Elem(), joinPath(at, k), name); ok {
				return p, kn, true
			}
		}
	case reflect.Slice:
		s, ok := v.([]any)
		if !ok {
			return "", nil, false
		}
		for i, e := range s {
			if p, kn, ok := findUnknown(e, t.Elem(), fmt.Sprintf("%s[%d]", at, i), name); ok {
				return p, kn, true
			}
		}
	}
	return "", nil, false
}

func joinPath(at, k string) string {
	if at == "" {
		return k
	}
	return at + "." + k
}

// jsonName is the JSON object key of a struct field ("" if it has none).
func jsonName(f reflect.StructField) string {
	if !f.IsExported() {
		return ""
	}
	tag, _, _ := strings.Cut(f.Tag.Get("json"), ",")
	switch tag {
	case "-":
		return ""
	case "":
		return f.Name
	}
	return tag
}

// jsonFields lists the JSON keys of struct type t, in declaration order.
func jsonFields(t reflect.Type) []string {
	var out []string
	for f := range t.Fields() {
		if n := jsonName(f); n != "" {
			out = append(out, n)
		}
	}
	return out
}

// fieldByJSONName finds the field of t that encoding/json would decode key
// into (it matches keys case-insensitively).
func fieldByJSONName(t reflect.Type, key string) (reflect.StructField, bool) {
	for f := range t.Fields() {
		if n := jsonName(f); n != "" && strings.EqualFold(n, key) {
			return f, true
		}
	}
	return reflect.StructField{}, false
}
