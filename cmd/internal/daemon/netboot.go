package daemon

import (
	"context"
	"fmt"

	"github.com/onionpod/onionpod/pods"
)

// netBootService is onionpod-networks.service: at boot, `onionpod internal net-boot` makes every
// app's network in one process, a few apps at a time, before the apps' network units
// (pods.Spec.NetBoot), which systemd then skips where it made the namespace. Without it each
// network unit starts an onionpod process of its own: with 1000 apps, those 1000 process starts
// were half of the boot's CPU (profiled). The network units stay: an app it could not attach is
// tried again by its own unit, which fails or succeeds on its own.
//
// The daemon writes and enables it and never starts it: it runs at boot only (the daemon, once
// running, attaches the apps itself), and nothing wants it but multi-user.target.
func netBootService(self, configPath string, after []string) pods.HostService {
	return pods.HostService{
		Name: "networks", Description: "onionpod's networks of the apps at boot",
		Type: "oneshot", RemainAfterExit: true, Restart: "no",
		ExecStart: []string{self, "--config", configPath, "internal", "net-boot"},
		Wants:     after,
		// The LAN, the namespaces' holder, and the CNI DHCP daemon where apps have IPv4.
		After: append([]string{"network.target", pods.HostService{Name: "dhcp"}.UnitName()}, after...),
	}
}

// ensureNetBoot installs onionpod-networks.service (without starting it) and orders the apps'
// network units after it.
func (p *parts) ensureNetBoot(ctx context.Context, self, configPath string) error {
	unit, err := netBootService(self, configPath, p.pods.netAfter).Unit()
	if err != nil {
		return fmt.Errorf("daemon: boot networks: %w", err)
	}
	if err := p.systemd.Install(ctx, unit); err != nil {
		return fmt.Errorf("daemon: boot networks: %w", err)
	}
	p.pods.netBoot = unit.Name
	return nil
}
