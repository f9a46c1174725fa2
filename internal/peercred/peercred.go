// Package peercred reads who is at the other end of a Unix socket connection (SO_PEERCRED):
// the daemon's API, the TLS fronts' feed and the namespace holder decide by it whom they serve.
package peercred

import (
	"fmt"
	"net"

	"golang.org/x/sys/unix"
)

// Of returns the process, user and group that connected c (as they were at connect time).
func Of(c *net.UnixConn) (*unix.Ucred, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("peercred: %w", err)
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return nil, fmt.Errorf("peercred: %w", err)
	}
	if credErr != nil {
		return nil, fmt.Errorf("peercred: %w", credErr)
	}
	return cred, nil
}
