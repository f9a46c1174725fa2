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
		ReadWritePaths: []string{"/run/onionpod/tor"}, TemporaryFileSystem: []string{"/var/lib/onionpod"},
		BindPaths: []string{"/var/lib/onionpod/tor/data"}, BindReadOnlyPaths: []string{"/var/lib/onionpod/tor/torrc"},
	}.Unit()
	if err != nil {
		t.Fatal(err)
	}
	golden(t, u.Name, u.Content)

	for _, h := range []HostService{
		{Name: "x", ExecStart: []string{"/bin/true"}, ReadWritePaths: []string{"relative"}},
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
