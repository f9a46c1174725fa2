package network

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// The pod's firewall is one nftables table ("onionpod", family inet) in the pod's own network
// namespace, written whole in one transaction when the namespace is created, and again by every
// Attach that finds it missing or different (the old table deleted and the new one written in one
// transaction: atomic, and conntrack keeps the connections already redirected). It lives in the pod's namespace rather than in the host's on purpose:
//
//   - the pod cannot change it: its processes have no CAP_NET_ADMIN over a namespace owned by the
//     host's user namespace;
//   - nothing on the host can take it away either: a host firewall that starts with `flush
//     ruleset` (Debian's /etc/nftables.conf) or reloads at boot after the pods' network units
//     flushes the host's namespace only, so there is no window and no ordering to get right;
//   - it is there before the pod's first link and goes with the namespace: nothing to clean up,
//     nothing of onionpod's in the host's ruleset.
//
// Its three jobs:
//
//  1. publish: a connection from the LAN to a public port (TCP or UDP, IPv6 or IPv4) is marked
//     published and redirected to the target port, so http://blog.ZONE/ answers as
//     http://X.onion/ does. The host's own connections (tor's, from prefix::1 to [ULA]:TARGET)
//     are left alone.
//  2. inbound: with published ports, only they (and replies, ICMP, and the host on the ULA) get
//     in; an app's other ports are not on the clearnet. An onion-only pod lets in the host only.
//  3. outbound: the pod opens no connection to the host (replies flow, so tor still reaches it).
//     An onion-only pod's only peer is the host: every new connection is refused. A LAN pod
//     reaches the host only through the shim, whose addresses are prefix::1 (in the ULA prefix)
//     and a link-local one: new connections to the ULA prefix and to fe80::/10 are refused, and
//     new flows to broadcast and multicast addresses (which the shim hears too) are dropped. The
//     shim answers no ARP (arp_ignore=1, shim.go), so the host's IPv4 addresses are out of reach.
const (
	fwTable    = "onionpod"
	fwPublish  = "publish"  // nat prerouting
	fwInbound  = "inbound"  // filter input
	fwOutbound = "outbound" // filter output
	fwRefuse   = "refuse"   // TCP reset, or ICMP port unreachable: what a closed port answers

	fwVersion      = 1
	fwMarkerPrefix = "onionpod firewall "
	fwPortPrefix   = "onionpod port "
)

// firewall is what a pod's ruleset is made of.
type firewall struct {
	ula       netip.Addr   // the pod's
	prefix    netip.Prefix // the ULA prefix; the host is prefix::1
	onionOnly bool
	ports     []PortMap // sorted by public port
}

func (m *Manager) firewallFor(l *lease, ports []PortMap) firewall {
	return firewall{ula: l.ULA, prefix: m.cfg.ULAPrefix, onionOnly: l.OnionOnly, ports: sortedPorts(ports)}
}

// marker identifies the whole ruleset (layout version, addresses, ports): it is the comment of
// the publish chain's first rule, so one read tells whether the ruleset in place is this one.
func (f firewall) marker() string {
	h := sha256.New()
	fmt.Fprintf(h, "v%d|%s|%s|%t", fwVersion, f.ula, f.prefix, f.onionOnly)
	for _, p := range f.ports {
		fmt.Fprintf(h, "|%d:%d", p.Public, p.Target)
	}
	return fmt.Sprintf("%sv%d %s", fwMarkerPrefix, fwVersion, hex.EncodeToString(h.Sum(nil)[:8]))
}

// firewallState is what a pod's namespace holds: the marker and the published ports (nil if no
// ruleset of ours is there).
type firewallState struct {
	present bool
	marker  string
	ports   []PortMap
}

// holds reports whether the namespace holds exactly ruleset f.
func (s firewallState) holds(f firewall) bool { return s.present && s.marker == f.marker() }

// applyFirewall writes ruleset f into the namespace at nsPath; replace removes a previous one in
// the same transaction. Only replacing costs: a transaction that deletes waits for the kernel's
// RCU grace period (some 10 ms here, against under 1 ms to write the ruleset into a namespace
// that has none; BenchmarkFirewall).
func applyFirewall(nsPath string, f firewall, replace bool) error {
	return withNftables(nsPath, func(c *nftables.Conn) error {
		t := &nftables.Table{Name: fwTable, Family: nftables.TableFamilyINet}
		if replace {
			c.AddTable(t) // so that the delete finds it
			c.DelTable(t)
		}
		c.AddTable(t)
		f.write(c, t)
		if err := c.Flush(); err != nil {
			return fmt.Errorf("pod firewall: %w", err)
		}
		return nil
	})
}

