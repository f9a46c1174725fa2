package box

import (
	"fmt"
	"path/filepath"
	"strings"
)

// initScript is PID 1's first program: it builds the box's mounts in its fresh namespaces, then
// execs systemd. It runs in a new mount namespace whose mounts start as copies of the host's.
func initScript(opts Options, bootID string) string {
	state := opts.StateDir
	unitPath := []string{"/etc/systemd/system", "/run/systemd/transient", filepath.Join(state, "units")}
	unitPath = append(unitPath, opts.ExtraUnitDirs...)

	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	w("#!/bin/sh")
	w("# podstest init for box %s (generated)", opts.Name)
	w("set -eu")
	w("STATE=%s", shq(state))
	w("mount --make-rprivate /")
	// Our own /proc for the new pid namespace (a lazy unmount also detaches what was mounted below).
	w("umount -l /proc")
	w("mount -t proc -o nosuid,nodev,noexec proc /proc")
	// Build the new /dev before dropping the host's, so device nodes can be bind-mounted from it
	// where mknod is not allowed.
	w("NEWDEV=$STATE/dev.tmp")
	w("mkdir -p \"$NEWDEV\"")
	w("mount -t tmpfs -o mode=0755,nosuid,size=4m tmpfs \"$NEWDEV\"")
	w("for n in null:1:3 zero:1:5 full:1:7 random:1:8 urandom:1:9 tty:5:0; do")
	w("  name=${n%%%%:*}; rest=${n#*:}; major=${rest%%:*}; minor=${rest#*:}")
	w("  mknod -m 666 \"$NEWDEV/$name\" c \"$major\" \"$minor\" 2>/dev/null || { touch \"$NEWDEV/$name\"; mount --bind \"/dev/$name\" \"$NEWDEV/$name\"; }")
	w("done")
	w("mkdir -p \"$NEWDEV/pts\" \"$NEWDEV/shm\" \"$NEWDEV/mqueue\"")
	w("ln -s /proc/self/fd \"$NEWDEV/fd\"; ln -s /proc/self/fd/0 \"$NEWDEV/stdin\"; ln -s /proc/self/fd/1 \"$NEWDEV/stdout\"; ln -s /proc/self/fd/2 \"$NEWDEV/stderr\"")
	w("ln -s pts/ptmx \"$NEWDEV/ptmx\"")
	// Drop the host's /run (with its /run/netns/* mounts), /sys and /dev, deepest first.
	w("for top in /run /sys /dev; do")
	w("  awk -v top=\"$top\" '$5 == top || index($5, top \"/\") == 1 {print $5}' /proc/self/mountinfo | sort -r | while read -r m; do umount -l \"$m\" 2>/dev/null || true; done")
	w("done")
	w("mount --move \"$NEWDEV\" /dev")
	w("rmdir \"$NEWDEV\" 2>/dev/null || true")
	w("mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,gid=5,nosuid,noexec devpts /dev/pts")
	w("mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /dev/shm")
	w("mount -t mqueue -o nosuid,nodev,noexec mqueue /dev/mqueue || true")
	w("mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run")
	w("mount -t sysfs -o ro,nosuid,nodev,noexec sysfs /sys")
	w("mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 /sys/fs/cgroup")
	w("mkdir -p /run/.podstest/empty /run/systemd/journald.conf.d /run/systemd/system.conf.d")
	w("printf '[Journal]\\nStorage=volatile\\nRuntimeMaxUse=16M\\n' > /run/systemd/journald.conf.d/podstest.conf")
	w("printf '[Manager]\\nDefaultTimeoutStopSec=10s\\n' > /run/systemd/system.conf.d/podstest.conf")
	// The box's boot id, so its /tmp/systemd-private-BOOTID-* directories are recognisable.
	w("echo %s > /run/.podstest/boot_id", shq(bootID))
	w("mount --bind /run/.podstest/boot_id /proc/sys/kernel/random/boot_id")
	w("echo %s > /proc/sys/kernel/hostname", shq(opts.Name))
	// /proc/sys read-only except the box's own /proc/sys/net.
	w("mount --bind /proc/sys/net /proc/sys/net")
	w("mount --rbind /proc/sys /proc/sys")
	w("mount -o remount,bind,ro /proc/sys")
	w("mount --bind /usr /usr")
	w("mount -o remount,bind,ro /usr")
	for _, d := range []string{"etc", "var"} {
		w("mount -t overlay overlay -o \"lowerdir=/%s,upperdir=$STATE/%s/upper,workdir=$STATE/%s/work\" /%s", d, d, d, d)
	}
	for _, m := range opts.BindMounts {
		w("if [ -d %s ]; then mkdir -p %s; else mkdir -p \"$(dirname %s)\"; [ -e %s ] || touch %s; fi",
			shq(m.Source), shq(m.Target), shq(m.Target), shq(m.Target), shq(m.Target))
		w("mount --bind %s %s", shq(m.Source), shq(m.Target))
		if m.ReadOnly {
			w("mount -o remount,bind,ro %s", shq(m.Target))
		}
	}
	// A real PID 1 may open as many files as the kernel allows, and systemd gives journald
	// LimitNOFILE=524288 from it. Under a lower hard limit (a host's, which a container may not
	// raise), systemd left journald at 1024, and journald stopped taking log streams at about
	// 1000 pods: the logs of later pods and of a restarted daemon went nowhere. Raise it where
	// allowed, and give journald whatever hard limit there is.
	w("ulimit -Hn \"$(cat /proc/sys/fs/nr_open)\" 2>/dev/null || true")
	w("mkdir -p \"$STATE/units/systemd-journald.service.d\"")
	w("printf '[Service]\\nLimitNOFILE=%%s\\n' \"$(ulimit -Hn)\" > \"$STATE/units/systemd-journald.service.d/podstest.conf\"")
	w("exec env -i container=podstest SYSTEMD_UNIT_PATH=%s SYSTEMD_GENERATOR_PATH=/run/.podstest/empty "+
		"SYSTEMD_ENVIRONMENT_GENERATOR_PATH=/run/.podstest/empty %s --unit=multi-user.target --show-status=no",
		shq(strings.Join(unitPath, ":")), SystemdPath)
	return b.String()
}

// shq quotes s for a POSIX shell.
func shq(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
