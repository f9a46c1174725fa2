// Package e2e tests onionpod as a user meets it: the onionpod binary, built from this tree, runs
// as onionpod.service in the lab (a real systemd as PID 1 of fresh namespaces, a simulated IPv6 LAN
// with radvd and a client, a private Tor network on the box's loopback, the built-in DNS server),
// and the tests drive it with the CLI inside the box, then fetch pages from the LAN client (DNS +
// IPv6) and through the lab's Tor client (.onion), across reboots, tor restarts, backups and a
// daemon killed mid-operation.
package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/onionpod/onionpod/internal/lab"
	"github.com/onionpod/onionpod/internal/lab/hostcheck"
)

// theLab is the lab every test of this binary shares (bringing one up with its Tor network takes
// 20-40 s); nil when the lab cannot run here (skipReason says why).
var (
	theLab     *lab.Lab
	skipReason string
	labDir     string
)

func TestMain(m *testing.M) {
	os.Exit(setUp(m))
}

func setUp(m *testing.M) int {
	flag.Parse()
	if testing.Short() {
		skipReason = "-short: the lab takes a minute to come up"
		return m.Run()
	}
	opts := lab.Options{Name: "e2e" + randomHex(3), TorNetwork: true, IPv4: true,
		Log: func(format string, args ...any) { fmt.Fprintf(os.Stderr, "e2e lab: "+format+"\n", args...) }}
	// The lab's parts, and the tools the tests run in it (curl, dig, socat; busybox for images).
	needs := append(lab.Needs(opts), hostcheck.Curl, hostcheck.Dig, hostcheck.Socat, hostcheck.Busybox)
	if err := hostcheck.Missing(needs...); err != nil {
		skipReason = err.Error() + " (bash .ci/install-deps installs what is missing)"
		return m.Run()
	}
	var err error
	labDir, err = os.MkdirTemp("", "onionpod-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(labDir)
	bin := filepath.Join(labDir, "onionpod")
	build := exec.Command("go", "build", "-o", bin, "../cmd/onionpod")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: building onionpod: %v\n%s", err, out)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := time.Now()
	opts.Dir, opts.Binary = filepath.Join(labDir, "lab"), bin
	theLab, err = lab.Up(ctx, opts)
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: lab up: %v\n", err)
		return 1
	}
	defer theLab.Down(context.Background())
	if err := theLab.TorNetwork().WaitReady(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: Tor network: %v\n", err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "e2e: lab and Tor network ready in %.1f s (%s)\n", time.Since(start).Seconds(), runtime.Version())
	return m.Run()
}

// needLab skips the test when the lab cannot run on this machine.
func needLab(t *testing.T) *lab.Lab {
	t.Helper()
	if theLab == nil {
		t.Skip("the lab cannot run here: " + skipReason)
	}
	return theLab
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
