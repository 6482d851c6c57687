package server

import (
	"bytes"
	"os"
	"strconv"
	"strings"

	"github.com/agcluster/caddy-agcluster/agent"
)

// clockTicks is USER_HZ, which is 100 on every Linux architecture Go
// supports for /proc accounting.
const clockTicks = 100

// readProcessStats reads RSS and CPU time of pid (0 = this process) from
// /proc. Unreadable figures are left zero.
func readProcessStats(pid int) agent.ProcessStats {
	dir := "/proc/self"
	if pid > 0 {
		dir = "/proc/" + strconv.Itoa(pid)
	} else {
		pid = os.Getpid()
	}
	st := agent.ProcessStats{PID: pid}
	if b, err := os.ReadFile(dir + "/stat"); err == nil {
		// Fields after the command name, which is in parentheses and may
		// hold spaces: state is field 3, utime 14, stime 15.
		if i := bytes.LastIndexByte(b, ')'); i >= 0 {
			f := strings.Fields(string(b[i+1:]))
			if len(f) > 12 {
				ut, _ := strconv.ParseInt(f[11], 10, 64)
				stt, _ := strconv.ParseInt(f[12], 10, 64)
				st.CPUSeconds = float64(ut+stt) / clockTicks
			}
		}
	}
	if b, err := os.ReadFile(dir + "/status"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
				f := strings.Fields(v)
				if len(f) > 0 {
					kb, _ := strconv.ParseInt(f[0], 10, 64)
					st.RSSBytes = kb * 1024
				}
				break
			}
		}
	}
	return st
}

// readCgroupStats reads the container's cgroup figures (v2, or v1 where
// the engine still uses it), or nil when they cannot be read.
func readCgroupStats() *agent.CgroupStats {
	if cg := readCgroupV2("/sys/fs/cgroup/"); cg != nil {
		return cg
	}
	return readCgroupV1("/sys/fs/cgroup/")
}

func readCgroupV2(root string) *agent.CgroupStats {
	cur, ok := readCgroupInt(root + "memory.current")
	if !ok {
		return nil
	}
	cg := &agent.CgroupStats{MemoryBytes: cur}
	cg.MemoryLimitBytes, _ = readCgroupInt(root + "memory.max")
	cg.Pids, _ = readCgroupInt(root + "pids.current")
	cg.PidsLimit, _ = readCgroupInt(root + "pids.max")
	if b, err := os.ReadFile(root + "cpu.stat"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "usage_usec "); ok {
				us, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
				cg.CPUSeconds = float64(us) / 1e6
			}
		}
	}
	return cg
}

// unlimitedV1 is above any real limit: cgroup v1 reports "no limit" as a
// page-aligned huge number.
const unlimitedV1 = 1 << 62

func readCgroupV1(root string) *agent.CgroupStats {
	cur, ok := readCgroupInt(root + "memory/memory.usage_in_bytes")
	if !ok {
		return nil
	}
	cg := &agent.CgroupStats{MemoryBytes: cur}
	if limit, ok := readCgroupInt(root + "memory/memory.limit_in_bytes"); ok && limit < unlimitedV1 {
		cg.MemoryLimitBytes = limit
	}
	cg.Pids, _ = readCgroupInt(root + "pids/pids.current")
	cg.PidsLimit, _ = readCgroupInt(root + "pids/pids.max")
	if ns, ok := readCgroupInt(root + "cpuacct/cpuacct.usage"); ok {
		cg.CPUSeconds = float64(ns) / 1e9
	}
	return cg
}

// readCgroupInt reads a one-number cgroup file; "max" reads as 0.
func readCgroupInt(path string) (int64, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	s := strings.TrimSpace(string(b))
	if s == "max" {
		return 0, true
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil
}
