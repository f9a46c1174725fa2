package network

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// resolveUplink turns the configured uplink into a link name in the box: "auto" is the link of
// the box's default route (IPv6 first, then IPv4, lowest metric).
func (m *Manager) resolveUplink() (string, error) {
	if m.cfg.Uplink != autoUplink {
		return m.cfg.Uplink, nil
	}
	var name string
	err := m.inBox(func(h *netlink.Handle) error {
		for _, family := range []int{netlink.FAMILY_V6, netlink.FAMILY_V4} {
			routes, err := h.RouteListFiltered(family, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
			if err != nil {
				return err
			}
			best := -1
			for i, r := range routes {
				if !isDefault(r) || r.LinkIndex == 0 {
					continue
				}
				if best < 0 || r.Priority < routes[best].Priority {
					best = i
				}
			}
			if best >= 0 {
				link, err := h.LinkByIndex(routes[best].LinkIndex)
				if err != nil {
					return err
				}
				name = link.Attrs().Name
				return nil
			}
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("uplink auto: %w", err)
	}
	if name == "" {
		return "", fmt.Errorf("uplink auto: the box has no default route yet (set the uplink explicitly): %w", ErrUplink)
	}
	return name, nil
}

func isDefault(r netlink.Route) bool {
	if r.Dst == nil {
		return true
	}
	ones, _ := r.Dst.Mask.Size()
	return ones == 0
}

// checkUplink refuses links that cannot carry macvlan, with the reason.
func (m *Manager) checkUplink(name string) error {
	var link netlink.Link
	err := m.inBox(func(h *netlink.Handle) error {
		var err error
		link, err = h.LinkByName(name)
		return err
	})
	var notFound netlink.LinkNotFoundError
	if errors.As(err, &notFound) {
		return fmt.Errorf("uplink %q: no such link in the box's network namespace: %w", name, ErrUplink)
	}
	if err != nil {
		return fmt.Errorf("uplink %q: %w", name, err)
	}
	attrs := link.Attrs()
	if attrs.EncapType != "ether" || attrs.Flags&unix.IFF_LOOPBACK != 0 || len(attrs.HardwareAddr) != 6 {
		return fmt.Errorf("uplink %q is a %q link, not Ethernet: %w", name, attrs.EncapType, ErrUplink)
	}
	m.mu.Lock()
	wireless, known := m.wireless[attrs.Index]
	m.mu.Unlock()
	if !known {
		if wireless, err = m.isWireless(name); err != nil {
			return fmt.Errorf("uplink %q: %w", name, err)
		}
		m.mu.Lock()
		m.wireless[attrs.Index] = wireless
		m.mu.Unlock()
	}
	if wireless {
		return fmt.Errorf("uplink %q is a wireless interface: Wi-Fi in client (managed) mode "+
			"drops frames from the pods' own MAC addresses, so it cannot carry macvlan; "+
			"use a wired interface: %w", name, ErrUplink)
	}
	return nil
}

// isWireless looks the link up in the box's /proc/net/wireless (the kernel lists every wireless
// interface of the namespace there when cfg80211's wext compatibility is built, as on Debian).
func (m *Manager) isWireless(name string) (bool, error) {
	var found bool
	err := m.boxDo(func() error {
		f, err := os.Open("/proc/thread-self/net/wireless")
		if errors.Is(err, os.ErrNotExist) {
			return nil // no cfg80211: no wireless interfaces
		}
		if err != nil {
			return err
		}
		defer f.Close()
		names, err := wirelessInterfaces(f)
		for _, n := range names {
			found = found || n == name
		}
		return err
	})
	return found, err
}

// wirelessInterfaces parses /proc/net/wireless: two header lines, then "  wlan0: 0000 ...".
func wirelessInterfaces(r io.Reader) ([]string, error) {
	var names []string
	sc := bufio.NewScanner(r)
	for line := 0; sc.Scan(); line++ {
		if line < 2 {
			continue
		}
		name, _, ok := strings.Cut(sc.Text(), ":")
		if name = strings.TrimSpace(name); ok && name != "" {
			names = append(names, name)
		}
	}
	return names, sc.Err()
}

// sysctlBool renders a boolean sysctl value.
func sysctlBool(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// UplinkHasIPv6 reports whether the LAN advertises an IPv6 prefix, as the box's uplink has seen
// it (router advertisement): every LAN pod then gets an address of it by SLAAC, and a pod that has
// none yet is still on its way. On an IPv6-less LAN, or before the first advertisement, false.
func (m *Manager) UplinkHasIPv6() (bool, error) {
	name, err := m.resolveUplink()
	if err != nil {
		return false, fmt.Errorf("network: %w", err)
	}
	_, ok := m.advertisedPrefix(name)
	return ok, nil
}
