package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"time"

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

// bootNetworksWait bounds how long the daemon's first pass waits for onionpod-networks.service.
const bootNetworksWait = 5 * time.Minute

// waitBootNetworks waits while onionpod-networks.service makes the apps' networks at boot (at
// most bootNetworksWait), before the daemon's first pass: a pass beside it finds apps half
// attached and attaches them again, the two processes taking turns on each app's lock (1000
// apps: most of them attached twice).
func (p *parts) waitBootNetworks(ctx context.Context, log *slog.Logger) {
	name := p.pods.netBoot
	if name == "" {
		return
	}
	start := time.Now()
	waited := false
	for time.Since(start) < bootNetworksWait {
		st, err := p.systemd.UnitStatus(ctx, name)
		if err != nil || st.ActiveState != "activating" {
			break
		}
		if !waited {
			log.Info("the apps' networks are being made at boot: the first pass waits", "unit", name)
			waited = true
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(250 * time.Millisecond):
		}
	}
	if waited {
		log.Info("the apps' networks made at boot: first pass", "waited", time.Since(start).Round(time.Millisecond))
	}
}
