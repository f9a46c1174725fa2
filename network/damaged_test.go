package network_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/onionpod/onionpod/network"
	"github.com/onionpod/onionpod/network/nettest"
)

// damages are the ways a lease file is found damaged: cut short (a full disk, a crash of a
// filesystem that does not order data before the rename), garbled (a bad sector, an editor).
var damages = []struct {
	name   string
	damage func(t *testing.T, b []byte, other []byte) []byte
}{
	{"empty", func(t *testing.T, b, _ []byte) []byte { return nil }},
	{"cut in half", func(t *testing.T, b, _ []byte) []byte { return b[:len(b)/2] }},
	{"cut before its last brace", func(t *testing.T, b, _ []byte) []byte { return b[:len(b)-2] }},
	{"a digit of its ULA changed", func(t *testing.T, b, _ []byte) []byte {
		i := bytes.Index(b, []byte(`"ula": "fd`)) + len(`"ula": "fd`) + 3
		c := bytes.Clone(b)
		c[i] = "01"[(c[i]-'0'+1)%2] // still JSON, still an address in the prefix
		return c
	}},
	{"a block of zeros", func(t *testing.T, b, _ []byte) []byte {
		c := bytes.Clone(b)
		copy(c[len(c)/3:], make([]byte, 16))
		return c
	}},
	{"random bytes", func(t *testing.T, b, _ []byte) []byte {
		seed := uint64(time.Now().UnixNano())
		t.Logf("random damage, seed %d", seed)
		rnd := rand.New(rand.NewPCG(seed, 0))
		c := bytes.Clone(b)
		at := rnd.IntN(len(c) - 8)
		for i := range 8 {
			c[at+i] ^= byte(1 + rnd.IntN(255))
		}
		return c
	}},
	{"another app's lease", func(t *testing.T, _, other []byte) []byte { return other }},
}

