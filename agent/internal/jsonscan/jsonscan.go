// Package jsonscan reads the few JSON shapes on the streaming hot path
// (CLI delta lines, agent delta events) without a general decode. Every
// function refuses what it cannot read exactly as encoding/json would, so
// callers fall back to encoding/json and get the same result either way.
package jsonscan

import (
	"encoding/json"
	"unicode/utf8"
)

// CutPlainString reads the rest of a JSON string whose opening quote is
// already consumed, if it has no escapes, no control characters and is
// valid UTF-8 (so its bytes are its value); it returns the value and what
// follows the closing quote.
func CutPlainString(b []byte) (value, rest []byte, ok bool) {
	for i, c := range b {
		switch {
		case c == '"':
			if !utf8.Valid(b[:i]) {
				return nil, b, false
			}
			return b[:i], b[i+1:], true
		case c == '\\' || c < 0x20:
			return nil, b, false
		}
	}
	return nil, b, false
}

// CutString reads the JSON string at the start of b (opening quote
// included) and returns its value and what follows it.
func CutString(b []byte) (value string, rest []byte, ok bool) {
	if len(b) == 0 || b[0] != '"' {
		return "", b, false
	}
	if v, r, ok := CutPlainString(b[1:]); ok {
		return string(v), r, true
	}
	// Escapes (or bytes the decoder would replace): find the closing quote
	// and let encoding/json produce the value.
	for i := 1; i < len(b); i++ {
		switch c := b[i]; {
		case c == '\\':
			i++
		case c < 0x20:
			return "", b, false
		case c == '"':
			if err := json.Unmarshal(b[:i+1], &value); err != nil {
				return "", b, false
			}
			return value, b[i+1:], true
		}
	}
	return "", b, false
}

// CutInt reads a non-negative JSON integer of at most 9 digits (so it fits
// an int anywhere) at the start of b.
func CutInt(b []byte) (n int, rest []byte, ok bool) {
	i := 0
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		n = n*10 + int(b[i]-'0')
		i++
	}
	if i == 0 || i > 9 || (i > 1 && b[0] == '0') {
		return 0, b, false
	}
	return n, b[i:], true
}
