package onion

import (
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/onionpod/onionpod/onion/oniontest"
)

// startOfflineWith starts an offline tor with extra torrc lines (for HiddenServiceDir).
func startOfflineWith(t *testing.T, extra ...string) *oniontest.Tor {
	t.Helper()
	if r := oniontest.SkipReason(); r != "" {
		t.Skip(r)
	}
	dir := oniontest.TempDir(t)
	for _, d := range []string{"data", "ctl"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	sock := filepath.Join(dir, "ctl", "control.sock")
	torrc := strings.Join(append([]string{
		"DataDirectory " + filepath.Join(dir, "data"),
		"DisableNetwork 1",
		"SocksPort 0",
		"ControlPort unix:" + sock,
		"CookieAuthentication 1",
		"Log notice file " + filepath.Join(dir, "notice.log"),
	}, extra...), "\n") + "\n"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tor, err := oniontest.Start(ctx, oniontest.Options{Dir: dir, Torrc: []byte(torrc), ControlSocket: sock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tor.Close() })
	return tor
}

func torLog(t *testing.T, tor *oniontest.Tor) string {
	b, err := os.ReadFile(filepath.Join(tor.Dir(), "notice.log"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestTorWrittenHiddenServiceDirImports(t *testing.T) {
	hs := filepath.Join(t.TempDir(), "hs")
	os.MkdirAll(filepath.Join(hs, authorizedClients), 0o700)
	// A client authorized the way tor's manual says, by hand.
	priv, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub := authKeyEncoding.EncodeToString(priv.PublicKey().Bytes())
	os.WriteFile(filepath.Join(hs, authorizedClients, "laptop.auth"), []byte("descriptor:x25519:"+pub+"\n"), 0o600)
	tor := startOfflineWith(t, "HiddenServiceDir "+hs, "HiddenServicePort 80 127.0.0.1:8080")
	hostname, err := os.ReadFile(filepath.Join(hs, hostnameFile))
	if err != nil {
		t.Fatalf("tor wrote no hostname: %v", err)
	}
	want := strings.TrimSpace(string(hostname))

	secret, _ := os.ReadFile(filepath.Join(hs, secretKeyFile))
	k, err := ParseSecretKeyFile(secret)
	if err != nil || k.Address() != want {
		t.Fatalf("tor's secret key parses to %v (%v), tor says %s", k, err, want)
	}
	ks, other := newStore(t), newStore(t)
	for name, source := range map[string]string{"dir": hs, "file": filepath.Join(hs, secretKeyFile)} {
		store := ks
		if name == "file" {
			store = other
		}
		got, err := store.Import("fromtor-"+name, source, false)
		if err != nil || got.Address() != want {
			t.Fatalf("import of tor's %s: %v, %v; tor says %s", name, got, err, want)
		}
	}
	clients, err := ks.Clients("fromtor-dir")
	if err != nil || len(clients) != 1 || clients[0].Name != "laptop" || authKeyEncoding.EncodeToString(clients[0].PublicKey[:]) != pub {
		t.Fatalf("clients imported from tor's dir: %v, %v", clients, err)
	}
	if log := torLog(t, tor); strings.Contains(log, "Client authorization") {
		t.Errorf("tor rejected the hand-written .auth file:\n%s", log)
	}
}

func TestTorServesStoredAndExportedKeys(t *testing.T) {
	ks := newStore(t)
	k, _, err := ks.Ensure("blog")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ks.AddClient("blog", "alice"); err != nil {
		t.Fatal(err)
	}
	exported := filepath.Join(t.TempDir(), "export")
	if err := ks.Export("blog", exported); err != nil {
		t.Fatal(err)
	}
	// A second export from which tor must derive hostname and public key itself.
	derive := filepath.Join(t.TempDir(), "derive")
	if err := ks.Export("blog", derive); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(derive, hostnameFile))
	os.Remove(filepath.Join(derive, publicKeyFile))
	os.RemoveAll(filepath.Join(derive, authorizedClients))
	// The store's own app directory is a HiddenServiceDir too.
	tor := startOfflineWith(t,
		"HiddenServiceDir "+exported, "HiddenServicePort 80 127.0.0.1:8080",
		"HiddenServiceDir "+derive, "HiddenServicePort 80 127.0.0.1:8080",
		"HiddenServiceDir "+filepath.Join(ks.Dir, "blog"), "HiddenServicePort 81 127.0.0.1:8080",
	)
	_ = tor
	for _, dir := range []string{exported, derive, filepath.Join(ks.Dir, "blog")} {
		host, err := os.ReadFile(filepath.Join(dir, hostnameFile))
		if err != nil || string(host) != k.Address()+"\n" {
			t.Errorf("%s: tor's hostname %q (%v), want %s", dir, host, err, k.Address())
		}
	}
	// tor rewrote nothing in a way our loader rejects, and accepted alice's .auth file.
	if _, err := ks.Load("blog"); err != nil {
		t.Fatalf("store after tor used it: %v", err)
	}
	log := torLog(t, tor)
	for _, bad := range []string{"client auth", "Client authorization", "authorized_clients", "[err]"} {
		if strings.Contains(strings.ToLower(log), strings.ToLower(bad)) {
			t.Errorf("tor log mentions %q:\n%s", bad, log)
		}
	}
}

func TestTorAcceptsUnclampedVanityKey(t *testing.T) {
	tor := oniontest.NewOffline(t)
	// Same scalar + 6l: what a vanity generator may produce. tor must agree on the address.
	k := mustKey(t, 11)
	var expanded [64]byte
	copy(expanded[:], k.secret[:])
	addMultipleOfL(expanded[:32], 6)
	k2, err := keyFromExpanded(expanded[:])
	if err != nil {
		t.Fatal(err)
	}
	ctx := setCtx(t)
	c, err := tor.Control(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	svc := Service{App: "v", Key: k2, Ports: []Port{{80, "127.0.0.1:1"}}}
	resp, err := c.SendRequest("%s", svc.addOnionCommand())
	if err != nil {
		t.Fatal(err)
	}
	if want := "ServiceID=" + k.ServiceID(); resp.Data[0] != want {
		t.Fatalf("tor says %s, we say %s", resp.Data[0], want)
	}
}

func TestManagerPasswordAuthOverTCP(t *testing.T) {
	if r := oniontest.SkipReason(); r != "" {
		t.Skip(r)
	}
	out, err := exec.Command("tor", "--quiet", "--hash-password", "s3cret").Output()
	if err != nil {
		t.Fatal(err)
	}
	hashed := strings.TrimSpace(string(out))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	dir := oniontest.TempDir(t)
	os.Mkdir(filepath.Join(dir, "data"), 0o700)
	torrc := fmt.Sprintf("DataDirectory %s\nDisableNetwork 1\nSocksPort 0\nControlPort %s\nHashedControlPassword %s\n", filepath.Join(dir, "data"), addr, hashed)
	ctx := setCtx(t)
	tor, err := oniontest.Start(ctx, oniontest.Options{Dir: dir, Torrc: []byte(torrc), ControlTCP: addr, ControlPassword: "s3cret"})
	if err != nil {
		t.Fatal(err)
	}
	defer tor.Close()
	svcs := genServices(t, 2)

	wrong := NewManager(ControlConfig{Network: "tcp", Address: addr, Auth: "password", Password: "wrong"})
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go wrong.Run(runCtx)
	err = wrong.Set(ctx, svcs)
	if !errors.Is(err, ErrTorUnavailable) || !strings.Contains(err.Error(), "authenticate") {
		t.Fatalf("wrong password: %v, want ErrTorUnavailable with the authentication failure", err)
	}
	if strings.Contains(err.Error(), "wrong") || strings.Contains(wrong.Conn().LastError, "wrong") {
		t.Fatal("the password appears in the error")
	}
	cancel()

	m := NewManager(ControlConfig{Network: "tcp", Address: addr, Auth: "password", Password: "s3cret"})
	runCtx2, cancel2 := context.WithCancel(ctx)
	defer cancel2()
	go m.Run(runCtx2)
	if err := m.Set(ctx, svcs); err != nil {
		t.Fatal(err)
	}
	if got := detached(t, tor); !slices.Equal(got, ids(svcs)) {
		t.Fatalf("detached %v", got)
	}
	// Cookie auth is not offered by this tor: asking for it fails clearly.
	cookie := NewManager(ControlConfig{Network: "tcp", Address: addr, Auth: "cookie"})
	runCtx3, cancel3 := context.WithCancel(ctx)
	defer cancel3()
	go cookie.Run(runCtx3)
	if err := cookie.Set(ctx, svcs); !errors.Is(err, ErrTorUnavailable) || !strings.Contains(err.Error(), "SAFECOOKIE") {
		t.Fatalf("cookie auth against a password-only tor: %v", err)
	}
}

// addMultipleOfL adds n·l to a little-endian 32-byte scalar (no overflow for small n).
func addMultipleOfL(s []byte, n int) {
	l := [32]byte{0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10}
	for range n {
		carry := 0
		for i := range 32 {
			v := int(s[i]) + int(l[i]) + carry
			s[i] = byte(v)
			carry = v >> 8
		}
	}
}
