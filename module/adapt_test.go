package module_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
	_ "github.com/mholt/caddy-ratelimit"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	_ "github.com/agcluster/caddy-agcluster/module"
	_ "github.com/agcluster/caddy-agcluster/providers/all"
)

var update = flag.Bool("update", false, "rewrite the golden JSON files of caddyfile-examples")

// TestAdaptExamples adapts every Caddyfile in caddyfile-examples and
// compares the JSON with its golden file (<name>.json beside it). Run with
// -update after an intended change.
func TestAdaptExamples(t *testing.T) {
	files, err := filepath.Glob("../caddyfile-examples/*.Caddyfile")
	require.NoError(t, err)
	require.NotEmpty(t, files)
	adapter := caddyconfig.GetAdapter("caddyfile")
	require.NotNil(t, adapter)
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			src, err := os.ReadFile(f)
			require.NoError(t, err)
			out, warnings, err := adapter.Adapt(src, map[string]any{"filename": f})
			require.NoError(t, err)
			assert.Empty(t, warnings)
			var pretty bytes.Buffer
			require.NoError(t, json.Indent(&pretty, out, "", "\t"))
			pretty.WriteByte('\n')
			golden := strings.TrimSuffix(f, ".Caddyfile") + ".json"
			if *update {
				require.NoError(t, os.WriteFile(golden, pretty.Bytes(), 0o644))
			}
			want, err := os.ReadFile(golden)
			require.NoError(t, err, "golden file missing: run go test ./module -run TestAdaptExamples -update")
			assert.JSONEq(t, string(want), pretty.String())
		})
	}
}
