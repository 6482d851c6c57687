package workspace

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestCleanPath(t *testing.T) {
	long := strings.Repeat("a/", 2500)
	longElem := strings.Repeat("x", 300)
	tests := []struct {
		name    string
		in      string
		want    string
		wantMsg string // substring of the error message; "" means success
	}{
		{"simple", "a.txt", "a.txt", ""},
		{"nested", "a/b/c", "a/b/c", ""},
		{"dots and slashes", "./a//b/", "a/b", ""},
		{"inner dot", "a/./b", "a/b", ""},
		{"unicode", "données/ü.txt", "données/ü.txt", ""},
		{"dotfile", ".bashrc", ".bashrc", ""},
		{"triple dot", "a/.../b", "a/.../b", ""},
		{"dotdot prefix", "..a/b..", "..a/b..", ""},
		{"max element", strings.Repeat("e", 255), strings.Repeat("e", 255), ""},
		{"empty", "", "", "path is empty"},
		{"absolute", "/etc/passwd", "", `must not start with "/"`},
		{"double slash absolute", "//etc", "", `must not start with "/"`},
		{"parent", "../x", "", `must not contain ".." elements`},
		{"escaping parent", "a/../../x", "", `".."`},
		{"trailing parent", "a/..", "", `".."`},
		{"only parent", "..", "", `".."`},
		{"NUL", "a\x00b", "", "NUL"},
		{"backslash", "a\\b", "", "backslash"},
		{"backslash traversal", "..\\..\\etc", "", "backslash"},
		{"too long", long, "", "longer than 4096 bytes"},
		{"long element", "a/" + longElem, "", "element is longer than 255 bytes"},
		{"invalid UTF-8", "\xff", "", "not valid UTF-8"},
		{"control char", "\x01", "", "control characters"},
		{"newline", "a\nb", "", "control characters"},
		{"DEL", "a\x7fb", "", "control characters"},
		{"C1 control", "a\u0085b", "", "control characters"},
		{"root dot", ".", "", "workspace root"},
		{"root dot slash", "./", "", "workspace root"},
		{"root dots", "././/.", "", "workspace root"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := CleanPath(tt.in)
			if tt.wantMsg == "" {
				require.NoError(t, err)
				assert.Equal(t, tt.want, got)
				return
			}
			require.Error(t, err)
			assert.ErrorIs(t, err, ErrInvalidPath)
			assert.Contains(t, err.Error(), tt.wantMsg)
			assert.Contains(t, err.Error(), "invalid path")
			assert.True(t, strings.HasPrefix(err.Error(), "workspace: "), err.Error())
			assert.Less(t, len(err.Error()), 400, "message must not quote huge paths")
			assert.Empty(t, got)
		})
	}
}

func TestCleanPathMessage(t *testing.T) {
	_, err := CleanPath("../etc/passwd")
	require.Error(t, err)
	assert.Equal(t, `workspace: "../etc/passwd": path must not contain ".." elements: invalid path`, err.Error())
	var pe *PathError
	require.True(t, errors.As(err, &pe))
	assert.Equal(t, "../etc/passwd", pe.Path)
}

func FuzzCleanPath(f *testing.F) {
	for _, s := range []string{
		"a.txt", "a/b/c", "./a//b/", "données/ü.txt", "", "/etc/passwd",
		"../x", "a/../../x", "a/..", "..", "a\x00b", "a\\b", "\xff", "\x01",
		".", "...", "a/./b/.", strings.Repeat("x", 256),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		got, err := CleanPath(p)
		if err != nil {
			if !errors.Is(err, ErrInvalidPath) {
				t.Fatalf("CleanPath(%q) error %v does not wrap ErrInvalidPath", p, err)
			}
			if got != "" {
				t.Fatalf("CleanPath(%q) returned %q with an error", p, got)
			}
			return
		}
		switch {
		case got == "" || got == ".":
			t.Fatalf("CleanPath(%q) = %q, want a non-root path", p, got)
		case strings.HasPrefix(got, "/"):
			t.Fatalf("CleanPath(%q) = %q is absolute", p, got)
		case strings.ContainsAny(got, "\x00\\"):
			t.Fatalf("CleanPath(%q) = %q contains NUL or backslash", p, got)
		case !utf8.ValidString(got):
			t.Fatalf("CleanPath(%q) = %q is not valid UTF-8", p, got)
		case len(got) > MaxPathLen:
			t.Fatalf("CleanPath(%q) = %q is too long", p, got)
		}
		for _, elem := range strings.Split(got, "/") {
			if elem == ".." || elem == "." || elem == "" {
				t.Fatalf("CleanPath(%q) = %q has element %q", p, got, elem)
			}
		}
		again, err := CleanPath(got)
		if err != nil || again != got {
			t.Fatalf("CleanPath(%q) = %q, %v; want it unchanged (idempotence)", got, again, err)
		}
	})
}

func BenchmarkCleanPath(b *testing.B) {
	for _, bm := range []struct{ name, path string }{
		{"clean", "src/internal/pkg/file.go"},
		{"unclean", "./src//internal/./pkg/file.go/"},
		{"invalid", "src/../../etc/passwd"},
	} {
		b.Run(bm.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				CleanPath(bm.path)
			}
		})
	}
}