// ensureFirewall writes ruleset f into the namespace at nsPath unless it holds it already.
func ensureFirewall(nsPath string, f firewall) error {
	st, err := readFirewall(nsPath)
	if err == nil && st.holds(f) {
		return nil
	}
	return applyFirewall(nsPath, f, err != nil || st.present)
}

// readFirewall reads back what ruleset of ours the namespace at nsPath holds.
func readFirewall(nsPath string) (firewallState, error) {
	var st firewallState
	err := withNftables(nsPath, func(c *nftables.Conn) error {
		tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
		if err != nil {
			return err
		}
		var t *nftables.Table
		for _, tt := range tables {
			if tt.Name == fwTable {
				t = tt
			}
		}
		if t == nil {
			return nil
		}
		rules, err := c.GetRules(t, &nftables.Chain{Name: fwPublish, Table: t})
		if err != nil {
			return err
		}
		st.present = true
		for _, r := range rules {
			comment, _ := userdata.GetString(r.UserData, userdata.TypeComment)
			if p, ok := parsePortComment(comment); ok {
				st.ports = append(st.ports, p)
			} else if strings.HasPrefix(comment, fwMarkerPrefix) {
				st.marker = comment
			}
		}
		st.ports = sortedPorts(st.ports)
		return nil
	})
	if err != nil {
		return firewallState{}, fmt.Errorf("pod firewall: %w", err)
	}
	return st, nil
}

func withNftables(nsPath string, fn func(c *nftables.Conn) error) error {
	nsh, err := netns.GetFromPath(nsPath)
	if err != nil {
		return fmt.Errorf("open pod netns: %w", err)
	}
	defer nsh.Close()
	c, err := nftables.New(nftables.WithNetNSFd(int(nsh)))
	if err != nil {
		return err
	}
	return fn(c)
}

func portComment(p PortMap) string { return fmt.Sprintf("%s%d:%d", fwPortPrefix, p.Public, p.Target) }

func parsePortComment(s string) (PortMap, bool) {
	rest, ok := strings.CutPrefix(s, fwPortPrefix)
	if !ok {
		return PortMap{}, false
	}
	pub, tgt, ok := strings.Cut(rest, ":")
	p, err1 := strconv.ParseUint(pub, 10, 16)
	t, err2 := strconv.ParseUint(tgt, 10, 16)
	if !ok || err1 != nil || err2 != nil {
		return PortMap{}, false
	}
	return PortMap{Public: uint16(p), Target: uint16(t)}, true
}

// write queues the chains and rules of f into table t.
func (f firewall) write(c *nftables.Conn, t *nftables.Table) {
	refuse := c.AddChain(&nftables.Chain{Name: fwRefuse, Table: t})
	rule := func(ch *nftables.Chain, comment string, parts ...[]expr.Any) {
		r := &nftables.Rule{Table: t, Chain: ch}
		for _, p := range parts {
			r.Exprs = append(r.Exprs, p...)
		}
		if comment != "" {
			r.UserData = userdata.AppendString(nil, userdata.TypeComment, comment)
		}
		c.AddRule(r)
	}
	rule(refuse, "", isL4(unix.IPPROTO_TCP), single(&expr.Reject{Type: unix.NFT_REJECT_TCP_RST}))
	rule(refuse, "", single(&expr.Reject{Type: unix.NFT_REJECT_ICMPX_UNREACH, Code: unix.NFT_REJECT_ICMPX_PORT_UNREACH}))
	toRefuse := single(&expr.Verdict{Kind: expr.VerdictGoto, Chain: fwRefuse})
	accept := single(&expr.Verdict{Kind: expr.VerdictAccept})
	host := netip.PrefixFrom(hostULA(f.prefix), 128)

	// 1. publish: the first packet of a connection to a public port marks the connection as
	// published, and a target port that differs is redirected to. Its rules are also the record
	// of the ruleset (readFirewall): the marker, and a comment per port map.
	publish := c.AddChain(&nftables.Chain{Name: fwPublish, Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityNATDest})
	rule(publish, f.marker(), ip6Match(ip6SaddrOffset, host), accept) // tor's connections keep their ports
	for _, p := range f.ports {
		comment := portComment(p)
		for _, proto := range []byte{unix.IPPROTO_TCP, unix.IPPROTO_UDP} {
			parts := [][]expr.Any{isL4(proto), thDport(p.Public), setCtMark(publishedMark)}
			if p.Public != p.Target {
				parts = append(parts, redirectTo(p.Target))
			}
			rule(publish, comment, parts...)
			comment = ""
		}
	}

	// 2. inbound: replies, ICMP, the host; then the published connections only, if any.
	inbound := c.AddChain(&nftables.Chain{Name: fwInbound, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter})
	rule(inbound, "", metaEq(expr.MetaKeyIIFNAME, ifName("lo")), accept)
	rule(inbound, "", ctStateIn(expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED), accept)
	rule(inbound, "", isL4(unix.IPPROTO_ICMP), accept)
	rule(inbound, "", isL4(unix.IPPROTO_ICMPV6), accept)
	rule(inbound, "", ip6Match(ip6SaddrOffset, host), accept)
	if f.onionOnly || len(f.ports) > 0 {
		rule(inbound, "", ctMarkIs(publishedMark), accept)
		rule(inbound, "", toRefuse)
	}

	// 3. outbound: no new connection to the host.
	outbound := c.AddChain(&nftables.Chain{Name: fwOutbound, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityFilter})
	rule(outbound, "", ctStateIn(expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED), accept)
	rule(outbound, "", metaEq(expr.MetaKeyOIFNAME, ifName("lo")), accept)
	rule(outbound, "", isL4(unix.IPPROTO_ICMP), accept)
	rule(outbound, "", isL4(unix.IPPROTO_ICMPV6), accept)
	if f.onionOnly {
		rule(outbound, "", toRefuse)
		return
	}
	rule(outbound, "", ip6Match(ip6DaddrOffset, f.prefix), toRefuse)
	rule(outbound, "", ip6Match(ip6DaddrOffset, linkLocal), toRefuse)
	drop := single(&expr.Verdict{Kind: expr.VerdictDrop})
	rule(outbound, "", fibDaddrType(unix.RTN_BROADCAST), drop)
	rule(outbound, "", fibDaddrType(unix.RTN_MULTICAST), drop)
}

