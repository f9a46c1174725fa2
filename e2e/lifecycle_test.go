package e2e

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/onionpod/onionpod/internal/lab"
)

// TestRebootKeepsOnionAndAddress reboots the box (its systemd, on the same state): the pod comes
// back by itself with the same .onion and the same IPv6 address, and answers on both.
func TestRebootKeepsOnionAndAddress(t *testing.T) {
	l := needLab(t)
	page := "survivor " + randomHex(4) + "\n"
	before := parseExposed(t, onionpod(t, "expose", "survivor", "--image", demoImage(t, "survivor", page), "--port", "80"))
	bootPID := l.Box().PID
	start := time.Now()
	if err := l.Reboot(t.Context()); err != nil {
		t.Fatal(err)
	}
	if l.Box().PID == bootPID {
		t.Fatal("the box did not reboot")
	}
	var st appStatus
	waitFor(t, 30*time.Second, "running after the reboot", func() bool {
		st = status(t, "survivor")
		return st.State == running
	})
	t.Logf("running again %v after the reboot began", time.Since(start))
	// The apps' networks were made by one process at boot (onionpod-networks.service), before
	// the apps' network units, which systemd then skipped: no onionpod process per app.
	if out, err := run(t, t.Context(), lab.InBox, "systemctl", "show", "-p", "ActiveState,Result", "onionpod-networks.service"); err != nil ||
		!strings.Contains(out, "ActiveState=active") || !strings.Contains(out, "Result=success") {
		t.Errorf("onionpod-networks.service after the reboot: %q, %v; want active, success", out, err)
	}
	if out, err := run(t, t.Context(), lab.InBox, "systemctl", "show", "--value", "-p", "ConditionResult", "onionpod-net-survivor.service"); err != nil || strings.TrimSpace(out) != "no" {
		t.Errorf("survivor's network unit after the reboot: ConditionResult=%q, %v; want no (skipped: its namespace was made)", out, err)
	}
	if out, err := run(t, t.Context(), lab.InBox, "journalctl", "--no-pager", "-b", "-o", "cat", "-u", "onionpod-networks.service"); err == nil {
		t.Logf("onionpod-networks.service at this boot:\n%s", out)
	}
	if "http://"+st.Onion.Address+"/" != before.Onion {
		t.Errorf(".onion changed across the reboot: %s, was %s", st.Onion.Address, before.Onion)
	}
	if "http://["+st.Network.LAN+"]/" != before.IPv6 {
		t.Errorf("IPv6 address changed across the reboot: %s, was %s", st.Network.LAN, before.IPv6)
	}
	if got := fetch(t, lab.InClient, before.DNS, 30*time.Second); got != page {
		t.Errorf("after reboot, by DNS: %q", got)
	}
	if got := fetch(t, lab.InTor, before.Onion, 3*time.Minute); got != page {
		t.Errorf("after reboot, over tor: %q", got)
	}

	// An app the boot's process does not attach (here: none begun, its budget 0) is attached by
	// its own network unit, and comes back the same.
	dropIn := "/etc/systemd/system/onionpod-networks.service.d"
	t.Cleanup(func() {
		run(t, context.Background(), lab.InBox, "sh", "-c", "rm -rf "+dropIn+" && systemctl daemon-reload")
	})
	execStart, err := run(t, t.Context(), lab.InBox, "sed", "-n", "s/^ExecStart=//p", "/etc/systemd/system/onionpod-networks.service")
	if err != nil || !strings.Contains(execStart, "net-boot") {
		t.Fatalf("onionpod-networks.service's ExecStart: %q, %v", execStart, err)
	}
	conf := "[Service]\nExecStart=\nExecStart=" + strings.TrimSpace(execStart) + " \"--budget\" \"0s\"\n"
	if out, err := run(t, t.Context(), lab.InBox, "sh", "-c", `mkdir -p "$1" && printf %s "$2" > "$1/budget.conf" && systemctl daemon-reload`,
		"sh", dropIn, conf); err != nil {
		t.Fatalf("drop-in: %v\n%s", err, out)
	}
	if err := l.Reboot(t.Context()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "running after the second reboot", func() bool {
		st = status(t, "survivor")
		return st.State == running
	})
	if out, err := run(t, t.Context(), lab.InBox, "journalctl", "--no-pager", "-b", "-o", "cat", "-u", "onionpod-networks.service"); err != nil ||
		!strings.Contains(out, "net-boot: 0 apps attached, 0 failed, ") || strings.Contains(out, ", 0 not begun in time") {
		t.Errorf("onionpod-networks.service with budget 0: %v\n%s\nwant no app attached, none failed, every app left to its unit", err, out)
	}
	if out, err := run(t, t.Context(), lab.InBox, "systemctl", "show", "-p", "ConditionResult,ActiveState,Result", "onionpod-net-survivor.service"); err != nil ||
		!strings.Contains(out, "ConditionResult=yes") || !strings.Contains(out, "ActiveState=active") || !strings.Contains(out, "Result=success") {
		t.Errorf("survivor's network unit when the boot's process left it: %q, %v; want run, active, success", out, err)
	}
	if "http://["+st.Network.LAN+"]/" != before.IPv6 {
		t.Errorf("IPv6 address changed across the second reboot: %s, was %s", st.Network.LAN, before.IPv6)
	}
	if got := fetch(t, lab.InClient, before.DNS, 30*time.Second); got != page {
		t.Errorf("after the second reboot, by DNS: %q", got)
	}
}

