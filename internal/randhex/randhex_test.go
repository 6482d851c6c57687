package randhex_test

import (
	"regexp"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/agcluster/caddy-agcluster/internal/randhex"
)

func TestString(t *testing.T) {
	hexDigits := regexp.MustCompile(`^[0-9a-f]*$`)
	for _, n := range []int{0, 1, 6, 32} {
		s := randhex.String(n)
		assert.Len(t, s, 2*n)
		assert.Regexp(t, hexDigits, s)
	}
	assert.NotEqual(t, randhex.String(16), randhex.String(16))
}
