package peercred

import (
	"net"
	"os"
	"path/filepath"
	"testing"
)

// TestOfNamesTheConnectingProcess: both ends of a connection see this process, its user and
// its group.
func TestOfNamesTheConnectingProcess(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	client, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := l.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	for _, c := range []*net.UnixConn{server, client} {
		cred, err := Of(c)
		if err != nil {
			t.Fatal(err)
		}
		if int(cred.Pid) != os.Getpid() || int(cred.Uid) != os.Getuid() || int(cred.Gid) != os.Getgid() {
			t.Errorf("peer %+v, want pid %d uid %d gid %d", cred, os.Getpid(), os.Getuid(), os.Getgid())
		}
	}
}