// TestTorRestart restarts the box's tor: the daemon reconnects, re-adds the onion service (within
// a second or two: onion's BenchmarkReAdd100AfterRestart measures it; here only a minute fails),
// and the .onion answers again.
func TestTorRestart(t *testing.T) {
	needLab(t)
	page := "steady " + randomHex(4) + "\n"
	e := parseExposed(t, onionpod(t, "expose", "steady", "--image", demoImage(t, "steady", page), "--port", "80"))
	before := detachedOnions(t)
	if !contains(before, e.Onion) {
		t.Fatalf("tor does not have %s: %v", e.Onion, before)
	}
	if _, err := run(t, t.Context(), lab.InBox, "systemctl", "restart", "onionpod-tor.service"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	waitFor(t, time.Minute, "re-added after the tor restart", func() bool {
		return contains(detachedOnions(t), e.Onion)
	})
	t.Logf("re-added %v after tor restarted", time.Since(start))
	if got := fetch(t, lab.InTor, e.Onion, 3*time.Minute); got != page {
		t.Errorf("after tor restart, over tor: %q", got)
	}
}

// TestBackupPurgeRestoreKeepsOnion: back the key up, remove the app with its key, restore the
// backup, expose again: the same .onion, reachable. A tampered backup is refused, changing nothing.
func TestBackupPurgeRestoreKeepsOnion(t *testing.T) {
	needLab(t)
	page := "keeper " + randomHex(4) + "\n"
	img := demoImage(t, "keeper", page)
	first := parseExposed(t, onionpod(t, "expose", "keeper", "--image", img, "--port", "80"))
	pass := writeFile(t, "keeper.pass", "correct horse battery staple\n")
	backup := labDir + "/keeper.age"
	onionpod(t, "onion", "backup", "keeper", "-o", backup, "--passphrase-file", pass)
	out := onionpod(t, "rm", "--purge-key", "keeper")
	if !strings.Contains(out, "gone for good") {
		t.Errorf("rm --purge-key did not say the address is gone:\n%s", out)
	}
	if strings.Contains(onionpod(t, "onion", "ls"), strings.TrimSuffix(strings.TrimPrefix(first.Onion, "http://"), "/")) {
		t.Fatal("the key is still there after rm --purge-key")
	}

	data, err := os.ReadFile(backup)
	if err != nil {
		t.Fatal(err)
	}
	tampered := append([]byte(nil), data...)
	tampered[len(tampered)/2] ^= 0x01
	bad := writeFile(t, "keeper-tampered.age", string(tampered))
	if out, err := run(t, t.Context(), lab.InBox, "onionpod", "onion", "restore", bad, "--passphrase-file", pass); err == nil {
		t.Fatalf("a tampered backup was restored:\n%s", out)
	}
	if strings.Contains(onionpod(t, "onion", "ls"), "keeper") {
		t.Fatal("a refused restore left a key behind")
	}

	onionpod(t, "onion", "restore", backup, "--passphrase-file", pass)
	again := parseExposed(t, onionpod(t, "expose", "keeper", "--image", img, "--port", "80"))
	if again.Onion != first.Onion {
		t.Fatalf("restored app has %s, was %s", again.Onion, first.Onion)
	}
	if got := fetch(t, lab.InTor, again.Onion, 3*time.Minute); got != page {
		t.Errorf("restored app over tor: %q", got)
	}
}

// detachedOnions asks the box's tor itself (GETINFO onions/detached over its control socket,
// cookie auth) which onion services it has, as http://ADDR.onion/ URLs.
func detachedOnions(t *testing.T) []string {
	t.Helper()
	script := `cookie=$(od -An -tx1 /var/lib/onionpod/tor/data/control_auth_cookie | tr -d ' \n')
printf 'AUTHENTICATE %s\r\nGETINFO onions/detached\r\nQUIT\r\n' "$cookie" | socat -t 2 - UNIX-CONNECT:/run/onionpod/tor/control.sock`
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	out, err := run(t, ctx, lab.InBox, "sh", "-c", script)
	if err != nil {
		return nil
	}
	var urls []string
	for _, f := range strings.Fields(strings.NewReplacer("=", " ", "-", " ", "\r", " ").Replace(out)) {
		if len(f) == 56 {
			urls = append(urls, "http://"+f+".onion/")
		}
	}
	return urls
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
