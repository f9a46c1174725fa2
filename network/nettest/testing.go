package nettest

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"
)

// Missing returns why a LAN cannot be built on this machine ("" if it can): not root, or a tool
// (nsenter, unshare, radvd, and dnsmasq when ipv4) absent from PATH.
func Missing(ipv4 bool) string {
	if os.Geteuid() != 0 {
		return "nettest: needs root to create network namespaces"
	}
	tools := []string{"nsenter", "unshare", "radvd"}
	if ipv4 {
		tools = append(tools, "dnsmasq")
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			return "nettest: " + tool + " not installed (Debian package " + debianPackage(tool) + ")"
		}
	}
	return ""
}

func debianPackage(tool string) string {
	if tool == "nsenter" || tool == "unshare" {
		return "util-linux"
	}
	return tool
}

// New starts a LAN for a test and closes it in t.Cleanup. It skips the test (with the reason)
// when not root or a tool is missing.
func New(t testing.TB, opts Options) *LAN {
	t.Helper()
	if why := Missing(opts.IPv4); why != "" {
		t.Skip(why)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	lan, err := Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := lan.Close(); err != nil {
			t.Error(err)
		}
	})
	return lan
}
