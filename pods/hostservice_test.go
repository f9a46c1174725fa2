package pods

import (
	"errors"
	"testing"
)

// TestSandboxedHostService renders a sandboxed helper service, as the managed tor's: its own
// user, a read-only system but its data, the state dir hidden but the data dir and torrc.
func TestSandboxedHostService(t *testing.T) {
	u, err := HostService{
		Name: "sandboxed", ExecStart: []string{"/usr/sbin/tor", "-f", "/var/lib/onionpod/tor/torrc"}, Restart: "always",
		User: "debian-tor", Group: "debian-tor", Sandbox: true, AddressFamilies: []string{"AF_UNIX", "AF_INET", "AF_INET6"},
		ReadWritePaths: []string{"/run/onionpod/tor"}, RuntimeDirectories: []string{"/run/onionpod/tor"},
		TemporaryFileSystem: []string{"/var/lib/onionpod"},
		BindPaths:           []string{"/var/lib/onionpod/tor/data"}, BindReadOnlyPaths: []string{"/var/lib/onionpod/tor/torrc"},
	}.Unit()
	if err != nil {
		t.Fatal(err)
	}
	golden(t, u.Name, u.Content)

	for _, h := range []HostService{
		{Name: "x", ExecStart: []string{"/bin/true"}, ReadWritePaths: []string{"relative"}},
		{Name: "x", ExecStart: []string{"/bin/true"}, RuntimeDirectories: []string{"/var/lib/x"}},
		{Name: "x", ExecStart: []string{"/bin/true"}, RuntimeDirectories: []string{"/run/../etc"}},
		{Name: "x", ExecStart: []string{"/bin/true"}, BindPaths: []string{"/a:/b"}},
		{Name: "x", ExecStart: []string{"/bin/true"}, TemporaryFileSystem: []string{"/a\n[Service]"}},
		{Name: "x", ExecStart: []string{"/bin/true"}, BindReadOnlyPaths: []string{"/a b"}},
		{Name: "x", ExecStart: []string{"/bin/true"}, AddressFamilies: []string{"AF_INET AF_PACKET"}},
		{Name: "x", ExecStart: []string{"/bin/true"}, Group: "root\nUser=root"},
	} {
		if _, err := h.Unit(); !errors.Is(err, ErrBadInput) {
			t.Errorf("%+v: %v, want ErrBadInput", h, err)
		}
	}
}

// TestFrontLikeHostService renders a service in a pod's network namespace, as a dynamic user
// that gets one root-only file as a credential and nothing else of the state dir, and a
// sandboxed service that keeps one capability (the edge's :443).
func TestFrontLikeHostService(t *testing.T) {
	u, err := HostService{
		Name: "front-blog", ExecStart: []string{"/usr/bin/onionpod", "internal", "front", "blog"}, Restart: "always",
		DynamicUser: true, Sandbox: true, NetworkNamespacePath: "/run/netns/onionpod-blog",
		Credentials:         []Credential{{Name: "bundle", Path: "/var/lib/onionpod/tls/certs/blog.pem"}},
		TemporaryFileSystem: []string{"/var/lib/onionpod"},
		Requires:            []string{"onionpod-net-blog.service"}, PartOf: []string{"onionpod-pod-blog.service"},
	}.Unit()
	if err != nil {
		t.Fatal(err)
	}
	golden(t, u.Name, u.Content)
	edge, err := HostService{Name: "edge", ExecStart: []string{"/usr/bin/onionpod", "internal", "edge"},
		DynamicUser: true, Sandbox: true, Capabilities: []string{"CAP_NET_BIND_SERVICE"}}.Unit()
	if err != nil {
		t.Fatal(err)
	}
	golden(t, edge.Name, edge.Content)
	for _, h := range []HostService{
		{Name: "x", ExecStart: []string{"/bin/true"}, Credentials: []Credential{{Name: "a:b", Path: "/x"}}},
		{Name: "x", ExecStart: []string{"/bin/true"}, Credentials: []Credential{{Name: "a", Path: "x"}}},
		{Name: "x", ExecStart: []string{"/bin/true"}, NetworkNamespacePath: "/run/netns/a b"},
		{Name: "x", ExecStart: []string{"/bin/true"}, Capabilities: []string{"CAP_SYS_ADMIN CAP_NET_ADMIN"}},
		{Name: "x", ExecStart: []string{"/bin/true"}, Requires: []string{"a.service\nUser=root"}},
	} {
		if _, err := h.Unit(); !errors.Is(err, ErrBadInput) {
			t.Errorf("%+v: %v, want ErrBadInput", h, err)
		}
	}
}
