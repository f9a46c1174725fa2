package daemon

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/onionpod/onionpod/configs"
	"github.com/onionpod/onionpod/onion"
	"github.com/onionpod/onionpod/onion/oniontest"
	"github.com/onionpod/onionpod/pods"
	"github.com/onionpod/onionpod/pods/podstest"
)

// TestManagedTorSandboxed boots a real systemd and, inside it, has the daemon's
// ensureManagedTor start the managed tor (offline: DisableNetwork 1). The tor must run as the
// tor package's user with no capability, under seccomp, with no way to write outside its data
// directory nor to see the key store; the daemon-side Manager still connects (cookie auth) and
// adds a service.
func TestManagedTorSandboxed(t *testing.T) {
	if podstest.Inside() {
		t.Skip("runs on the host")
	}
	if err := podstest.Available(); err != nil {
		t.Skip(err)
	}
	if r := oniontest.SkipReason(); r != "" {
		t.Skip(r)
	}
	if _, err := user.Lookup("debian-tor"); err != nil {
		t.Skip("the tor package's user debian-tor is missing (apt-get install tor)")
	}
	box := podstest.New(t, podstest.Options{})
	box.RunTestInside(t, "TestInsideManagedTor")
}

func TestInsideManagedTor(t *testing.T) {
	if !podstest.Inside() {
		t.Skip("runs inside a podstest box")
	}
	ctx := t.Context()
	// The state dir as in production: 0700 root, under /var/lib (the box's own /var).
	state, err := os.MkdirTemp("/var/lib", "onionpod-tortest-")
	if err != nil {
		t.Fatal(err)
	}
	run, err := os.MkdirTemp("/run", "onionpod-tortest-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(run, 0o755)
	t.Cleanup(func() { os.RemoveAll(state); os.RemoveAll(run) })
	torBin, err := exec.LookPath("tor")
	if err != nil {
		t.Fatal(err)
	}
	cfg := configs.Default()
	cfg.StateDir = state
	cfg.Tor.Mode = "managed"
	cfg.Tor.Control = "unix:" + filepath.Join(run, "tor", "control.sock")
	cfg.Tor.Binary = torBin
	cfg.Tor.SocksPort = 0
	cfg.Tor.TorrcExtra = []string{"DisableNetwork 1"} // never the public network
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	keys := &onion.KeyStore{Dir: cfg.KeysDir()}
	key, _, err := keys.Ensure("blog")
	if err != nil {
		t.Fatal(err)
	}

	sd, err := pods.Connect(ctx, UnitDir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sd.Close() })
	p := &parts{systemd: sd}
	unitName := pods.HostService{Name: "tor"}.UnitName()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := sd.RemoveUnits(ctx, unitName); err != nil {
			t.Errorf("remove %s: %v", unitName, err)
		}
	})
	journal := func() string {
		out, _ := exec.Command("journalctl", "--no-pager", "-n", "40", "-u", unitName).CombinedOutput()
		return string(out)
	}
	if err := p.ensureManagedTor(ctx, cfg); err != nil {
		t.Fatalf("ensureManagedTor: %v\n%s", err, journal())
	}
	sock := strings.TrimPrefix(cfg.Tor.Control, "unix:")
	var pid int
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := sd.UnitStatus(ctx, unitName)
		_, serr := os.Stat(sock)
		if err == nil && st.ActiveState == "active" && st.MainPID > 0 && serr == nil {
			pid = st.MainPID
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not running with its control socket: %+v %v %v\n%s", unitName, st, err, serr, journal())
		}
		time.Sleep(50 * time.Millisecond)
	}

	// Who tor runs as, and with what privileges.
	torUser, err := user.Lookup("debian-tor")
	if err != nil {
		t.Fatal(err)
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	fields := map[string][]string{}
	for _, line := range strings.Split(string(status), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if ok {
			fields[k] = strings.Fields(v)
		}
	}
	t.Logf("tor (pid %d): Uid %v Gid %v CapEff %v CapBnd %v NoNewPrivs %v Seccomp %v", pid,
		fields["Uid"], fields["Gid"], fields["CapEff"], fields["CapBnd"], fields["NoNewPrivs"], fields["Seccomp"])
	for _, id := range fields["Uid"] {
		if id != torUser.Uid {
			t.Errorf("tor runs with uid %v, want %s (debian-tor) for real, effective, saved and fs", fields["Uid"], torUser.Uid)
			break
		}
	}
	for _, id := range fields["Gid"] {
		if id != torUser.Gid {
			t.Errorf("tor runs with gid %v, want %s", fields["Gid"], torUser.Gid)
			break
		}
	}
	for _, capSet := range []string{"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"} {
		if v := fields[capSet]; len(v) != 1 || strings.Trim(v[0], "0") != "" {
			t.Errorf("%s = %v, want empty", capSet, v)
		}
	}
	if v := fields["NoNewPrivs"]; len(v) != 1 || v[0] != "1" {
		t.Errorf("NoNewPrivs = %v, want 1", v)
	}
	if v := fields["Seccomp"]; len(v) != 1 || v[0] != "2" {
		t.Errorf("Seccomp = %v, want 2 (filter)", v)
	}

	// The daemon (root) connects with the cookie and adds a service.
	control, err := torControl(cfg)
	if err != nil {
		t.Fatal(err)
	}
	m := onion.NewManager(control)
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { m.Run(runCtx); close(done) }()
	t.Cleanup(func() { stop(); <-done })
	setCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	svc := onion.Service{App: "blog", Key: key, Ports: []onion.Port{{Virtual: 80, Target: "127.0.0.1:8080"}}}
	if err := m.Set(setCtx, []onion.Service{svc}); err != nil {
		t.Fatalf("Manager.Set: %v\n%s", err, journal())
	}
	if st := m.Status()["blog"]; !st.Added {
		t.Fatalf("blog not added: %+v", st)
	}

	// In tor's mount namespace, as tor's user, then as root: only the data dir is writable, and
	// the key store is not there at all.
	inTor := func(asTor bool, script string) (string, error) {
		args := []string{"-t", strconv.Itoa(pid), "-m"}
		if asTor {
			args = append(args, "-S", torUser.Uid, "-G", torUser.Gid)
		}
		out, err := exec.Command("nsenter", append(args, "--", "/bin/sh", "-c", script)...).CombinedOutput()
		return string(out), err
	}
	dataDir := filepath.Join(cfg.TorDir(), "data")
	// Every writable mount of tor's view: its data dir and socket dir, and the private /tmp,
	// /var/tmp, /dev and /proc systemd makes for it (mounts under /tmp of the host, shadowed by
	// the private /tmp, are listed too).
	mounts, err := inTor(false, "cat /proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(mounts), "\n") {
		f := strings.Fields(line)
		if len(f) < 6 || !strings.HasPrefix(f[5], "rw") {
			continue
		}
		switch mp := f[4]; {
		case mp == dataDir, mp == filepath.Dir(sock), mp == "/proc", mp == "/tmp", mp == "/var/tmp",
			strings.HasPrefix(mp, "/dev/"), strings.HasPrefix(mp, "/tmp/"):
		default:
			t.Errorf("writable mount in tor's sandbox: %s", line)
		}
	}
	if out, err := inTor(true, "touch "+filepath.Join(dataDir, "probe")+" && rm "+filepath.Join(dataDir, "probe")); err != nil {
		t.Fatalf("tor's user cannot write its own data dir (the probe is broken): %v %s", err, out)
	}
	if out, err := inTor(true, "test -r "+filepath.Join(cfg.TorDir(), "torrc")); err != nil {
		t.Errorf("tor cannot read its torrc: %v %s", err, out)
	}
	for _, asTor := range []bool{true, false} {
		who := map[bool]string{true: "tor's user", false: "root"}[asTor]
		for _, target := range []string{
			"/etc/onionpod-probe", "/usr/onionpod-probe", "/var/lib/onionpod-probe",
			filepath.Join(state, "probe"), filepath.Join(cfg.TorDir(), "probe"), filepath.Join(run, "probe"), "/run/lock/onionpod-probe",
		} {
			if out, err := inTor(asTor, "touch "+target); err == nil {
				t.Errorf("%s in tor's sandbox wrote %s", who, target)
				os.Remove(target)
			} else {
				t.Logf("%s: touch %s: %s", who, target, strings.TrimSpace(out))
			}
		}
		if _, err := inTor(asTor, "test -e "+cfg.KeysDir()); err == nil {
			t.Errorf("%s in tor's sandbox sees the key store %s", who, cfg.KeysDir())
		}
	}
	if _, err := os.Stat(filepath.Join(cfg.KeysDir(), "blog", "hostname")); err != nil {
		t.Errorf("the key store is gone outside tor's sandbox: %v", err)
	}

	// At boot /run is empty, and systemd starts the enabled tor before the daemon has made its
	// socket's directory: tor starts all the same (systemd makes the directory for tor's user).
	sockDir := filepath.Dir(sock)
	if out, err := exec.Command("systemctl", "stop", unitName).CombinedOutput(); err != nil {
		t.Fatalf("stop %s: %v\n%s", unitName, err, out)
	}
	if err := os.RemoveAll(sockDir); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("systemctl", "start", unitName).CombinedOutput(); err != nil {
		t.Fatalf("start %s without its socket's directory, as at boot: %v\n%s\n%s", unitName, err, out, journal())
	}
	deadline = time.Now().Add(30 * time.Second)
	for {
		st, err := sd.UnitStatus(ctx, unitName)
		_, serr := os.Stat(sock)
		if err == nil && st.ActiveState == "active" && serr == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not running with its control socket after a start as at boot: %+v %v %v\n%s", unitName, st, err, serr, journal())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if fi, err := os.Stat(sockDir); err != nil || fi.Mode().Perm() != 0o700 || fmt.Sprint(fi.Sys().(*syscall.Stat_t).Uid) != torUser.Uid {
		t.Errorf("the socket's directory systemd made: %v, %v; want 0700, owned by debian-tor", fi.Mode(), err)
	}
}
