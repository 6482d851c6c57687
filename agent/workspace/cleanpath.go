package workspace

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

const (
	// MaxPathLen is the longest client path accepted, in bytes.
	MaxPathLen = 4096
	// MaxElemLen is the longest path element accepted, in bytes.
	MaxElemLen = 255
)

// CleanPath validates a client-supplied relative path and returns its clean
// slash-separated form ("a/b.txt"). "." elements, duplicate and trailing
// slashes are removed. It rejects, with an error wrapping ErrInvalidPath:
// the empty path, absolute paths, NUL and other control characters,
// backslashes, ".." elements, paths longer than MaxPathLen bytes, elements
// longer than MaxElemLen bytes, invalid UTF-8, and paths that clean to the
// workspace root itself.
func CleanPath(p string) (string, error) {
	clean, err := cleanPath(p)
	if err != nil {
		return "", err
	}
	if clean == "." {
		return "", pathErr(p, ErrInvalidPath, "path refers to the workspace root, not a file")
	}
	return clean, nil
}

// cleanDir is like CleanPath but accepts "" and paths that clean to the
// workspace root, returning ".".
func cleanDir(p string) (string, error) {
	if p == "" {
		return ".", nil
	}
	return cleanPath(p)
}

// cleanPath validates p and returns its clean form, "." for the root.
func cleanPath(p string) (string, error) {
	switch {
	case p == "":
		return "", pathErr(p, ErrInvalidPath, "path is empty")
	case len(p) > MaxPathLen:
		return "", pathErr(p, ErrInvalidPath, "path is longer than 4096 bytes")
	case !utf8.ValidString(p):
		return "", pathErr(p, ErrInvalidPath, "path is not valid UTF-8")
	case strings.IndexByte(p, 0) >= 0:
		return "", pathErr(p, ErrInvalidPath, "path must not contain NUL bytes")
	case strings.IndexFunc(p, unicode.IsControl) >= 0:
		return "", pathErr(p, ErrInvalidPath, "path must not contain control characters")
	case strings.IndexByte(p, '\\') >= 0:
		return "", pathErr(p, ErrInvalidPath, "path must not contain backslashes")
	case p[0] == '/':
		return "", pathErr(p, ErrInvalidPath, `path must be relative (must not start with "/")`)
	}

	// Fast path: already clean.
	clean := true
	n := 0
	for rest := p; ; {
		elem, tail, more := strings.Cut(rest, "/")
		switch {
		case elem == "..":
			return "", pathErr(p, ErrInvalidPath, `path must not contain ".." elements`)
		case len(elem) > MaxElemLen:
			return "", pathErr(p, ErrInvalidPath, "path element is longer than 255 bytes")
		case elem == "" || elem == ".":
			clean = false
		default:
			n++
		}
		if !more {
			break
		}
		rest = tail
	}
	if clean {
		return p, nil
	}
	if n == 0 {
		return ".", nil
	}
	var b strings.Builder
	b.Grow(len(p))
	for elem := range strings.SplitSeq(p, "/") {
		if elem == "" || elem == "." {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('/')
		}
		b.WriteString(elem)
	}
	return b.String(), nil
}
