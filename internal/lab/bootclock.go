package lab

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// SinceBoot is how long ago the box's systemd started (both clocks are the host's monotonic
// clock: /proc/uptime and systemd's UserspaceTimestampMonotonic).
func (l *Lab) SinceBoot(ctx context.Context) (time.Duration, error) {
	f, err := l.boxClock(ctx, "cut -d' ' -f1 /proc/uptime; systemctl show -P UserspaceTimestampMonotonic")
	if err != nil {
		return 0, err
	}
	up, err1 := strconv.ParseFloat(f[0], 64)
	booted, err2 := strconv.ParseInt(f[1], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("lab: box clock: %q", f)
	}
	return time.Duration(up*float64(time.Second)) - time.Duration(booted)*time.Microsecond, nil
}

// ActiveAfterBoot is how long after the box's systemd started the unit became active (the
// daemon's onionpod.service is Type=notify: active once it answers).
func (l *Lab) ActiveAfterBoot(ctx context.Context, unit string) (time.Duration, error) {
	f, err := l.boxClock(ctx, "systemctl show -P UserspaceTimestampMonotonic; systemctl show -P ActiveEnterTimestampMonotonic "+unit)
	if err != nil {
		return 0, err
	}
	booted, err1 := strconv.ParseInt(f[0], 10, 64)
	active, err2 := strconv.ParseInt(f[1], 10, 64)
	if err1 != nil || err2 != nil || active < booted {
		return 0, fmt.Errorf("lab: box clock: %s not active since the boot: %q", unit, f)
	}
	return time.Duration(active-booted) * time.Microsecond, nil
}

// boxClock runs script in the box and returns its two words.
func (l *Lab) boxClock(ctx context.Context, script string) ([]string, error) {
	out, err := l.Command(ctx, InBox, "sh", "-c", script).Output()
	f := strings.Fields(string(out))
	if err != nil || len(f) != 2 {
		return nil, fmt.Errorf("lab: box clock: %q: %v", out, err)
	}
	return f, nil
}
