package daemon

import (
	"net"

	"golang.org/x/sys/unix"
)

// listenUnixPrivate listens on a unix socket created under umask 0777 (mode 0000).
func listenUnixPrivate(path string) (net.Listener, error) {
	old := unix.Umask(0o777)
	defer unix.Umask(old)
	return net.Listen("unix", path)
}