var linkLocal = netip.MustParsePrefix("fe80::/10")

// Offsets of the addresses in the IPv6 header.
const (
	ip6SaddrOffset = 8
	ip6DaddrOffset = 24
)

// The expressions the rules are made of; register 1 is the scratch register.

func single(e expr.Any) []expr.Any { return []expr.Any{e} }

func metaEq(key expr.MetaKey, data []byte) []expr.Any {
	return []expr.Any{&expr.Meta{Key: key, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: data}}
}

// ifName is an interface name as the kernel compares it: IFNAMSIZ bytes, zero-padded.
func ifName(name string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return b
}

func isL4(proto byte) []expr.Any { return metaEq(expr.MetaKeyL4PROTO, []byte{proto}) }

// ip6Match matches IPv6 packets whose address at offset (source or destination) is in p.
func ip6Match(offset uint32, p netip.Prefix) []expr.Any {
	e := metaEq(expr.MetaKeyNFPROTO, []byte{unix.NFPROTO_IPV6})
	e = append(e, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 16})
	if p.Bits() < 128 {
		mask := ipNet(p.Addr(), p.Bits()).Mask
		e = append(e, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 16, Mask: mask, Xor: make([]byte, 16)})
	}
	addr := p.Masked().Addr().As16()
	return append(e, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: addr[:]})
}

func ctStateIn(bits uint32) []expr.Any {
	return []expr.Any{
		&expr.Ct{Key: expr.CtKeySTATE, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(bits), Xor: binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
	}
}

// thDport matches the destination port of a TCP or UDP packet (match the protocol first).
func thDport(port uint16) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(port)},
	}
}

// publishedMark is the conntrack mark of a connection to a published port (nothing else in the
// pod's namespace marks connections).
const publishedMark = 1

func setCtMark(mark uint32) []expr.Any {
	return []expr.Any{
		&expr.Immediate{Register: 1, Data: binaryutil.NativeEndian.PutUint32(mark)},
		&expr.Ct{Key: expr.CtKeyMARK, Register: 1, SourceRegister: true},
	}
}

func ctMarkIs(mark uint32) []expr.Any {
	return []expr.Any{
		&expr.Ct{Key: expr.CtKeyMARK, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(mark)},
	}
}

func redirectTo(port uint16) []expr.Any {
	return []expr.Any{
		&expr.Immediate{Register: 1, Data: binaryutil.BigEndian.PutUint16(port)},
		&expr.Redir{RegisterProtoMin: 1},
	}
}

func fibDaddrType(rtnType uint32) []expr.Any {
	return []expr.Any{
		&expr.Fib{Register: 1, ResultADDRTYPE: true, FlagDADDR: true},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(rtnType)},
	}
}
