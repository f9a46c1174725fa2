package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/onionpod/onionpod/internal/lab"
)

// run runs argv in the lab (lab.InBox, InClient or InTor) and returns stdout; stderr goes to the
// test log.
func run(t testing.TB, ctx context.Context, where string, argv ...string) (string, error) {
	t.Helper()
	return runIn(t, ctx, theLab, where, argv...)
}

// runIn is run in the lab l (a second lab of a test, or theLab).
func runIn(t testing.TB, ctx context.Context, l *lab.Lab, where string, argv ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	c := l.Command(ctx, where, argv...)
	c.Stdout, c.Stderr = &out, &errOut
	err := c.Run()
	if errOut.Len() > 0 {
		t.Logf("%s$ %s\n%s", where, strings.Join(argv, " "), strings.TrimRight(errOut.String(), "\n"))
	}
	return out.String(), err
}

// onionpod runs the CLI inside the box and fails the test if it fails.
func onionpod(t testing.TB, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	out, err := run(t, ctx, lab.InBox, append([]string{"onionpod"}, args...)...)
	if err != nil {
		t.Fatalf("onionpod %s: %v\n%s\n%s", strings.Join(args, " "), err, out, boxJournal(t))
	}
	return out
}

// boxJournal is what the box's journal last says of the daemon and the pods: a failure in CI is
// read there.
func boxJournal(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(t.Context()), 30*time.Second)
	defer cancel()
	journal, _ := run(t, ctx, lab.InBox, "journalctl", "--no-pager", "-o", "short-precise", "-n", "80", "-u", "onionpod.service", "-u", "onionpod-*")
	return "the box's journal:\n" + journal
}

// appStatus is what the tests read of `onionpod status APP --json`, as a user's script would.
type appStatus struct {
	State string `json:"state"`
	Unit  struct {
		MainPID int `json:"main_pid"`
	} `json:"unit"`
	Network struct {
		LAN  string `json:"lan"`
		IPv4 string `json:"ipv4"`
	} `json:"network"`
	Onion struct {
		Address   string `json:"address"`
		Published bool   `json:"published"`
	} `json:"onion"`
	DNS struct {
		Published bool `json:"published"`
	} `json:"dns"`
	LastError string `json:"last_error"`
}

const running = "running"

// status returns an app's status as the daemon reports it.
func status(t *testing.T, app string) appStatus {
	t.Helper()
	var st appStatus
	if err := json.Unmarshal([]byte(onionpod(t, "status", app, "--json")), &st); err != nil {
		t.Fatalf("status %s: %v", app, err)
	}
	return st
}

// exposed are the three addresses expose prints.
type exposed struct {
	Onion, DNS, IPv6 string
}

func parseExposed(t *testing.T, out string) exposed {
	t.Helper()
	var e exposed
	for _, line := range strings.Fields(out) {
		switch {
		case strings.HasSuffix(line, ".onion/"):
			e.Onion = line
		case strings.Contains(line, "."+lab.Zone):
			e.DNS = line
		case strings.HasPrefix(line, "http://["):
			e.IPv6 = line
		}
	}
	return e
}

// demoImage writes a busybox httpd image serving page, where the box sees it.
func demoImage(t testing.TB, name, page string) string {
	t.Helper()
	path := filepath.Join(labDir, name+".tar")
	if err := lab.WriteDemoImage(path, page); err != nil {
		t.Fatal(err)
	}
	return path
}

// fetch GETs url from the lab's LAN client (DNS through the box) or Tor client, retrying for up
// to d (circuits, descriptors and DAD take a moment; see curlRetrying), and returns the body.
func fetch(t *testing.T, where, url string, d time.Duration) string {
	t.Helper()
	return curlRetrying(t, theLab, where, d, url)
}

// curlRetrying runs curl with args from where in the lab l until it succeeds, for up to d (then
// it fails the test), and returns its output. Over Tor every retry asks for new circuits, as Tor
// Browser's "New Tor circuit for this site" does: each retry gives its own SOCKS user name, and
// tor keeps streams of different user names on different circuits (IsolateSOCKSAuth, on by
// default). A Tor client that held a rendezvous circuit to a service whose tor went down can
// keep sending into that circuit for minutes (tor gives up on each stream after SocksTimeout and
// keeps the circuit): the lab saw it after 1 box reboot in 4, still stuck 4 minutes later, while
// a new circuit fetched the page in 0.4 s. That is the client's state, not the box's.
func curlRetrying(t testing.TB, l *lab.Lab, where string, d time.Duration, args ...string) string {
	t.Helper()
	deadline := time.Now().Add(d)
	for attempt := 0; ; attempt++ {
		argv := []string{"curl", "-sS", "-g", "--fail", "--max-time", "30"}
		if where == lab.InTor && attempt > 0 {
			argv = append(argv, "--proxy", fmt.Sprintf("socks5h://retry%d-%s:x@%s", attempt, randomHex(3), l.State().Socks))
		}
		ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
		out, err := runIn(t, ctx, l, where, append(argv, args...)...)
		cancel()
		if err == nil {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("curl %s from %s: %v", strings.Join(args, " "), where, err)
		}
		time.Sleep(time.Second)
	}
}

// waitFor polls cond until it holds or d passes; then it fails the test with the daemon's recent
// journal, to show why.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			journal, _ := run(t, context.Background(), lab.InBox, "journalctl", "--no-pager", "-n", "60")
			t.Fatalf("not %s after %v; the box's journal ends with:\n%s", what, d, journal)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(labDir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// boxNetnsDir is where the box names the pods' network namespaces: the default network.netns_dir,
// a link into the namespace holder (onionpod-netns.service).
const boxNetnsDir = "/run/onionpod/netns"
