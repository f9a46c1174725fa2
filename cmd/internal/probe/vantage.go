package probe

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/onionpod/onionpod/internal/netnsfile"
	"github.com/onionpod/onionpod/network"
)

// Vantage is a LAN host of the box's own, from which clearnet probes start: a network namespace
// holding a macvlan on the uplink (mode bridge, as the pods have), which configures itself from
// the LAN's router advertisements. The box itself cannot reach its pods' LAN addresses (a
// macvlan master never talks to its own macvlan children); from the vantage point the pods are
// neighbours on the LAN, reached as a visitor's device reaches them.
type Vantage struct {
	// Netns is the path of the vantage point's namespace file.
	Netns string
}

// VantageOptions say where the vantage point goes.
type VantageOptions struct {
	// Uplink is the box's LAN interface, or "auto" (or "") for the link of its default route.
	Uplink string
	// Netns is the path of the namespace file to create (an existing one is replaced).
	Netns string
	// Box is the namespace the uplink is in (a netns file); "" is the calling thread's.
	Box string
	// IPv4 is an optional static address with prefix length for IPv4 probes ("192.0.2.250/24");
	// without it IPv4 probes report that the vantage point has no IPv4 address.
	IPv4 netip.Prefix
}

// vantageIf is the vantage point's interface inside its namespace.
const vantageIf = "eth0"

// vantageMACName gives the vantage point its MAC (so its SLAAC address is stable): derived as a
// pod's is, from a name no app can have.
const vantageMACName = "onionpod_probe"

// OpenVantage creates the vantage point's namespace and macvlan, up and autoconfiguring. It
// returns at once: the LAN address comes with the next router advertisement (the interface
// solicits one), usually within a second; Dial says so until then.
func OpenVantage(opts VantageOptions) (_ *Vantage, err error) {
	box, err := openNS(opts.Box)
	if err != nil {
		return nil, fmt.Errorf("probe: vantage: %w", err)
	}
	defer box.Close()
	h, err := netlink.NewHandleAt(box)
	if err != nil {
		return nil, fmt.Errorf("probe: vantage: %w", err)
	}
	defer h.Close()
	uplink, err := findUplink(h, opts.Uplink)
	if err != nil {
		return nil, fmt.Errorf("probe: vantage: %w", err)
	}
	if err := removeNetns(opts.Netns); err != nil {
		return nil, fmt.Errorf("probe: vantage: %w", err)
	}
	if err := netnsfile.Create(opts.Netns, setupVantageNetns); err != nil {
		return nil, fmt.Errorf("probe: vantage: %w", err)
	}
	defer func() {
		if err != nil {
			netnsfile.Remove(opts.Netns)
		}
	}()
	if err := addVantageMacvlan(h, uplink, opts.Netns); err != nil {
		return nil, fmt.Errorf("probe: vantage: %w", err)
	}
	err = netnsfile.Do(opts.Netns, func() error { return upVantageIf(opts.IPv4) })
	if err != nil {
		return nil, fmt.Errorf("probe: vantage: %w", err)
	}
	return &Vantage{Netns: opts.Netns}, nil
}

// removeNetns removes what is at path: a namespace file (unmounted), or a stale plain file.
func removeNetns(path string) error {
	if netnsfile.Exists(path) {
		return netnsfile.Remove(path)
	}
	os.Remove(path) // a stale plain file
	return nil
}

// setupVantageNetns runs in the new namespace: a host, not a router, that autoconfigures its
// stable address from router advertisements at once (no DAD, no temporary address), and lo up.
func setupVantageNetns() error {
	for k, v := range map[string]string{
		"net/ipv6/conf/all/forwarding":        "0",
		"net/ipv6/conf/default/accept_ra":     "1",
		"net/ipv6/conf/default/autoconf":      "1",
		"net/ipv6/conf/default/accept_dad":    "0",
		"net/ipv6/conf/default/use_tempaddr":  "0",
		"net/ipv6/conf/default/addr_gen_mode": "0",
	} {
		if err := netnsfile.Sysctl(k, v); err != nil {
			return err
		}
	}
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return err
	}
	return netlink.LinkSetUp(lo)
}

// addVantageMacvlan adds the vantage point's macvlan on uplink (h's namespace) and moves it
// into the namespace at path, as vantageIf with the vantage point's MAC.
func addVantageMacvlan(h *netlink.Handle, uplink netlink.Link, path string) error {
	target, err := netns.GetFromPath(path)
	if err != nil {
		return err
	}
	defer target.Close()
	mv := &netlink.Macvlan{
		LinkAttrs: netlink.LinkAttrs{Name: vantageIf, ParentIndex: uplink.Attrs().Index,
			HardwareAddr: network.PredictMAC(vantageMACName), Namespace: netlink.NsFd(target)},
		Mode: netlink.MACVLAN_MODE_BRIDGE,
	}
	if err := h.LinkAdd(mv); err != nil {
		return fmt.Errorf("macvlan on %s: %w", uplink.Attrs().Name, err)
	}
	return nil
}

