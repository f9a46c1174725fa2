package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/onionpod/onionpod/configs"
	"github.com/onionpod/onionpod/internal/netnsfile"
	"github.com/onionpod/onionpod/network"
	"github.com/onionpod/onionpod/pods"
)

// netnsHolder is onionpod-netns.service, the holder of the pods' network namespaces: a process
// in a mount namespace of its own, with a tmpfs where the namespaces are bind-mounted, and
// network.netns_dir a symlink into it (netnsfile.Hold). Bind mounts under /run/netns would sit
// in PID 1's mount table, which systemd copies into every pod unit's mount namespace at each
// start: +0.05-0.09 ms per pod on the box for every start (BenchmarkUnitStartOverMounts).
//
// A pod's namespace lives as long as its processes or its name in the holder do. When the
// holder is replaced (killed, or its unit changed by an upgrade), the names are gone with its
// tmpfs: the daemon then exits (Run returns an error; systemd restarts it), and a starting
// daemon names the running pods' namespaces again from their processes (repin). Pods that do not
// run lost theirs and get a new one, as after a reboot.
type netnsHolder struct {
	link string // network.netns_dir
	pid  int    // the holder the names were made in (0: no holder, network.netns_dir is a directory)
}

// netnsHolderService is the holder's unit: the onionpod binary's netns-holder command, started
// before every network unit (pods.Spec.NetAfter), Type=notify so that they find the link.
func netnsHolderService(self, link string) pods.HostService {
	inner := link + ".held"
	return pods.HostService{
		Name: "netns", Description: "onionpod's holder of the pods' network namespaces",
		Type: "notify", ExecStart: []string{self, "internal", "netns-holder", inner, link}, Restart: "always",
		OwnTmpfs: []string{inner},
	}
}

// ensureNetnsHolder starts the holder (a no-op when running and unchanged), moves namespaces an
// older onionpod named under /run/netns into it, and names the running pods' namespaces that
// have no name. A network.netns_dir that is a directory keeps the namespaces there, in PID 1's
// mount table (what a config that set /run/netns asks for).
func (p *parts) ensureNetnsHolder(ctx context.Context, cfg *configs.Config, self string, log *slog.Logger) error {
	link := cfg.Network.NetnsDir
	p.netns = &netnsHolder{link: link}
	if fi, err := os.Lstat(link); err == nil && fi.IsDir() {
		log.Info("network.netns_dir is a directory: the pods' namespaces are mounted in PID 1's mount table (each pod start costs more per pod)",
			"netns_dir", link)
		return nil
	}
	svc := netnsHolderService(self, link)
	if err := os.MkdirAll(svc.OwnTmpfs[0], 0o755); err != nil {
		return fmt.Errorf("daemon: netns holder: %w", err)
	}
	unit, err := svc.Unit()
	if err != nil {
		return fmt.Errorf("daemon: netns holder: %w", err)
	}
	if err := p.systemd.Apply(ctx, unit); err != nil {
		return fmt.Errorf("daemon: netns holder: %w", err)
	}
	st, err := p.systemd.UnitStatus(ctx, unit.Name)
	if err != nil {
		return fmt.Errorf("daemon: netns holder: %w", err)
	}
	if st.MainPID == 0 || netnsfile.HolderPID(link) != st.MainPID {
		return fmt.Errorf("daemon: netns holder: %s (pid %d) did not point %s at itself", unit.Name, st.MainPID, link)
	}
	p.netns.pid = st.MainPID
	p.pods.netAfter = []string{unit.Name}
	if link != legacyNetnsDir {
		if err := moveNamespaces(legacyNetnsDir, link, log); err != nil {
			return fmt.Errorf("daemon: netns holder: %w", err)
		}
	}
	return p.repinRunningPods(ctx, log)
}

// legacyNetnsDir is where onionpod named the pods' namespaces before the holder.
const legacyNetnsDir = "/run/netns"

// moveNamespaces names the onionpod namespaces of from (onionpod-APP, onionpod_probe) in to
// instead: a running pod keeps its namespace, now out of PID 1's mount table.
func moveNamespaces(from, to string, log *slog.Logger) error {
	entries, err := os.ReadDir(from)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range entries {
		old, now := filepath.Join(from, e.Name()), filepath.Join(to, e.Name())
		if !strings.HasPrefix(e.Name(), "onionpod") || !netnsfile.Exists(old) {
			continue
		}
		if _, err := os.Lstat(now); err != nil {
			if err := netnsfile.Pin(now, old); err != nil {
				return err
			}
		}
		if err := netnsfile.Remove(old); err != nil {
			return err
		}
		log.Info("network namespace moved into the holder", "from", old, "to", now)
	}
	return nil
}

// repinRunningPods names again, from one of its processes, the namespace of every pod that runs
// and whose name is gone (its holder was replaced).
func (p *parts) repinRunningPods(ctx context.Context, log *slog.Logger) error {
	states, err := p.systemd.PodStates(ctx)
	if err != nil {
		return fmt.Errorf("daemon: netns holder: %w", err)
	}
	var host unix.Stat_t
	if err := unix.Stat("/proc/self/ns/net", &host); err != nil {
		return fmt.Errorf("daemon: netns holder: %w", err)
	}
	done := map[string]bool{}
	var errs []error
	for ref, st := range states {
		path := network.NetnsPath(p.netns.link, ref.App)
		if done[ref.App] || st.ActiveState != "active" || netnsfile.Exists(path) {
			continue
		}
		full, err := p.systemd.UnitStatus(ctx, st.Unit)
		if err != nil || full.MainPID == 0 {
			continue
		}
		source := fmt.Sprintf("/proc/%d/ns/net", full.MainPID)
		var ns unix.Stat_t
		if err := unix.Stat(source, &ns); err != nil || ns.Ino == host.Ino {
			continue // gone meanwhile, or not in a namespace of its own
		}
		os.Remove(path) // a name left without its mount
		if err := netnsfile.Pin(path, source); err != nil {
			errs = append(errs, fmt.Errorf("app %s: %w", ref.App, err))
			continue
		}
		done[ref.App] = true
		log.Info("a running pod's network namespace named again in the holder", "app", ref.App, "pid", full.MainPID)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("daemon: netns holder: %w", err)
	}
	return nil
}

// stillHeld fails once the holder the names were made in is no longer the one network.netns_dir
// points at: they are gone with its tmpfs, and a new daemon names the running pods' again.
func (h *netnsHolder) stillHeld() error {
	if h == nil || h.pid == 0 {
		return nil
	}
	if now := netnsfile.HolderPID(h.link); now != h.pid {
		return fmt.Errorf("daemon: the holder of the pods' network namespaces changed (pid %d, now %d): exiting, to name them again on restart", h.pid, now)
	}
	return nil
}
