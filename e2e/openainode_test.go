package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agcluster/caddy-agcluster/internal/anthropictest"
	"github.com/agcluster/caddy-agcluster/internal/testenv"
)

// openAINodeDir is the harness's source in the checkout.
var openAINodeDir = filepath.Join(testenv.RepoRoot(), "e2e", "testdata", "openai-node")

// nodeHarness is the openai-node harness ready to run: node, and the
// installed openai package.
type nodeHarness struct {
	node    string // the node binary
	modules string // node_modules holding the pinned openai package
}

// openAINode finds node and the harness's packages, which
// scripts/ensure-openai-node.sh installs into
// $AGCLUSTER_CACHE/openai-node-<version> (or $OPENAI_NODE_DIR). A missing
// one fails the test with what provides it.
func openAINode(t *testing.T) nodeHarness {
	t.Helper()
	testenv.Integration(t)
	const fix = "run scripts/ensure-openai-node.sh (it installs e2e/testdata/openai-node with npm ci) or set OPENAI_NODE_DIR"
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is not available (%v); install Node.js 18 or later (Debian: apt-get install nodejs npm), then %s", err, fix)
	}
	version := packageVersion(t, filepath.Join(openAINodeDir, "package.json"), "dependencies", "openai")
	dir := os.Getenv("OPENAI_NODE_DIR")
	if dir == "" {
		cache := os.Getenv("AGCLUSTER_CACHE")
		if cache == "" {
			home, _ := os.UserHomeDir()
			cache = filepath.Join(home, ".cache", "agcluster")
		}
		dir = filepath.Join(cache, "openai-node-"+version)
	}
	modules := filepath.Join(dir, "node_modules")
	installed := filepath.Join(modules, "openai", "package.json")
	if _, err := os.Stat(installed); err != nil {
		t.Fatalf("the openai-node harness (openai %s) is not available (%v); %s", version, err, fix)
	}
	if got := packageVersion(t, installed, "version"); got != version {
		t.Fatalf("%s holds openai %s, the harness pins %s; %s", dir, got, version, fix)
	}
	return nodeHarness{node: node, modules: modules}
}

// packageVersion reads a string at the key path of a package.json.
func packageVersion(t *testing.T, path string, keys ...string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	var v any
	require.NoError(t, json.Unmarshal(b, &v), path)
	for _, k := range keys {
		m, ok := v.(map[string]any)
		require.True(t, ok, "%s: no %v", path, keys)
		v = m[k]
	}
	s, ok := v.(string)
	require.True(t, ok, "%s: no %v", path, keys)
	return s
}

// run runs one scenario of harness.mjs against the gateway and decodes its
// summary. The script runs from a temporary copy beside a link to the
// installed node_modules, so the checkout's version of it is what runs.
func (h nodeHarness) run(t *testing.T, g *gateway, key, scenario, conversation string) toolRoundTrip {
	t.Helper()
	var rt toolRoundTrip
	h.runAt(t, g.url+"/v1", key, scenario, conversation, &rt)
	return rt
}

// runAt runs one scenario of harness.mjs against the API at baseURL and
// decodes its summary into out.
func (h nodeHarness) runAt(t *testing.T, baseURL, key, scenario, conversation string, out any) {
	t.Helper()
	dir := t.TempDir()
	script, err := os.ReadFile(filepath.Join(openAINodeDir, "harness.mjs"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "harness.mjs"), script, 0o644))
	require.NoError(t, os.Symlink(h.modules, filepath.Join(dir, "node_modules")))

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, h.node, "harness.mjs", baseURL, key, scenario, conversation)
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	require.NoError(t, cmd.Run(), "node harness.mjs %s:\n%s", scenario, stderr.String())
	require.NoError(t, json.Unmarshal(stdout.Bytes(), out), "summary: %s\nstderr: %s", stdout.String(), stderr.String())
	t.Logf("openai-node %s: %s", scenario, bytes.TrimSpace(stdout.Bytes()))
}

// TestClientToolsOpenAINode: the function tool round trip with the official
// openai npm package (its streaming accumulator and its non-streamed
// client), and tool_choice "none".
func TestClientToolsOpenAINode(t *testing.T) {
	h := openAINode(t)
	e := setup(t)
	g := e.startGateway(t, "30m", "")
	const key = "sk-ant-test-openai-node"

	for _, tc := range []struct {
		scenario string
		stream   bool
	}{{"roundtrip-stream", true}, {"roundtrip", false}} {
		t.Run(tc.scenario, func(t *testing.T) {
			e.script(t, weatherScript())
			rt := h.run(t, g, key, tc.scenario, "c-node-"+tc.scenario)
			assert.Equal(t, weatherPrompt, rt.Prompt, "the harness and the script agree on the prompt")
			assertToolRoundTrip(t, e, rt, tc.stream)
		})
	}

	t.Run("tool-choice-none", func(t *testing.T) {
		const text = "Without tools: probably sunny."
		e.script(t, anthropictest.Script{Default: &anthropictest.Response{Text: text}})
		rt := h.run(t, g, key, "tool-choice-none", "c-node-tool-choice-none")
		assertNoClientTools(t, e, rt.First, text)
	})
}
