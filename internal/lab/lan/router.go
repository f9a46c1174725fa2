package lan

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/onionpod/onionpod/internal/atomicfile"
)

// radvdConfig renders radvd's configuration: the current prefix with normal lifetimes, and every
// retired prefix with zero lifetimes, so hosts deprecate their addresses in it at once.
func radvdConfig(current netip.Prefix, retired []netip.Prefix) string {
	var b strings.Builder
	fmt.Fprintf(&b, "interface %s {\n", bridgeName)
	b.WriteString("\tAdvSendAdvert on;\n")
	b.WriteString("\tMinRtrAdvInterval 3;\n")
	b.WriteString("\tMaxRtrAdvInterval 4;\n")
	// Solicited RAs are rate-limited to one per 3 s: radvd refuses less without Mobile IPv6.
	b.WriteString("\tMinDelayBetweenRAs 3;\n")
	fmt.Fprintf(&b, "\tprefix %s {\n\t\tAdvOnLink on;\n\t\tAdvAutonomous on;\n"+
		"\t\tAdvPreferredLifetime 14400;\n\t\tAdvValidLifetime 86400;\n\t};\n", current)
	for _, p := range retired {
		fmt.Fprintf(&b, "\tprefix %s {\n\t\tAdvOnLink on;\n\t\tAdvAutonomous on;\n"+
			"\t\tAdvPreferredLifetime 0;\n\t\tAdvValidLifetime 0;\n\t};\n", p)
	}
	b.WriteString("};\n")
	return b.String()
}

func (l *LAN) radvdConfPath() string { return filepath.Join(l.workDir, "radvd.conf") }

func (l *LAN) writeRadvdConfig() error {
	l.mu.Lock()
	conf := radvdConfig(l.prefix, l.retired)
	l.mu.Unlock()
	_, err := atomicfile.WriteFile(l.radvdConfPath(), []byte(conf), 0o600)
	return err
}

func (l *LAN) startRadvd() error {
	if err := l.writeRadvdConfig(); err != nil {
		return fmt.Errorf("lan: radvd config: %w", err)
	}
	// radvd forks a privilege-separation helper that outlives it and stays a zombie where PID 1
	// does not reap. As PID 1 of its own PID namespace, radvd takes the helper down with it and
	// the kernel reaps it; unshare stays our child and kills radvd if it dies itself.
	d, err := l.startDaemon("radvd", true, "unshare", "--pid", "--fork", "--kill-child",
		"radvd", "--nodaemon", "--config", l.radvdConfPath(),
		"--pidfile", filepath.Join(l.workDir, "radvd.pid"), "--logmethod", "stderr")
	if err != nil {
		return err
	}
	l.mu.Lock()
	l.radvd = d
	l.mu.Unlock()
	return nil
}

// ChangePrefix makes the router advertise newPrefix and withdraw the previous ones (lifetime 0),
// as a LAN does when the provider changes the delegated prefix. The router also takes newPrefix::1.
func (l *LAN) ChangePrefix(ctx context.Context, newPrefix netip.Prefix) error {
	if !newPrefix.Addr().Is6() || newPrefix.Bits() != 64 {
		return fmt.Errorf("lan: change prefix to %s: want an IPv6 /64", newPrefix)
	}
	newPrefix = newPrefix.Masked()
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return errors.New("lan: change prefix: LAN is closed")
	}
	old := l.prefix
	if newPrefix != old {
		l.retired = append(without(l.retired, newPrefix), old)
		l.prefix = newPrefix
	}
	radvd := l.radvd
	err := l.saveState()
	l.mu.Unlock()
	if err != nil {
		return fmt.Errorf("lan: change prefix: %w", err)
	}

	err = withHandle(l.lanNS, func(h *netlink.Handle) error {
		return addAddr(h, bridgeName, netip.PrefixFrom(hostAddr(newPrefix, 1), 64))
	})
	if err != nil {
		return fmt.Errorf("lan: change prefix: %w", err)
	}
	if err := l.writeRadvdConfig(); err != nil {
		return fmt.Errorf("lan: change prefix: %w", err)
	}
	if err := radvd.signal(syscall.SIGHUP); err != nil {
		return fmt.Errorf("lan: change prefix: reload radvd: %w", err)
	}
	return ctx.Err()
}

func without(ps []netip.Prefix, p netip.Prefix) []netip.Prefix {
	var out []netip.Prefix
	for _, q := range ps {
		if q != p {
			out = append(out, q)
		}
	}
	return out
}

func (l *LAN) startDnsmasq() error {
	d, err := l.startDaemon("dnsmasq", false, "dnsmasq",
		"--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
		"--port=0", "--user=root", "--group=root", "--pid-file",
		"--interface="+bridgeName, "--bind-interfaces", "--except-interface=lo",
		"--dhcp-range="+dhcpRangeLow+","+dhcpRangeTop+",255.255.255.0,1h",
		"--dhcp-authoritative", "--no-ping", "--log-dhcp", "--log-facility=-",
		"--dhcp-leasefile="+l.DHCPLeaseFile())
	if err != nil {
		return err
	}
	l.mu.Lock()
	l.dnsmasq = d
	l.mu.Unlock()
	return nil
}

// DHCPLease is one line of dnsmasq's lease file.
type DHCPLease struct {
	MAC      net.HardwareAddr
	Addr     netip.Addr
	ClientID string
}

// DHCPLeases lists the leases dnsmasq currently holds (none without IPv4).
func (l *LAN) DHCPLeases() ([]DHCPLease, error) {
	if !l.ipv4 {
		return nil, nil
	}
	f, err := os.Open(l.DHCPLeaseFile())
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("lan: leases: %w", err)
	}
	defer f.Close()
	var leases []DHCPLease
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// expiry mac ip hostname client-id
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mac, err1 := net.ParseMAC(fields[1])
		addr, err2 := netip.ParseAddr(fields[2])
		if err1 != nil || err2 != nil {
			continue
		}
		leases = append(leases, DHCPLease{MAC: mac, Addr: addr, ClientID: fields[4]})
	}
	return leases, sc.Err()
}

// ClientAddr waits until the client has a usable (not tentative, not deprecated) SLAAC address in
// the current prefix and returns it.
func (l *LAN) ClientAddr(ctx context.Context) (netip.Addr, error) {
	for {
		prefix := l.Prefix()
		var found netip.Addr
		err := withHandle(l.client, func(h *netlink.Handle) error {
			link, err := h.LinkByName(clientIfName)
			if err != nil {
				return err
			}
			addrs, err := h.AddrList(link, netlink.FAMILY_V6)
			if err != nil {
				return err
			}
			for _, a := range addrs {
				ip, ok := netip.AddrFromSlice(a.IP)
				if !ok || !prefix.Contains(ip) {
					continue
				}
				if a.Flags&(syscall.IFA_F_TENTATIVE|syscall.IFA_F_DEPRECATED|syscall.IFA_F_DADFAILED) == 0 && a.PreferedLft != 0 {
					found = ip
				}
			}
			return nil
		})
		if err != nil {
			return netip.Addr{}, fmt.Errorf("lan: client address: %w", err)
		}
		if found.IsValid() {
			return found, nil
		}
		select {
		case <-ctx.Done():
			return netip.Addr{}, fmt.Errorf("lan: client got no address in %s: %w", prefix, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}
