package oniontest

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestCheckTorrc(t *testing.T) {
	auth := "DirAuthority a orport=5000 no-v2 v3ident=AA 127.0.0.1:5001 BB"
	ok := []string{
		"DisableNetwork 1\n",
		"TestingTorNetwork 1\nUseDefaultFallbackDirs 0\n" + auth + "\n",
	}
	bad := []string{
		"",
		"SocksPort 9050\n",
		"DisableNetwork 0\n",
		"TestingTorNetwork 1\n" + auth + "\n", // default fallbacks still on
		"TestingTorNetwork 1\nUseDefaultFallbackDirs 0\n",
		"TestingTorNetwork 1\nUseDefaultFallbackDirs 0\nDirAuthority a orport=5000 v3ident=AA 198.51.100.1:5001 BB\n",
		"TestingTorNetwork 1\nUseDefaultFallbackDirs 0\n" + auth + "\nFallbackDir 198.51.100.2:80 orport=9001 id=AA\n",
		"DisableNetwork 1\nBridge 198.51.100.3:443\n",
		"DisableNetwork 1\nUseBridges 1\n",
	}
	for _, s := range ok {
		if err := CheckTorrc([]byte(s)); err != nil {
			t.Errorf("CheckTorrc(%q) = %v, want ok", s, err)
		}
	}
	for _, s := range bad {
		if err := CheckTorrc([]byte(s)); err == nil {
			t.Errorf("CheckTorrc(%q) accepted an unsafe torrc", s)
		}
	}
}

func TestStartRefusesUnsafeTorrc(t *testing.T) {
	_, err := Start(context.Background(), Options{Dir: t.TempDir(), Torrc: []byte("SocksPort 9050\n")})
	if err == nil || !strings.Contains(err.Error(), "unsafe") {
		t.Fatalf("Start with a public-network torrc: %v", err)
	}
}

func TestOfflineTorRestartAndClose(t *testing.T) {
	tor := NewOffline(t)
	fi, err := os.Stat(filepath.Dir(tor.ControlSocket()))
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("control socket dir: %v %v", fi.Mode(), err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if v, err := tor.GetInfo(ctx, "network-liveness"); err != nil || v != "down" {
		t.Fatalf("network-liveness = %q, %v; want down (DisableNetwork 1)", v, err)
	}
	c, _ := tor.Control(ctx)
	if _, err := c.SendRequest("ADD_ONION NEW:ED25519-V3 Flags=Detach Port=80,127.0.0.1:1"); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if d, _ := tor.Detached(ctx); len(d) != 1 {
		t.Fatalf("detached before restart: %v", d)
	}
	pid := tor.PID()
	if err := tor.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if tor.PID() == pid || syscall.Kill(pid, 0) == nil {
		t.Fatalf("Restart kept PID %d alive", pid)
	}
	if d, _ := tor.Detached(ctx); len(d) != 0 {
		t.Fatalf("a real restart forgets detached services, got %v", d)
	}
	pid = tor.PID()
	if err := tor.Close(); err != nil {
		t.Fatal(err)
	}
	if syscall.Kill(pid, 0) == nil {
		t.Fatalf("tor %d still runs after Close", pid)
	}
	if _, err := os.Stat(filepath.Join(tor.Dir(), "tor.pid")); err == nil {
		t.Fatal("PID file left behind")
	}
	if err := tor.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestStopByPIDFileIgnoresOtherProcesses(t *testing.T) {
	dir := t.TempDir()
	node := filepath.Join(dir, "auth0")
	os.Mkdir(node, 0o700)
	// Our own PID does not run tor on that torrc: it must not be signalled.
	os.WriteFile(filepath.Join(node, "tor.pid"), []byte(strconv.Itoa(os.Getpid())), 0o600)
	if err := StopNetwork(dir); err != nil {
		t.Fatal(err)
	}
}
