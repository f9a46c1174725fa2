package pods

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// hostileLooking are values that look like trouble in a unit file but are fine: onionpod must
// accept them and write them so that systemd reads them back as they are.
var hostileLooking = struct {
	args []string
	env  []string
	wd   string
	desc string
}{
	args: []string{`;`, `\;`, `"quoted"`, `it's`, `%n%%`, `$HOME`, `$$`, `${PATH}`, `a\`, `#not-a-comment`, "ExecStartPre=+/x", "ünï"},
	env:  []string{`SECRET=p@ss "w0rd" \ $HOME %n ` + "`id`", `EMPTY=`, `SPACES=  both ends  `, `HASH=#x;y`},
	wd:   "/www/ünï.d",
	desc: `100% "sure" #1; $x`,
}

// systemd-analyze verify (systemd's own unit parser, offline: no PID 1 needed) reads the units
// onionpod renders from hostile-looking values without a single complaint. As a control, it does
// see the directive a carriage return adds, which is why such values are refused.
func TestUnitsVerifyOffline(t *testing.T) {
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Skipf("systemd-analyze needed: %v", err)
	}
	if _, err := os.Stat(busyboxPath); err != nil {
		t.Skipf("busybox-static needed: %v", err)
	}
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	for _, d := range []string{"bin", "www/ünï.d", "data", "site"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bb, err := os.ReadFile(busyboxPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "bin/busybox"), bb, 0o755); err != nil {
		t.Fatal(err)
	}
	v := hostileLooking
	s := Spec{
		App: "blog", Root: root, Netns: "/run/netns/onionpod-blog",
		Command: append([]string{"/bin/busybox", "echo"}, v.args...), Env: v.env, WorkingDir: v.wd,
		Volumes:      []Volume{{Name: "data", Path: "/data"}},
		BindReadOnly: []Bind{{Source: dir, Target: "/site"}},
		NetUp:        append([]string{busyboxPath, "true"}, v.args...),
	}
	units, err := PodUnits(s)
	if err != nil {
		t.Fatal(err)
	}
	tor, err := HostService{Name: "tor", Description: v.desc, ExecStart: append([]string{busyboxPath, "true"}, v.args...),
		Environment: v.env, After: []string{"network.target"}}.Unit()
	if err != nil {
		t.Fatal(err)
	}
	units = append(units, tor)
	var files []string
	for _, u := range units {
		f := filepath.Join(dir, u.Name)
		if err := os.WriteFile(f, u.Content, 0o644); err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	if out, err := verify(t, files...); err != nil || out != "" {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}

	// The control: a carriage return ends the line for systemd, and the injected command is seen.
	injected := strings.Replace(string(units[1].Content), "WorkingDirectory="+v.wd, "WorkingDirectory=/\rExecStartPre=+/onionpod-injected", 1)
	f := filepath.Join(dir, "onionpod-injected.service")
	if err := os.WriteFile(f, []byte(injected), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, _ := verify(t, f); !strings.Contains(out, "/onionpod-injected") {
		t.Errorf("systemd-analyze did not see the injected directive:\n%s", out)
	}
}

func verify(t *testing.T, files ...string) (string, error) {
	t.Helper()
	cmd := exec.Command("systemd-analyze", append([]string{"verify", "--man=no", "--generators=no"}, files...)...)
	cmd.Env = append(os.Environ(), "SYSTEMD_LOG_COLOR=0")
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}
