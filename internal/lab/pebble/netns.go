package pebble

import (
	"context"
	"net"

	"github.com/onionpod/onionpod/internal/netnsfile"
)

// dialIn connects from inside the network namespace at path: the socket is made there, and then
// works from anywhere.
func dialIn(ctx context.Context, path, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := netnsfile.Do(path, func() error {
		var err error
		c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
		return err
	})
	return c, err
}
