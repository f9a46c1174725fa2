package podstest_test

import (
	"bufio"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/godbus/dbus/v5"
)

func dbusVariant(v any) dbus.Variant { return dbus.MakeVariant(v) }

func itoa(i int) string { return strconv.Itoa(i) }

// cgroupDir is where podstest puts a box's cgroup.
func cgroupDir(t *testing.T, name string) string {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	mounts := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		for i, x := range fields {
			if x == "-" && i+1 < len(fields) && fields[i+1] == "cgroup2" {
				mounts[fields[4]] = true
			}
		}
	}
	for _, m := range []string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified"} {
		if mounts[m] {
			return filepath.Join(m, "podstest-"+name)
		}
	}
	t.Fatal("no cgroup2 mount")
	return ""
}
