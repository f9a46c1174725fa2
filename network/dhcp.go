package network

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"time"
)

// dhcpProbeTimeout bounds the check that the DHCP daemon answers: a missing daemon is an error at
// once, never a hang.
const dhcpProbeTimeout = time.Second

// DHCPDaemonCommand is the argv of the CNI DHCP daemon that IPv4 pods need: the dhcp plugin in
// pluginDir run as "dhcp daemon -socketpath socketPath". Run it in the box's network namespace
// (as a systemd unit in production; a socket unit on the same path works too, the daemon accepts
// socket activation). It keeps the leases in memory: restarting it forgets them.
func DHCPDaemonCommand(pluginDir, socketPath string) []string {
	return []string{filepath.Join(pluginDir, "dhcp"), "daemon", "-socketpath", socketPath}
}

// probeDHCP fails fast with ErrDHCPDaemon when nothing accepts connections on the daemon socket.
func (m *Manager) probeDHCP(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, dhcpProbeTimeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", m.cfg.DHCPSocket)
	if err != nil {
		return fmt.Errorf("IPv4 needs the CNI DHCP daemon (%q), but %s does not answer: %w: %w",
			DHCPDaemonCommand("PLUGINDIR", m.cfg.DHCPSocket), m.cfg.DHCPSocket, ErrDHCPDaemon, err)
	}
	return conn.Close()
}
