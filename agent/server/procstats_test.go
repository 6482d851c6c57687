package server

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agcluster/caddy-agcluster/agent"
)

func writeFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for name, content := range files {
		p := filepath.Join(root, name)
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, []byte(content), 0o644))
	}
	return root + "/"
}

func TestReadCgroup(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		read  func(string) *agent.CgroupStats
		want  *agent.CgroupStats
	}{{
		name: "v2 limited",
		files: map[string]string{"memory.current": "1048576\n", "memory.max": "1073741824\n",
			"pids.current": "7\n", "pids.max": "256\n", "cpu.stat": "usage_usec 2500000\nuser_usec 1\n"},
		read: readCgroupV2,
		want: &agent.CgroupStats{MemoryBytes: 1 << 20, MemoryLimitBytes: 1 << 30, Pids: 7, PidsLimit: 256, CPUSeconds: 2.5},
	}, {
		name:  "v2 unlimited",
		files: map[string]string{"memory.current": "5\n", "memory.max": "max\n", "pids.current": "1\n", "pids.max": "max\n"},
		read:  readCgroupV2,
		want:  &agent.CgroupStats{MemoryBytes: 5, Pids: 1},
	}, {
		name: "v1 limited",
		files: map[string]string{"memory/memory.usage_in_bytes": "2048\n", "memory/memory.limit_in_bytes": "1073741824\n",
			"pids/pids.current": "3\n", "pids/pids.max": "256\n", "cpuacct/cpuacct.usage": "1500000000\n"},
		read: readCgroupV1,
		want: &agent.CgroupStats{MemoryBytes: 2048, MemoryLimitBytes: 1 << 30, Pids: 3, PidsLimit: 256, CPUSeconds: 1.5},
	}, {
		name:  "v1 unlimited memory",
		files: map[string]string{"memory/memory.usage_in_bytes": "1\n", "memory/memory.limit_in_bytes": "9223372036854771712\n"},
		read:  readCgroupV1,
		want:  &agent.CgroupStats{MemoryBytes: 1},
	}, {
		name:  "absent",
		files: map[string]string{},
		read:  readCgroupV2,
		want:  nil,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, tt.read(writeFiles(t, tt.files)))
		})
	}
}

func TestReadProcessStatsSelf(t *testing.T) {
	st := readProcessStats(0)
	assert.Equal(t, os.Getpid(), st.PID)
	assert.Positive(t, st.RSSBytes)
}
