package providers

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestCheckEnv(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want []string // in the error; none means no error
	}{
		{"plain variables", map[string]string{"HTTP_PROXY": "x", "LOG_LEVEL": "debug"}, nil},
		{"an API key, any case", map[string]string{"anthropic_api_key": "sk"}, []string{"anthropic_api_key is refused"}},
		{"the provider's own", map[string]string{"AGENT_TOKEN": "t"}, []string{"AGENT_TOKEN is set by the provider"}},
		{"malformed names", map[string]string{"A=B": "x", "": "y"}, []string{`invalid variable name "A=B"`, `invalid variable name ""`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckEnv(tt.env)
			if tt.want == nil {
				assert.NoError(t, err)
				return
			}
			for _, w := range tt.want {
				assert.ErrorContains(t, err, w)
			}
		})
	}
}

func TestIDSet(t *testing.T) {
	var s IDSet
	assert.False(t, s.Has("a"), "the zero value is empty")
	s.Mark("a")
	assert.True(t, s.Has("a"))
	assert.False(t, s.Has("b"))
	s.Forget("a")
	assert.False(t, s.Has("a"))
	s.Forget("never marked")
}

func TestGoneSet(t *testing.T) {
	var s GoneSet
	assert.False(t, s.Has("a"), "the zero value is empty")
	s.Mark("a")
	s.Mark("b")
	assert.True(t, s.Has("a"))
	assert.True(t, s.Has("b"))
	assert.False(t, s.Has("c"))
}
