package cli

import (
	"errors"
	"strings"
	"testing"

	"github.com/onionpod/onionpod/internal/errkind"
)

// TestDashboardOutput: the dashboard commands' output, golden, on a terminal and off one. enable
// and client add print the .onion and the new device's key lines either way; the QR codes of
// both only on a terminal (and not with --no-qr): a script reading the output wants the lines,
// not block-character drawings.
func TestDashboardOutput(t *testing.T) {
	f := newFakeDaemon()
	f.dashboard.Listen = []string{"127.0.0.1:8411", "[fd6f:6e69:6f6e:1::1]:8411"}
	c := client[dashboardClient](f)

	out, _ := bothTerminals(t, func(s IO) error { return runDashboard(&dashboardOptions{IO: s, Ctx: t.Context(), Client: c}) })
	golden(t, "dashboard-off.txt", out)

	// enable: the lines alone off a terminal, the QR codes too on one.
	plain, tty, noQR := enableOutput(t, f, false, false), enableOutput(t, f, true, false), enableOutput(t, f, true, true)
	golden(t, "dashboard-enable.txt", plain)
	golden(t, "dashboard-enable-tty.txt", tty)
	if strings.Contains(plain, "QR code") || !strings.HasPrefix(tty, plain) || strings.Count(tty, "QR code of") != 2 {
		t.Errorf("QR codes: off a terminal %q; on one:\n%s", plain, tty)
	}
	if noQR != plain {
		t.Errorf("--no-qr on a terminal:\n%s\nwant as off one:\n%s", noQR, plain)
	}
	// enable again: the onion is on and has a device; no new key.
	out, _ = bothTerminals(t, func(s IO) error {
		return runDashboardEnable(&dashboardEnableOptions{IO: s, Ctx: t.Context(), Client: c, Device: "owner"})
	})
	golden(t, "dashboard-enable-again.txt", out)

	f.dashboard.Onion.Added = true
	out, _ = bothTerminals(t, func(s IO) error { return runDashboard(&dashboardOptions{IO: s, Ctx: t.Context(), Client: c}) })
	golden(t, "dashboard.txt", out)
	out, _ = bothTerminals(t, func(s IO) error {
		return runDashboard(&dashboardOptions{IO: s, Ctx: t.Context(), Client: c, JSON: true})
	})
	golden(t, "dashboard.json", out)

	// client add: the same, for one more device.
	for _, tty := range []bool{false, true} {
		f.dashboard.Onion.Clients = []string{"owner"}
		s, o, _ := streams(tty)
		if err := runDashboardClientAdd(&dashboardClientAddOptions{IO: s, Ctx: t.Context(), Client: c, Name: "phone"}); err != nil {
			t.Fatal(err)
		}
		name := map[bool]string{false: "dashboard-client-add.txt", true: "dashboard-client-add-tty.txt"}[tty]
		golden(t, name, o.String())
		if strings.Contains(o.String(), "QR code") != tty {
			t.Errorf("client add, tty=%v: QR codes %v", tty, !tty)
		}
	}
	// A bad device name is the daemon's bad input: exit 2, nothing added.
	s, o, _ := streams(false)
	if err := runDashboardClientAdd(&dashboardClientAddOptions{IO: s, Ctx: t.Context(), Client: c, Name: "../phone"}); exitCode(err) != exitBadInput || o.Len() > 0 {
		t.Errorf("client add ../phone: %v (exit %d), printed %q", err, exitCode(err), o.String())
	}

	out, _ = bothTerminals(t, func(s IO) error {
		return runDashboardClientLs(&dashboardClientLsOptions{IO: s, Ctx: t.Context(), Client: c})
	})
	if out != "owner\nphone\n" {
		t.Errorf("client ls: %q", out)
	}
	s, o, _ = streams(false)
	if err := runDashboardClientRm(&dashboardClientRmOptions{IO: s, Ctx: t.Context(), Client: c, Name: "phone"}); err != nil ||
		o.String() != "phone can no longer reach the dashboard's .onion\n" {
		t.Errorf("client rm phone: %v, %q", err, o.String())
	}
	if err := runDashboardClientRm(&dashboardClientRmOptions{IO: s, Ctx: t.Context(), Client: c, Name: "phone"}); !errors.Is(err, errkind.NotFound) || exitCode(err) != exitFailed {
		t.Errorf("client rm phone again: %v (exit %d), want not found (exit 1)", err, exitCode(err))
	}

	login := func() string {
		out, _ := bothTerminals(t, func(s IO) error {
			return runDashboardLogin(&dashboardLoginOptions{IO: s, Ctx: t.Context(), Client: c})
		})
		return out
	}
	first := login()
	golden(t, "dashboard-login.txt", first)
	s, o, _ = streams(false)
	if err := runDashboardLogin(&dashboardLoginOptions{IO: s, Ctx: t.Context(), Client: c, Rotate: true}); err != nil {
		t.Fatal(err)
	}
	golden(t, "dashboard-login-rotate.txt", o.String())
	if again := login(); again == first || !strings.HasPrefix(o.String(), again) {
		t.Errorf("login, login --rotate, login:\n%s---\n%s---\n%s", first, o.String(), again)
	}

	out, _ = bothTerminals(t, func(s IO) error {
		return runDashboardDisable(&dashboardDisableOptions{IO: s, Ctx: t.Context(), Client: c})
	})
	if out != "The dashboard's onion service is off (enable brings the same .onion back).\n" || f.dashboard.Onion.Enabled {
		t.Errorf("disable: %q, onion enabled %v", out, f.dashboard.Onion.Enabled)
	}
}

// enableOutput runs dashboard enable (its first device named owner) on a dashboard with no
// devices yet and returns what it printed.
func enableOutput(t *testing.T, f *fakeDaemon, tty, noQR bool) string {
	t.Helper()
	f.dashboard.Onion.Clients = nil
	s, out, errOut := streams(tty)
	err := runDashboardEnable(&dashboardEnableOptions{IO: s, Ctx: t.Context(), Client: client[dashboardClient](f), Device: "owner", NoQR: noQR})
	if err != nil {
		t.Fatal(err)
	}
	if errOut.Len() > 0 || strings.Contains(out.String(), "\x1b") {
		t.Errorf("tty=%v: stderr %q; an escape sequence? %q", tty, errOut.String(), out.String())
	}
	return out.String()
}
