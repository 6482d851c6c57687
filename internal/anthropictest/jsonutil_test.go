package anthropictest

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The expected strings were produced by Python 3.11:
// json.dumps(json.loads(in), ensure_ascii=False).
func TestPyJSON(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{
			name: "strings and containers",
			in:   `{"a":1,"b":[true,false,null],"c":"x\"y\\z\n\t\u0001\u001f\u003c>&\u00e9\ud83d\ude00/","d":{},"e":[]}`,
			want: `{"a": 1, "b": [true, false, null], "c": "x\"y\\z\n\t\u0001\u001f<>&é😀/", "d": {}, "e": []}`,
		},
		{
			name: "numbers",
			in:   `[1.0, 1e3, 1.5e-7, -0, -0.0, 12345678901234567890, 1e16, 1e15, 0.0001, 0.00001, 2.5E+2, 123.456, 1e22, 5e-324]`,
			want: `[1.0, 1000.0, 1.5e-07, 0, -0.0, 12345678901234567890, 1e+16, 1000000000000000.0, 0.0001, 1e-05, 250.0, 123.456, 1e+22, 5e-324]`,
		},
		{
			name: "no escapes for printable runes",
			in:   `"\u2028\u007f"`,
			want: "\"\u2028\x7f\"",
		},
		{
			name: "whitespace and key order kept",
			in:   "{\"nested\" : {\"k\":[{\"x\":[ ]}]}, \"a\": 0 }",
			want: `{"nested": {"k": [{"x": []}]}, "a": 0}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := pyJSON([]byte(tt.in))
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}

	_, err := pyJSON([]byte(`{"a":`))
	assert.Error(t, err)
}

func TestEstTokens(t *testing.T) {
	// len(json.dumps([{"role": "user", "content": "hi"}])) == 35
	assert.Equal(t, 8, estTokens([]byte(`[{"role":"user","content":"hi"}]`)))
	assert.Equal(t, 1, estTokens([]byte(`[]`)))
	// Characters, not bytes: 8 runes, 24 bytes.
	assert.Equal(t, 2, estTextTokens("日本語テキスト日本"))
	assert.Equal(t, 1, estTextTokens(""))
}

func TestObjectKeepsOrder(t *testing.T) {
	o := object{{"z", 1}, {"a", "<b>"}}
	o.set("m", nil)
	o.set("z", 2)
	data, err := json.Marshal(o)
	require.NoError(t, err)
	assert.Equal(t, `{"z":2,"a":"\u003cb\u003e","m":null}`, string(data))
	data, err = marshal(o.without("a"))
	require.NoError(t, err)
	assert.Equal(t, `{"z":2,"m":null}`, string(data))
	data, err = marshal(o)
	require.NoError(t, err)
	assert.Equal(t, `{"z":2,"a":"<b>","m":null}`, string(data))
}
