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
