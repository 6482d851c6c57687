package anthropictest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode/utf8"
)

// pyJSON re-encodes the JSON document raw the way Python's
// json.dumps(json.loads(raw), ensure_ascii=False) does: ", " and ": "
// separators, object keys in document order, strings unescaped except for
// the characters JSON requires, and Python's formatting of floats. The Python
// mock derives its token estimates and its any_text_contains matching from
// that text, so the Go port does too.
func pyJSON(raw []byte) (string, error) {
	if len(bytes.TrimSpace(raw)) == 0 {
		return "", nil
	}
	if !json.Valid(raw) {
		return "", errors.New("re-encode JSON: invalid JSON")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	type frame struct {
		object bool
		n      int // keys and values (objects) or elements (arrays) so far
	}
	var (
		b     strings.Builder
		stack []frame
	)
	// sep writes the separator due before the next key, value or element.
	sep := func() {
		if len(stack) == 0 {
			return
		}
		f := &stack[len(stack)-1]
		switch {
		case f.object && f.n%2 == 1:
			b.WriteString(": ")
		case f.n > 0:
			b.WriteString(", ")
		}
		f.n++
	}
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return "", fmt.Errorf("re-encode JSON: %w", err)
		}
		switch t := tok.(type) {
		case json.Delim:
			switch t {
			case '{', '[':
				sep()
				stack = append(stack, frame{object: t == '{'})
			case '}', ']':
				stack = stack[:len(stack)-1]
			}
			b.WriteRune(rune(t))
		case string:
			sep()
			writePyString(&b, t)
		case json.Number:
			sep()
			b.WriteString(pyNumber(t))
		case bool:
			sep()
			b.WriteString(strconv.FormatBool(t))
		case nil:
			sep()
			b.WriteString("null")
		}
	}
	return b.String(), nil
}

// writePyString writes s as a JSON string the way Python's json module does
// with ensure_ascii=False.
func writePyString(b *strings.Builder, s string) {
	const hex = "0123456789abcdef"
	b.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		case '\b':
			b.WriteString(`\b`)
		case '\f':
			b.WriteString(`\f`)
		default:
			if r < 0x20 {
				b.WriteString(`\u00`)
				b.WriteByte(hex[r>>4])
				b.WriteByte(hex[r&0xf])
			} else {
				b.WriteRune(r)
			}
		}
	}
	b.WriteByte('"')
}

// pyNumber formats a JSON number the way Python prints what json.loads
// made of it: integers as written (Python ints are unbounded), everything
// else as a float in repr style (1.0, 1e+16, 1e-05).
func pyNumber(n json.Number) string {
	s := string(n)
	if !strings.ContainsAny(s, ".eE") {
		if s == "-0" {
			return "0"
		}
		return s
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		// Out of float range: Python would print inf, which is not
		// JSON either; keep the literal.
		return s
	}
	e := strconv.FormatFloat(f, 'e', -1, 64)
	exp, _ := strconv.Atoi(e[strings.IndexByte(e, 'e')+1:])
	if exp < -4 || exp >= 16 {
		return e
	}
	fixed := strconv.FormatFloat(f, 'f', -1, 64)
	if !strings.Contains(fixed, ".") {
		fixed += ".0"
	}
	return fixed
}

// estTokens is the Python mock's token estimate for a JSON value: the
// length in characters of its Python encoding divided by 4, at least 1.
// Undecodable input is measured as it is.
func estTokens(raw []byte) int {
	s, err := pyJSON(raw)
	if err != nil {
		s = string(raw)
	}
	return max(1, utf8.RuneCountInString(s)/4)
}

// estTextTokens is the Python mock's output token estimate for one streamed
// string: its length in characters divided by 4, at least 1.
func estTextTokens(s string) int {
	return max(1, utf8.RuneCountInString(s)/4)
}

// marshal encodes v as compact JSON without HTML escaping, like the
// ensure_ascii=False output of the Python mock.
func marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// field is one key/value pair of an [object].
type field struct {
	key   string
	value any
}

// object is a JSON object that keeps its keys in insertion order, so that
// events come out with their keys in the order of the Python mock.
type object []field

// set replaces the value of key, or appends key when it is new.
func (o *object) set(key string, value any) {
	for i := range *o {
		if (*o)[i].key == key {
			(*o)[i].value = value
			return
		}
	}
	*o = append(*o, field{key, value})
}

// without returns a copy of o without key.
func (o object) without(key string) object {
	out := make(object, 0, len(o))
	for _, f := range o {
		if f.key != key {
			out = append(out, f)
		}
	}
	return out
}

// MarshalJSON encodes o with its keys in order.
func (o object) MarshalJSON() ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteByte('{')
	for i, f := range o {
		if i > 0 {
			buf.WriteByte(',')
		}
		k, err := marshal(f.key)
		if err != nil {
			return nil, err
		}
		v, err := marshal(f.value)
		if err != nil {
			return nil, fmt.Errorf("key %q: %w", f.key, err)
		}
		buf.Write(k)
		buf.WriteByte(':')
		buf.Write(v)
	}
	buf.WriteByte('}')
	return buf.Bytes(), nil
}
