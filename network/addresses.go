package network

import (
	"crypto/sha256"
	"encoding/binary"
	"net"
	"net/netip"
)

// PredictMAC is the MAC address a pod of app gets: six bytes of SHA-256 of the name, made locally
// administered and unicast. It never changes for a name, so neither does the pod's SLAAC address.
func PredictMAC(app string) net.HardwareAddr {
	sum := sha256.Sum256([]byte("onionpod mac\x00" + app))
	mac := net.HardwareAddr(sum[:6])
	mac[0] = mac[0]&^0x01 | 0x02 // unicast, locally administered
	return mac
}

// SLAACAddress is the address a host with mac forms in prefix by stateless autoconfiguration
// with a modified EUI-64 interface identifier (RFC 4291 appendix A; addr_gen_mode 0). It is
// invalid unless prefix is an IPv6 /64 and mac has six bytes.
func SLAACAddress(prefix netip.Prefix, mac net.HardwareAddr) netip.Addr {
	if !prefix.IsValid() || !prefix.Addr().Is6() || prefix.Bits() != 64 || len(mac) != 6 {
		return netip.Addr{}
	}
	b := prefix.Masked().Addr().As16()
	b[8] = mac[0] ^ 0x02
	b[9], b[10] = mac[1], mac[2]
	b[11], b[12] = 0xff, 0xfe
	b[13], b[14], b[15] = mac[3], mac[4], mac[5]
	return netip.AddrFrom16(b)
}

// ulaFor is the try-th candidate ULA for app in prefix: derived from the name, so an app keeps its
// ULA (and its onion target) across detach and re-attach unless another app holds it. The host
// part is never ::0 or ::1 (the host's own address).
func ulaFor(prefix netip.Prefix, app string, try int) netip.Addr {
	var seed [4]byte
	binary.BigEndian.PutUint32(seed[:], uint32(try))
	sum := sha256.Sum256(append([]byte("onionpod ula\x00"+app+"\x00"), seed[:]...))
	b := prefix.Masked().Addr().As16()
	copy(b[8:], sum[:8])
	if binary.BigEndian.Uint64(b[8:]) <= 1 {
		b[8] = 0x02
	}
	return netip.AddrFrom16(b)
}

// hostULA is the host's address in the ULA prefix (prefix::1).
func hostULA(prefix netip.Prefix) netip.Addr {
	b := prefix.Masked().Addr().As16()
	b[15] = 1
	return netip.AddrFrom16(b)
}

// hostVethName is the host end of an onion-only pod's veth: short enough for IFNAMSIZ, stable per app.
func hostVethName(app string) string {
	sum := sha256.Sum256([]byte("onionpod veth\x00" + app))
	const hexdigits = "0123456789abcdef"
	name := []byte(hostVethPrefix)
	for _, c := range sum[:5] {
		name = append(name, hexdigits[c>>4], hexdigits[c&0xf])
	}
	return string(name)
}

// ipNet converts a prefix-with-address (10.0.0.5/24) to the net type netlink wants.
func ipNet(addr netip.Addr, bits int) *net.IPNet {
	return &net.IPNet{IP: addr.AsSlice(), Mask: net.CIDRMask(bits, addr.BitLen())}
}
