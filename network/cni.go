package network

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/ns"
)

// cniTimeout bounds one CNI call when the caller's context has no deadline: a DHCP server that
// never answers must not hang an attach.
const cniTimeout = 60 * time.Second

// boxExec runs CNI plugins inside the box namespace: the exec happens on a thread switched into
// it, and the child inherits that thread's namespace. So the Manager works on the box without
// the whole process having to live there.
type boxExec struct {
	box ns.NetNS
	raw invoke.RawExec
}

func (e *boxExec) ExecPlugin(ctx context.Context, pluginPath string, stdin []byte, environ []string) ([]byte, error) {
	var out []byte
	err := e.box.Do(func(ns.NetNS) error {
		var err error
		out, err = e.raw.ExecPlugin(ctx, pluginPath, stdin, environ)
		return err
	})
	return out, err
}

func (e *boxExec) FindInPath(plugin string, paths []string) (string, error) {
	return invoke.FindInPath(plugin, paths)
}

func (e *boxExec) Decode(jsonBytes []byte) (version.PluginInfo, error) {
	return (&version.PluginDecoder{}).Decode(jsonBytes)
}

// findPlugins fails with ErrPluginMissing naming the first plugin not found and the dirs searched.
func (m *Manager) findPlugins(plugins ...string) error {
	for _, p := range plugins {
		if _, err := invoke.FindInPath(p, m.cfg.CNIPaths); err != nil {
			return fmt.Errorf("CNI plugin %q not found in %s: %w", p, strings.Join(m.cfg.CNIPaths, ", "), ErrPluginMissing)
		}
	}
	return nil
}

func (m *Manager) runtimeConf(l *lease, netnsPath string) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{ContainerID: containerIDPre + l.App, NetNS: netnsPath, IfName: podIfName}
}

func withCNITimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, cniTimeout)
}

// macBusyWait bounds how long an attach waits for the kernel to free the pod's MAC.
const macBusyWait = 3 * time.Second

// cniAdd runs CNI ADD of the lease's conflist (libcni caches the result for CHECK and DEL).
//
// The MAC is the app's, always: if an old macvlan with it still exists in a namespace the kernel
// is destroying (one deleted behind our back, not by Detach, which Attach waits for), macvlan
// refuses to come up with "address already in use". The plugin removes its half-made link; we try
// again until the kernel is done.
func (m *Manager) cniAdd(ctx context.Context, l *lease) error {
	list, err := libcni.ConfListFromBytes(l.Conflist)
	if err != nil {
		return fmt.Errorf("conflist: %w", err)
	}
	ctx, cancel := withCNITimeout(ctx)
	defer cancel()
	deadline := time.Now().Add(macBusyWait)
	for wait := 10 * time.Millisecond; ; wait *= 2 {
		_, err := m.cni.AddNetworkList(ctx, list, m.runtimeConf(l, l.Netns))
		if err == nil {
			return nil
		}
		if !strings.Contains(err.Error(), "address already in use") || time.Now().Add(wait).After(deadline) {
			return fmt.Errorf("CNI ADD: %w", err)
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return fmt.Errorf("CNI ADD: %w", err)
		}
	}
}

// cniDel runs CNI DEL of conflist (the lease's, normally) against netnsPath, which may be gone
// already: the plugins then only release their IPAM state.
func (m *Manager) cniDel(ctx context.Context, l *lease, netnsPath string, conflist []byte) error {
	if len(conflist) == 0 {
		return nil
	}
	list, err := libcni.ConfListFromBytes(conflist)
	if err != nil {
		return fmt.Errorf("conflist: %w", err)
	}
	ctx, cancel := withCNITimeout(ctx)
	defer cancel()
	if err := m.cni.DelNetworkList(ctx, list, m.runtimeConf(l, netnsPath)); err != nil {
		return fmt.Errorf("CNI DEL: %w", err)
	}
	return nil
}

func (m *Manager) cniCheck(ctx context.Context, l *lease) error {
	list, err := libcni.ConfListFromBytes(l.Conflist)
	if err != nil {
		return fmt.Errorf("conflist: %w", err)
	}
	ctx, cancel := withCNITimeout(ctx)
	defer cancel()
	if err := m.cni.CheckNetworkList(ctx, list, m.runtimeConf(l, l.Netns)); err != nil {
		return fmt.Errorf("CNI CHECK: %w", err)
	}
	return nil
}

// cachedConflist is the configuration of l's last CNI ADD, from libcni's cache (nil if none).
func (m *Manager) cachedConflist(l *lease) []byte {
	conf, _, err := m.cni.GetNetworkListCachedConfig(&libcni.NetworkConfigList{Name: networkName}, m.runtimeConf(l, l.Netns))
	if err != nil {
		return nil
	}
	return conf
}

// cachedIPv4 is the IPv4 address of the last ADD, from libcni's cache.
func (m *Manager) cachedIPv4(l *lease) netip.Addr {
	if !l.IPv4 || len(l.Conflist) == 0 {
		return netip.Addr{}
	}
	list, err := libcni.ConfListFromBytes(l.Conflist)
	if err != nil {
		return netip.Addr{}
	}
	res, err := m.cni.GetNetworkListCachedResult(list, m.runtimeConf(l, l.Netns))
	if err != nil || res == nil {
		return netip.Addr{}
	}
	return resultIPv4(res)
}

func resultIPv4(res types.Result) netip.Addr {
	if res == nil {
		return netip.Addr{}
	}
	r, err := current.NewResultFromResult(res)
	if err != nil {
		return netip.Addr{}
	}
	for _, ipc := range r.IPs {
		if a, ok := netip.AddrFromSlice(ipc.Address.IP.To4()); ok && ipc.Address.IP.To4() != nil {
			return a
		}
	}
	return netip.Addr{}
}
