package configs

import (
	"reflect"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agcluster/caddy-agcluster/agent"
)

// fill sets every field reachable from v to a non-zero value, with
// two-element slices and maps.
func fill(t *testing.T, v reflect.Value, n *int) {
	*n++
	switch v.Kind() {
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fill(t, v.Elem(), n)
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				fill(t, v.Field(i), n)
			}
		}
	case reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 2, 2))
		for i := range 2 {
			fill(t, v.Index(i), n)
		}
	case reflect.Map:
		v.Set(reflect.MakeMap(v.Type()))
		for range 2 {
			k := reflect.New(v.Type().Key()).Elem()
			fill(t, k, n)
			e := reflect.New(v.Type().Elem()).Elem()
			fill(t, e, n)
			v.SetMapIndex(k, e)
		}
	case reflect.String:
		v.SetString("s" + string(rune('a'+*n%26)) + string(rune('a'+*n/26%26)))
	case reflect.Int, reflect.Int64:
		v.SetInt(int64(*n))
	case reflect.Float64:
		v.SetFloat(float64(*n) + 0.5)
	case reflect.Bool:
		v.SetBool(true)
	default:
		t.Fatalf("fill: unhandled kind %s (%s): update fill and clone", v.Kind(), v.Type())
	}
}

// assertNoSharing fails if a and b share a pointer, slice array or map.
func assertNoSharing(t *testing.T, a, b reflect.Value, path string) {
	switch a.Kind() {
	case reflect.Pointer:
		if a.IsNil() {
			return
		}
		assert.NotEqual(t, a.Pointer(), b.Pointer(), "%s shares a pointer", path)
		assertNoSharing(t, a.Elem(), b.Elem(), path)
	case reflect.Struct:
		for i := range a.NumField() {
			if a.Type().Field(i).IsExported() {
				assertNoSharing(t, a.Field(i), b.Field(i), path+"."+a.Type().Field(i).Name)
			}
		}
	case reflect.Slice:
		if a.Len() == 0 {
			return
		}
		assert.NotEqual(t, a.Pointer(), b.Pointer(), "%s shares a slice", path)
		for i := range a.Len() {
			assertNoSharing(t, a.Index(i), b.Index(i), path+"[]")
		}
	case reflect.Map:
		if a.IsNil() {
			return
		}
		assert.NotEqual(t, a.Pointer(), b.Pointer(), "%s shares a map", path)
		for _, k := range a.MapKeys() {
			assertNoSharing(t, a.MapIndex(k), b.MapIndex(k), path+"["+k.String()+"]")
		}
	}
}

func TestCloneCoversAllFields(t *testing.T) {
	var c agent.Config
	n := 0
	fill(t, reflect.ValueOf(&c).Elem(), &n)
	got := clone(&c)
	require.Equal(t, &c, got)
	assertNoSharing(t, reflect.ValueOf(&c), reflect.ValueOf(got), "Config")

	assert.Nil(t, clone(nil))
	empty := &agent.Config{}
	assert.Equal(t, empty, clone(empty))
}

func TestDuplicateCustomID(t *testing.T) {
	s := New()
	owner := map[string]string{}
	require.NoError(t, s.addCustom("dir/a.json", &agent.Config{ID: "a"}, owner))
	err := s.addCustom("dir/also-a.json", &agent.Config{ID: "a"}, owner)
	assert.EqualError(t, err, `configs: dir/also-a.json: id: "a" is also the id of dir/a.json`)
	err = s.addCustom("dir/research-agent.json", &agent.Config{ID: "research-agent"}, owner)
	assert.EqualError(t, err, `configs: dir/research-agent.json: id: "research-agent" is the id of a shipped preset; choose another id (and file name)`)
	assert.True(t, s.Preset("research-agent"))
	assert.False(t, s.Preset("a"))
}

func TestPosition(t *testing.T) {
	data := []byte("ab\ncd\nef")
	for _, tt := range []struct {
		offset    int64
		line, col int
	}{
		{0, 1, 1}, {1, 1, 1}, {2, 1, 2}, {4, 2, 1}, {5, 2, 2}, {8, 3, 2}, {99, 3, 3},
	} {
		line, col := position(data, tt.offset)
		assert.Equal(t, [2]int{tt.line, tt.col}, [2]int{line, col}, "offset %d", tt.offset)
	}
}

func TestPresetsEmbedded(t *testing.T) {
	p, err := presets()
	require.NoError(t, err)
	assert.Len(t, p, 5)
}
