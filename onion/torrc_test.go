package onion

import (
	"errors"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/onionpod/onionpod/onion/oniontest"
)

var update = flag.Bool("update", false, "rewrite golden files")

func TestManagedTorrcGolden(t *testing.T) {
	got, err := ManagedTorrc(TorrcOptions{
		DataDir:       "/var/lib/onionpod/tor",
		ControlSocket: "/run/onionpod/tor/control.sock",
		SocksPort:     9050,
		Extra:         []string{"TestingTorNetwork 1", "DirAuthority auth0 orport=5000 no-v2 v3ident=AAAA 127.0.0.1:5001 BBBB"},
	})
	if err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "managed.torrc")
	if *update {
		os.WriteFile(golden, got, 0o644)
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Fatalf("ManagedTorrc changed (go test -update to accept):\n%s", got)
	}
}

func TestManagedTorrcRefusesInjection(t *testing.T) {
	for _, o := range []TorrcOptions{
		{DataDir: "/d\nSocksPort 0.0.0.0:9050", ControlSocket: "/c.sock"},
		{DataDir: "/d", ControlSocket: "/c.sock", Extra: []string{"Log notice stdout\nSocksPort 0.0.0.0:1"}},
		{DataDir: "relative", ControlSocket: "/c.sock"},
	} {
		if _, err := ManagedTorrc(o); !errors.Is(err, ErrBadInput) {
			t.Errorf("%+v: %v, want ErrBadInput", o, err)
		}
	}
}

// TestManagedTorrcRunsAndManages starts tor exactly as the managed unit would (TorCommand's
// argv on ManagedTorrc's file, made offline by an extra line) and has a Manager add a
// service over ManagedControl's settings.
func TestManagedTorrcRunsAndManages(t *testing.T) {
	if r := oniontest.SkipReason(); r != "" {
		t.Skip(r)
	}
	dir := oniontest.TempDir(t)
	o := TorrcOptions{
		DataDir:       filepath.Join(dir, "data"),
		ControlSocket: filepath.Join(dir, "run", "control.sock"),
		SocksPort:     0,
		Extra:         []string{"DisableNetwork 1"},
	}
	if err := PrepareManagedDirs(o); err != nil {
		t.Fatal(err)
	}
	torrc, err := ManagedTorrc(o)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "torrc")
	os.WriteFile(path, torrc, 0o600)
	argv := TorCommand(path)
	if !filepath.IsAbs(argv[0]) {
		t.Fatalf("TorCommand argv[0] = %q, want an absolute path for ExecStart", argv[0])
	}
	out, err := exec.Command(argv[0], append(argv[1:], "--verify-config")...).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Configuration was valid") {
		t.Fatalf("tor --verify-config: %v\n%s", err, out)
	}
	tor, err := oniontest.Start(setCtx(t), oniontest.Options{Dir: dir, Torrc: torrc, ControlSocket: o.ControlSocket})
	if err != nil {
		t.Fatal(err)
	}
	defer tor.Close()
	cfg := ManagedControl(o)
	m := NewManager(cfg)
	ctx := setCtx(t)
	go m.Run(ctx)
	svcs := genServices(t, 1)
	if err := m.Set(ctx, svcs); err != nil {
		t.Fatal(err)
	}
	if got := detached(t, tor); len(got) != 1 || got[0] != svcs[0].Key.ServiceID() {
		t.Fatalf("detached %v", got)
	}
}

func TestParseControlEndpoint(t *testing.T) {
	for in, want := range map[string][2]string{
		"unix:/run/tor/control": {"unix", "/run/tor/control"},
		"tcp:127.0.0.1:9051":    {"tcp", "127.0.0.1:9051"},
		"tcp:[::1]:9051":        {"tcp", "[::1]:9051"},
	} {
		n, a, err := ParseControlEndpoint(in)
		if err != nil || n != want[0] || a != want[1] {
			t.Errorf("ParseControlEndpoint(%q) = %q %q %v", in, n, a, err)
		}
	}
	for _, in := range []string{"", "unix:relative", "tcp:9051", "udp:1.2.3.4:5", "/run/tor/control"} {
		if _, _, err := ParseControlEndpoint(in); !errors.Is(err, ErrBadInput) {
			t.Errorf("ParseControlEndpoint(%q): %v", in, err)
		}
	}
}

