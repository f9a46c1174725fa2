package pods

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/onionpod/onionpod/internal/errkind"
)

// Limits bound what one container may take of the box: systemd's resource control settings of
// its unit. A zero field takes the default (DefaultLimits).
type Limits struct {
	// Memory is MemoryMax=: bytes with an optional K, M, G or T suffix (powers of 1024), a
	// percentage of the box's physical memory ("25%"), or "infinity". Over it, the kernel's OOM
	// killer ends the container's processes and systemd restarts the unit.
	Memory string `json:"memory,omitempty"`
	// CPU is CPUQuota=: a percentage of one CPU ("50%", "200%" for two CPUs' worth), or
	// "infinity" for no quota.
	CPU string `json:"cpu,omitempty"`
	// CPUWeight is CPUWeight=, from 1 to 10000: the container's share of CPU time when the CPUs
	// are busy, against other units' (a system service has 100).
	CPUWeight int `json:"cpu_weight,omitempty"`
	// Tasks is TasksMax=: how many processes and threads the container may have at once
	// (-1: no limit).
	Tasks int `json:"tasks,omitempty"`
}

// DefaultLimits are what a container gets for a field that neither it nor its app sets, so that
// no app can starve the box: a quarter of the box's memory per container, half a system
// service's CPU weight when the CPUs are contended (but no quota: an idle box's CPUs are free
// for the taking), and 512 tasks (a fork bomb stops there).
var DefaultLimits = Limits{Memory: "25%", CPUWeight: 50, Tasks: 512}

var (
	memoryValue  = regexp.MustCompile(`^[0-9]{1,19}[KMGT]?$`)
	percentValue = regexp.MustCompile(`^[0-9]{1,5}%$`)
)

// Or returns l with each zero field taken from fallback.
func (l Limits) Or(fallback Limits) Limits {
	if l.Memory == "" {
		l.Memory = fallback.Memory
	}
	if l.CPU == "" {
		l.CPU = fallback.CPU
	}
	if l.CPUWeight == 0 {
		l.CPUWeight = fallback.CPUWeight
	}
	if l.Tasks == 0 {
		l.Tasks = fallback.Tasks
	}
	return l
}

// Check refuses a limit systemd would not read as meant. Errors match ErrBadInput and name the
// field ("memory", "cpu", "cpu_weight", "tasks").
func (l Limits) Check() error {
	if m := l.Memory; m != "" && m != "infinity" {
		switch {
		case percentValue.MatchString(m):
			if n, _ := strconv.Atoi(strings.TrimSuffix(m, "%")); n < 1 || n > 100 {
				return errkind.BadInputf("limits: memory %q: a percentage from 1%% to 100%%", m)
			}
		case memoryValue.MatchString(m):
			if n, err := parseBytes(m); err != nil || n < 1<<20 {
				return errkind.BadInputf("limits: memory %q: at least 1M", m)
			}
		default:
			return errkind.BadInputf("limits: memory %q: bytes with an optional K, M, G or T suffix, a percentage of the box's memory, or infinity", m)
		}
	}
	if c := l.CPU; c != "" && c != "infinity" {
		n, err := strconv.Atoi(strings.TrimSuffix(c, "%"))
		if !percentValue.MatchString(c) || err != nil || n < 1 || n > 100*1024 {
			return errkind.BadInputf("limits: cpu %q: a percentage of one CPU, such as 50%% or 200%%", c)
		}
	}
	if w := l.CPUWeight; w != 0 && (w < 1 || w > 10000) {
		return errkind.BadInputf("limits: cpu_weight %d: from 1 to 10000", w)
	}
	if t := l.Tasks; t != 0 && t != -1 && (t < 8 || t > 1<<22) {
		return errkind.BadInputf("limits: tasks %d: from 8 to %d, or -1 for no limit", t, 1<<22)
	}
	return nil
}

// parseBytes reads a memoryValue.
func parseBytes(s string) (uint64, error) {
	shift := 0
	switch s[len(s)-1] {
	case 'K':
		shift = 10
	case 'M':
		shift = 20
	case 'G':
		shift = 30
	case 'T':
		shift = 40
	}
	if shift > 0 {
		s = s[:len(s)-1]
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n > (1<<63)>>shift {
		return 0, fmt.Errorf("too large")
	}
	return n << shift, nil
}

// directives are the unit settings of l (defaults filled in), in a fixed order.
func (l Limits) directives() [][2]string {
	l = l.Or(DefaultLimits)
	var out [][2]string
	if l.Memory != "" {
		out = append(out, [2]string{"MemoryMax", l.Memory})
	}
	if l.CPU != "" && l.CPU != "infinity" { // CPUQuota= has no "infinity": no setting is no quota
		out = append(out, [2]string{"CPUQuota", l.CPU})
	}
	if l.CPUWeight != 0 {
		out = append(out, [2]string{"CPUWeight", strconv.Itoa(l.CPUWeight)})
	}
	switch {
	case l.Tasks == -1:
		out = append(out, [2]string{"TasksMax", "infinity"})
	case l.Tasks != 0:
		out = append(out, [2]string{"TasksMax", strconv.Itoa(l.Tasks)})
	}
	return out
}

// NormalizeSignal returns the name systemd and onionpod use for a stop signal given as a name
// ("SIGINT"), a name without its prefix ("INT") or a number ("2"), or "" when it is none.
func NormalizeSignal(s string) string {
	if n, err := strconv.Atoi(s); err == nil {
		if n <= 0 || n > 64 {
			return ""
		}
		return unix.SignalName(syscall.Signal(n))
	}
	if !strings.HasPrefix(s, "SIG") {
		s = "SIG" + s
	}
	if unix.SignalNum(s) == 0 {
		return ""
	}
	return s
}
