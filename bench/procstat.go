package bench

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// clockTick is USER_HZ, the unit of utime and stime in /proc/<pid>/stat:
// 100 on every Linux architecture Go runs on (the kernel's ABI, whatever
// its internal HZ).
const clockTick = 10 * time.Millisecond

// procStat is what the bench reads of a process in /proc/<pid>/stat.
type procStat struct {
	ppid                 int
	utime, stime         int64 // the process's own threads, in ticks
	cutime, cstime       int64 // its waited-for children, in ticks
	comm                 string
	startTicks           int64
	user, system, reaped time.Duration
}

// readStat reads /proc/<pid>/stat.
func readStat(pid int) (procStat, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, err
	}
	return parseStat(data)
}

// parseStat parses a /proc/<pid>/stat line: the command name is in
// parentheses and may hold spaces, so the fields are counted after the
// last ')'.
func parseStat(data []byte) (procStat, error) {
	s := string(data)
	open, closing := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || closing < open {
		return procStat{}, fmt.Errorf("bench: malformed /proc stat line")
	}
	f := strings.Fields(s[closing+1:])
	// f[0] is field 3 (state); field n is f[n-3].
	if len(f) < 20 {
		return procStat{}, fmt.Errorf("bench: short /proc stat line (%d fields)", len(f))
	}
	num := func(field int) int64 {
		v, _ := strconv.ParseInt(f[field-3], 10, 64)
		return v
	}
	st := procStat{comm: s[open+1 : closing], ppid: int(num(4)), utime: num(14), stime: num(15),
		cutime: num(16), cstime: num(17), startTicks: num(22)}
	st.user, st.system = time.Duration(st.utime)*clockTick, time.Duration(st.stime)*clockTick
	st.reaped = time.Duration(st.cutime+st.cstime) * clockTick
	return st, nil
}

// cpuTime is the CPU (user + system) of the processes pids and, with
// children, of all their descendants alive now and those they reaped
// (which is how a postmaster's exited backends stay counted).
func cpuTime(pids []int, children bool) time.Duration {
	var total time.Duration
	var all map[int]procStat
	if children {
		all = allStats()
	}
	for _, pid := range pids {
		st, err := readStat(pid)
		if err != nil {
			continue
		}
		total += st.user + st.system
		if !children {
			continue
		}
		total += st.reaped
		for _, d := range descendants(all, pid) {
			// A descendant's reaped children are its own descendants'
			// time: counted in its cutime, not listed any more.
			total += all[d].user + all[d].system + all[d].reaped
		}
	}
	return total
}

// allStats reads the stat of every process (a bounded walk of /proc).
func allStats() map[int]procStat {
	out := map[int]procStat{}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return out
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, err := readStat(pid); err == nil {
			out[pid] = st
		}
	}
	return out
}

// descendants lists the processes below pid in all.
func descendants(all map[int]procStat, pid int) []int {
	kids := map[int][]int{}
	for p, st := range all {
		kids[st.ppid] = append(kids[st.ppid], p)
	}
	var out []int
	queue := []int{pid}
	for len(queue) > 0 && len(out) < 100_000 {
		p := queue[0]
		queue = queue[1:]
		for _, k := range kids[p] {
			out = append(out, k)
			queue = append(queue, k)
		}
	}
	return out
}

// statusKiB reads a "Name:  N kB" line of /proc/<pid>/status (VmHWM is
// the peak resident set, VmRSS the current one).
func statusKiB(pid int, name string) (int64, error) {
	return kibField(fmt.Sprintf("/proc/%d/status", pid), name)
}

// pssKiB is a process's proportional set size (/proc/<pid>/smaps_rollup):
// shared pages divided among the processes sharing them, so that the PSS
// of a postmaster and its backends add up without counting shared
// buffers once per backend.
func pssKiB(pid int) (int64, error) {
	return kibField(fmt.Sprintf("/proc/%d/smaps_rollup", pid), "Pss")
}

func kibField(path, name string) (int64, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, name+":"); ok {
			f := strings.Fields(rest)
			if len(f) == 0 {
				break
			}
			return strconv.ParseInt(f[0], 10, 64)
		}
	}
	return 0, fmt.Errorf("bench: no %s in %s", name, path)
}

// treePSSKiB is the PSS of pid and all its descendants.
func treePSSKiB(pid int) int64 {
	all := allStats()
	var total int64
	for _, p := range append([]int{pid}, descendants(all, pid)...) {
		if v, err := pssKiB(p); err == nil {
			total += v
		}
	}
	return total
}

// machine describes this machine.
func machine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), Go: runtime.Version()}
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if kib, err := kibField("/proc/meminfo", "MemTotal"); err == nil {
		m.MemoryMiB = kib >> 10
	}
	if data, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(data))
	}
	m.LoadStart = loadAverage()
	m.Summary = fmt.Sprintf("%d CPUs (%s), %.1f GiB, Linux %s, %s, load average %.2f at the start",
		m.CPUs, m.CPUModel, float64(m.MemoryMiB)/1024, m.Kernel, m.Go, m.LoadStart)
	return m
}

// loadAverage is the 1-minute load average.
func loadAverage() float64 {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(data))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

// exists reports whether path exists.
func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// newestGlob returns the last match of pattern in lexical order (the
// highest version of /usr/lib/postgresql/*/bin/…), "" if none.
func newestGlob(pattern string) string {
	m, _ := filepath.Glob(pattern)
	if len(m) == 0 {
		return ""
	}
	// Versions sort numerically: 9.6 < 10 < 15.
	best, bestV := "", -1.0
	for _, p := range m {
		v, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(filepath.Dir(p))), 64)
		if v > bestV {
			best, bestV = p, v
		}
	}
	return best
}

// machineTicks reads /proc/stat's first line: the ticks every CPU of the
// machine has spent busy (all but idle and iowait) since boot.
func machineTicks() (int64, error) {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := bytes.Cut(data, []byte("\n"))
	return parseCPULine(string(line))
}

// parseCPULine parses /proc/stat's aggregate "cpu" line (user nice system
// idle iowait irq softirq steal …, in ticks) into its busy ticks. guest
// and guest_nice, when present, are already in user and nice.
func parseCPULine(line string) (int64, error) {
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" { // user … steal: every Linux since 2.6.11
		return 0, fmt.Errorf("bench: malformed /proc/stat cpu line")
	}
	var busy int64
	for i, s := range f[1:9] {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil || v < 0 {
			return 0, fmt.Errorf("bench: malformed /proc/stat cpu line")
		}
		if i != 3 && i != 4 { // idle, iowait
			busy += v
		}
	}
	return busy, nil
}