// TestManagedTorrcRefusesUnsafeExtra: extra lines are appended after onionpod's own, and tor
// takes the last value of an option, expands abbreviations ("ControlP" is ControlPort),
// reads "/Key" as "reset Key" and "%include" as another file, and joins a line ending in a
// backslash with the next one. None of that may undo DisableNetwork 1, move the control port
// or the data directory out of the sandbox, or switch user.
func TestManagedTorrcRefusesUnsafeExtra(t *testing.T) {
	base := TorrcOptions{DataDir: "/var/lib/onionpod/tor/data", ControlSocket: "/run/onionpod/tor/control.sock"}
	for _, line := range []string{
		"DisableNetwork 0",
		"disablenetwork 0",
		"DisableNetwork  0 # off",
		`DisableNetwork "0"`,
		"/DisableNetwork",
		"+DisableNetwork 0",
		"DisableNet 0",
		"ControlPort 9051",
		"ControlP unix:/tmp/x",
		"ControlSocket /tmp/ctl",
		"__ControlPort 9051",
		"HashedControlPassword 16:ABCD",
		"CookieAuthFile /tmp/cookie",
		"CookieAuthFileGroupReadable 1",
		"DataDirectory /tmp/x",
		"DataDir /tmp/x",
		"CacheDirectory /tmp/x",
		"KeyDirectory /tmp/x",
		"User root",
		"Us root",
		"RunAsDaemon 1",
		"PidFile /etc/x",
		"SocksPort 0.0.0.0:9050",
		"ORPort 443",
		"ControlPortWriteToFile /etc/x",
		"%include /etc/tor/torrc.d/*",
		"Log notice stdout \\",
		"Nickname\tx",
		"ConnectionPadding 1\rDisableNetwork 0",
		"ConnectionPadding 1\u2028DisableNetwork 0",
		"ConnectionPadding \x85",
		"\xff",
	} {
		o := base
		o.Extra = []string{"DisableNetwork 1", line}
		if _, err := ManagedTorrc(o); !errors.Is(err, ErrBadInput) {
			t.Errorf("extra line %q: %v, want ErrBadInput", line, err)
		} else if strings.Contains(err.Error(), line) && len(line) > 3 {
			t.Errorf("extra line %q: the error repeats it: %v", line, err)
		}
	}
	for _, line := range []string{
		"DisableNetwork 1",
		"disablenetwork 1",
		"ConnectionPadding 1",
		"TestingTorNetwork 1",
		"DirAuthority auth0 orport=5000 no-v2 v3ident=AAAA 127.0.0.1:5001 BBBB",
		"UseDefaultFallbackDirs 0",
		"Log info stdout",
		"# a comment",
		"",
		"HiddenServiceStatistics 0",
		"Sandbox 1",
	} {
		o := base
		o.Extra = []string{line}
		if _, err := ManagedTorrc(o); err != nil {
			t.Errorf("extra line %q refused: %v", line, err)
		}
	}
	for _, o := range []TorrcOptions{
		{DataDir: "/var/lib/a b", ControlSocket: "/run/c.sock"},
		{DataDir: "/var/lib/../x", ControlSocket: "/run/c.sock"},
		{DataDir: "/var/lib/x", ControlSocket: "/run/c\u2028.sock"},
	} {
		if _, err := ManagedTorrc(o); !errors.Is(err, ErrBadInput) {
			t.Errorf("%+v: %v, want ErrBadInput", o, err)
		}
	}
}

// TestExtraLinesTorReads: the refused abbreviations and prefixes are real: tor itself reads
// them as the options they would override (so the refusals above are not about spelling).
func TestExtraLinesTorReads(t *testing.T) {
	if _, err := exec.LookPath("tor"); err != nil {
		t.Skip("tor is not installed")
	}
	dir := t.TempDir()
	for line, want := range map[string]string{
		"DisableNet 1":         "DisableNetwork", // 1: even a config check never sees the network on
		"ControlP unix:/tmp/x": "ControlPort",
	} {
		torrc := filepath.Join(dir, "torrc")
		os.WriteFile(torrc, []byte("DisableNetwork 1\nSocksPort 0\nDataDirectory "+filepath.Join(dir, "data")+"\n"+line+"\n"), 0o600)
		// --verify-config parses and checks without starting anything.
		out, _ := exec.Command("tor", "--defaults-torrc", "/dev/null", "-f", torrc, "--verify-config").CombinedOutput()
		if !strings.Contains(string(out), "Please use '"+want+"'") {
			t.Errorf("tor did not read %q as %s:\n%s", line, want, out)
		}
	}
}