// A damaged lease file harms its app alone. With one app's file damaged in each of the ways
// above: a new Manager starts (the daemon restarting, or a net-up), every other app attaches as it
// was and a new app attaches; the damaged app's Addresses and Check say so, DamagedLeases lists
// the file; its next Attach sets the file aside and repairs the lease from the live pod, which
// keeps its ULA, its namespace and its running server; a Detach cleans up after it too.
func TestDamagedLeaseHarmsOnlyItsApp(t *testing.T) {
	t.Parallel()
	socket := filepath.Join(t.TempDir(), "dhcp.sock")
	e := newEnv(t, nettest.Options{IPv4: true}, func(c *network.Config) { c.DHCPSocket = socket })
	e.waitForBox(t)
	startDHCPDaemon(t, e.lan.BoxNetns(), socket)
	ctx := context.Background()
	ports := []network.PortMap{{Public: 80, Target: 80}}
	apps := []network.Attachment{
		{App: "web", Ports: ports},
		{App: "hidden", OnionOnly: true, Ports: ports},
		{App: "legacy", IPv4: true, Ports: ports},
	}
	before := map[string]network.Result{}
	for _, a := range apps {
		before[a.App] = e.attach(t, a)
		serveHTTP(t, before[a.App].Netns, a.App)
	}
	leaseFile := func(app string) string { return filepath.Join(e.cfg.StateDir, "leases", app+".json") }
	quarantined := 0

	for i, d := range damages {
		victim, other := apps[i%len(apps)], apps[(i+1)%len(apps)]
		ok := t.Run(d.name+" ("+victim.App+")", func(t *testing.T) {
			good, err := os.ReadFile(leaseFile(victim.App))
			if err != nil {
				t.Fatal(err)
			}
			otherLease, err := os.ReadFile(leaseFile(other.App))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(leaseFile(victim.App), d.damage(t, good, otherLease), 0o600); err != nil {
				t.Fatal(err)
			}
			m, err := network.New(e.cfg) // the daemon restarting, or a net-up
			if err != nil {
				t.Fatalf("New with %s's lease damaged: %v", victim.App, err)
			}
			defer m.Close()

			for _, a := range apps {
				if a.App == victim.App {
					continue
				}
				res, err := m.Attach(ctx, a)
				if err != nil || res.ULA != before[a.App].ULA || res.Netns != before[a.App].Netns {
					t.Fatalf("Attach of %s beside a damaged lease: %+v, %v", a.App, res, err)
				}
			}
			fresh := network.Attachment{App: fmt.Sprintf("new%d", i)}
			if _, err := m.Attach(ctx, fresh); err != nil {
				t.Fatalf("a new app beside a damaged lease: %v", err)
			}
			if err := m.Detach(ctx, fresh.App); err != nil {
				t.Fatal(err)
			}

			if _, err := m.Addresses(context.Background(), victim.App); !errors.Is(err, network.ErrDamagedLease) {
				t.Errorf("Addresses of %s = %v, want ErrDamagedLease", victim.App, err)
			}
			if err := m.Check(ctx, victim.App); !errors.Is(err, network.ErrDamagedLease) || !errors.Is(err, network.ErrDrift) {
				t.Errorf("Check of %s = %v, want ErrDrift and ErrDamagedLease", victim.App, err)
			}
			list, err := m.DamagedLeases()
			if err != nil || len(list) != quarantined+1 || !hasDamaged(list, victim.App, leaseFile(victim.App), false) {
				t.Fatalf("DamagedLeases = %+v, %v; want %s's file in place", list, err, victim.App)
			}

			res, err := m.Attach(ctx, victim)
			if err != nil {
				t.Fatalf("Attach of %s with its lease damaged: %v", victim.App, err)
			}
			quarantined++
			if res.ULA != before[victim.App].ULA || res.Netns != before[victim.App].Netns || !res.Publishes(victim.Ports) {
				t.Fatalf("repaired %s: %+v, want ULA %s in %s", victim.App, res, before[victim.App].ULA, before[victim.App].Netns)
			}
			fetchEventually(t, e.lan.BoxNetns(), httpURL(res.ULA), victim.App) // the same server: untouched
			if err := m.Check(ctx, victim.App); err != nil {
				t.Fatalf("Check after the repair: %v", err)
			}
			if now, err := m.Addresses(context.Background(), victim.App); err != nil || now.ULA != res.ULA || now.IPv4 != before[victim.App].IPv4 {
				t.Fatalf("Addresses after the repair = %+v, %v; want %+v", now, err, before[victim.App])
			}
			list, err = m.DamagedLeases()
			if err != nil || len(list) != quarantined || hasDamaged(list, victim.App, leaseFile(victim.App), false) {
				t.Fatalf("DamagedLeases after the repair = %+v, %v; want %d set aside", list, err, quarantined)
			}
		})
		if !ok {
			return // the next rounds start from this one's end
		}
	}

	t.Run("detach", func(t *testing.T) {
		if err := os.WriteFile(leaseFile("web"), []byte(`{"version": 1, "app": "we`), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := e.m.Detach(ctx, "web"); err != nil {
			t.Fatalf("Detach with a damaged lease: %v", err)
		}
		assertGone(t, e, "web")
		if _, err := e.m.Addresses(context.Background(), "web"); !errors.Is(err, network.ErrNotFound) {
			t.Fatalf("Addresses after Detach = %v, want ErrNotFound", err)
		}
		again := e.attach(t, apps[0])
		if again.ULA != before["web"].ULA {
			t.Fatalf("web came back on %s, want %s", again.ULA, before["web"].ULA)
		}
	})
	removeDamaged(t, e.cfg.StateDir) // the operator read them
}

// After a power cut that damaged two lease files, the box boots: a fresh box namespace, no pod
// namespaces, the state dir as it was, and every app's network unit runs net-up (a Manager of
// its own, all at once). Every net-up succeeds; the damaged apps get fresh leases, on the ULA
// their names derive (the one they had: it changes only if another app holds it meanwhile), and
// every pod answers.
func TestDamagedLeasesAfterReboot(t *testing.T) {
	t.Parallel()
	first := newEnv(t, nettest.Options{})
	first.waitForBox(t)
	ports := []network.PortMap{{Public: 80, Target: 8080}}
	apps := []network.Attachment{
		{App: "web", Ports: ports},
		{App: "hidden", OnionOnly: true, Ports: ports},
		{App: "shop", Ports: ports},
	}
	before := map[string]network.Result{}
	for _, a := range apps {
		before[a.App] = first.attach(t, a)
	}

	// The disk as the box finds it after the power cut; /run (the namespaces) is gone.
	state := t.TempDir()
	copyDir(t, first.cfg.StateDir, state)
	for _, a := range apps {
		first.detach(t, a.App)
	}
	leases := filepath.Join(state, "leases")
	web, _ := os.ReadFile(filepath.Join(leases, "web.json"))
	hidden, _ := os.ReadFile(filepath.Join(leases, "hidden.json"))
	os.WriteFile(filepath.Join(leases, "web.json"), web[:len(web)/2], 0o600)
	os.WriteFile(filepath.Join(leases, "hidden.json"), damages[3].damage(t, hidden, nil), 0o600)

	booted := newEnv(t, nettest.Options{}, func(c *network.Config) {
		c.StateDir, c.ULAPrefix, c.NetnsDir = state, first.cfg.ULAPrefix, first.cfg.NetnsDir
	})
	booted.waitForBox(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, len(apps))
	for _, a := range apps {
		wg.Add(1)
		go func() { // net-up APP
			defer wg.Done()
			m, err := network.New(booted.cfg)
			if err != nil {
				errs <- fmt.Errorf("net-up %s: %w", a.App, err)
				return
			}
			defer m.Close()
			if _, err := m.Attach(ctx, a); err != nil {
				errs <- fmt.Errorf("net-up %s: %w", a.App, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	for _, a := range apps {
		res, err := booted.m.Addresses(context.Background(), a.App)
		if err != nil || !res.Publishes(ports) {
			t.Fatalf("%s after the reboot: %+v, %v", a.App, res, err)
		}
		if res.ULA != before[a.App].ULA {
			t.Errorf("%s moved from %s to %s", a.App, before[a.App].ULA, res.ULA)
		}
		serveHTTPOn(t, res.Netns, 8080, a.App)
		fetchEventually(t, booted.lan.BoxNetns(), httpURLPort(res.ULA, 8080), a.App)
		if !a.OnionOnly {
			fetchEventually(t, booted.lan.ClientNetns(), httpURL(booted.waitLAN(t, a.App)), a.App)
		}
	}
	list, err := booted.m.DamagedLeases()
	if err != nil || len(list) != 2 || list[0].App != "hidden" || list[1].App != "web" || !list[0].Quarantined || !list[1].Quarantined {
		t.Fatalf("DamagedLeases = %+v, %v; want hidden's and web's, set aside", list, err)
	}
	removeDamaged(t, state)
}

func hasDamaged(list []network.DamagedLease, app, file string, quarantined bool) bool {
	for _, d := range list {
		if d.App == app && d.Quarantined == quarantined && (quarantined || d.File == file) {
			return true
		}
	}
	return false
}

// removeDamaged deletes the damaged lease files set aside, as the operator would after reading
// them (newEnv's cleanup checks that the leases dir ends empty).
func removeDamaged(t *testing.T, stateDir string) {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(stateDir, "leases", "*.damaged-*"))
	for _, f := range files {
		if err := os.Remove(f); err != nil {
			t.Error(err)
		}
	}
}

// copyDir copies the regular files and directories under src to dst.
func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		to := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(to, 0o700)
		}
		if !d.Type().IsRegular() || strings.HasPrefix(d.Name(), ".") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(to, b, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
}
