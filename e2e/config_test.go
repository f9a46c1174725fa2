package e2e

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/onionpod/onionpod/internal/lab"
)

// TestBadConfigNeverReplacesGood: `systemctl reload onionpod` with a typo in the config is refused
// (the daemon keeps serving with the running config); with a good change the daemon restarts itself
// with it (the DNS TTL it serves changes).
func TestBadConfigNeverReplacesGood(t *testing.T) {
	l := needLab(t)
	path := l.State().Config
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		os.WriteFile(path, good, 0o644)
		run(t, t.Context(), lab.InBox, "systemctl", "reload", "onionpod.service")
		l.WaitDaemon(t.Context())
	})
	onionpod(t, "run", "ttl", "--image", demoImage(t, "ttl", "ttl\n"), "--port", "80")
	pid := func() string {
		out, _ := run(t, t.Context(), lab.InBox, "systemctl", "show", "-P", "MainPID", "onionpod.service")
		return strings.TrimSpace(out)
	}
	ttl := func() string {
		out, _ := run(t, t.Context(), lab.InClient, "dig", "+noall", "+answer", "AAAA", "ttl.box.example", "@"+lab.BoxLANIP.String())
		f := strings.Fields(out)
		if len(f) < 2 {
			return ""
		}
		return f[1]
	}
	if got := ttl(); got != "30" {
		t.Fatalf("TTL before = %q, want 30 (the lab's config)", got)
	}
	before := pid()

	bad := strings.Replace(string(good), "ttl = 30", "ttl = 31\nzonee = \"typo.example\"", 1)
	os.WriteFile(path, []byte(bad), 0o644)
	if _, err := run(t, t.Context(), lab.InBox, "systemctl", "reload", "onionpod.service"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	if pid() != before {
		t.Fatal("the daemon restarted on a bad config")
	}
	// Still answering (the CLI itself refuses the broken file: it reads a good copy).
	goodCopy := writeFile(t, "good.toml", string(good))
	onionpod(t, "--config", goodCopy, "ls")
	journal, _ := run(t, t.Context(), lab.InBox, "journalctl", "--no-pager", "-u", "onionpod.service", "-n", "20")
	if !strings.Contains(journal, "config reload refused") || !strings.Contains(journal, "zonee") {
		t.Errorf("the refusal is not in the journal:\n%s", journal)
	}

	os.WriteFile(path, []byte(strings.Replace(string(good), "ttl = 30", "ttl = 31", 1)), 0o644)
	if _, err := run(t, t.Context(), lab.InBox, "systemctl", "reload", "onionpod.service"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "serving the new TTL", func() bool { return ttl() == "31" })
	onionpod(t, "rm", "ttl")
}