// upVantageIf runs in the vantage point's namespace: it gives vantageIf the static IPv4
// address, if any, and brings it up.
func upVantageIf(ipv4 netip.Prefix) error {
	link, err := netlink.LinkByName(vantageIf)
	if err != nil {
		return err
	}
	if ipv4.IsValid() {
		if !ipv4.Addr().Is4() {
			return fmt.Errorf("ipv4 %s is not an IPv4 prefix", ipv4)
		}
		a := &netlink.Addr{IPNet: &net.IPNet{IP: ipv4.Addr().AsSlice(), Mask: net.CIDRMask(ipv4.Bits(), 32)}}
		if err := netlink.AddrAdd(link, a); err != nil {
			return err
		}
	}
	return netlink.LinkSetUp(link)
}

func openNS(path string) (netns.NsHandle, error) {
	if path == "" {
		return netns.GetFromPath("/proc/thread-self/ns/net")
	}
	return netns.GetFromPath(path)
}

// findUplink is the named link, or for "auto" the link of the default route (IPv6 first).
func findUplink(h *netlink.Handle, name string) (netlink.Link, error) {
	if name != "" && name != "auto" {
		l, err := h.LinkByName(name)
		if err != nil {
			return nil, fmt.Errorf("uplink %s: %w", name, err)
		}
		return l, nil
	}
	for _, family := range []int{netlink.FAMILY_V6, netlink.FAMILY_V4} {
		routes, err := h.RouteListFiltered(family, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
		if err != nil {
			return nil, err
		}
		for _, r := range routes {
			if r.LinkIndex != 0 && isDefaultRoute(r) {
				return h.LinkByIndex(r.LinkIndex)
			}
		}
	}
	return nil, errors.New("uplink auto: no default route (set network.uplink)")
}

func isDefaultRoute(r netlink.Route) bool {
	if r.Dst == nil {
		return true
	}
	ones, _ := r.Dst.Mask.Size()
	return ones == 0
}

// Addrs are the vantage point's global addresses now.
func (v *Vantage) Addrs() (v6, v4 netip.Addr, err error) {
	err = netnsfile.Do(v.Netns, func() error {
		link, err := netlink.LinkByName(vantageIf)
		if err != nil {
			return err
		}
		addrs, err := netlink.AddrList(link, netlink.FAMILY_ALL)
		if err != nil {
			return err
		}
		for _, a := range addrs {
			ip, ok := netip.AddrFromSlice(a.IP)
			if !ok || !ip.IsGlobalUnicast() && !ip.IsPrivate() {
				continue
			}
			ip = ip.Unmap()
			if ip.Is4() && !v4.IsValid() {
				v4 = ip
			}
			if ip.Is6() && !v6.IsValid() && a.Flags&unix.IFA_F_TENTATIVE == 0 {
				v6 = ip
			}
		}
		return nil
	})
	return v6, v4, err
}

// DialContext connects from the vantage point (the socket is made in its namespace).
func (v *Vantage) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	v6, v4, err := v.Addrs()
	if err != nil {
		return nil, &hopError{hop: HopVantage, err: fmt.Errorf("LAN vantage point: %w", err)}
	}
	if network == "tcp6" && !v6.IsValid() {
		return nil, &hopError{hop: HopVantage, err: errors.New("the LAN vantage point has no IPv6 address (no router advertisement yet?)")}
	}
	if network == "tcp4" && !v4.IsValid() {
		return nil, &hopError{hop: HopVantage, err: errors.New("the LAN vantage point has no IPv4 address (probes.lan_ipv4)")}
	}
	var conn net.Conn
	err = netnsfile.Do(v.Netns, func() error {
		var d net.Dialer
		var err error
		conn, err = d.DialContext(ctx, network, addr)
		return err
	})
	return conn, err
}

// WaitReady waits until the vantage point has an IPv6 address (or ctx ends).
func (v *Vantage) WaitReady(ctx context.Context) error {
	for {
		v6, _, err := v.Addrs()
		if err == nil && v6.IsValid() {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("probe: vantage: no IPv6 address: %w", ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Close removes the vantage point (its namespace and macvlan).
func (v *Vantage) Close() error { return netnsfile.Remove(v.Netns) }
