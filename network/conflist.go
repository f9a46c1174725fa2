package network

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"

	"github.com/onionpod/onionpod/internal/genvalue"
)

// cniVersion is the spec version of the generated configurations: the newest that both the
// pinned plugins (v1.10.0) and Debian's (1.1.1) accept.
const cniVersion = "1.0.0"

type conflist struct {
	CNIVersion string        `json:"cniVersion"`
	Name       string        `json:"name"`
	Plugins    []macvlanConf `json:"plugins"`
}

type macvlanConf struct {
	Type   string    `json:"type"`
	Master string    `json:"master"`
	Mode   string    `json:"mode"`
	MAC    string    `json:"mac"`
	IPAM   *ipamConf `json:"ipam,omitempty"`
}

type ipamConf struct {
	Type             string `json:"type"`
	DaemonSocketPath string `json:"daemonSocketPath"`
}

// Conflist renders the CNI network configuration list that attaches a LAN pod: one macvlan in
// bridge mode on uplink carrying the pod's MAC. With dhcpSocket set, the dhcp IPAM plugin asks the
// LAN for an IPv4 address through the daemon on that socket; without it the link has no IPAM (IPv6
// comes from the router's advertisements, and the ULA is added by the Manager). Pure: golden-tested.
func Conflist(uplink string, mac net.HardwareAddr, dhcpSocket string) []byte {
	mv := macvlanConf{Type: "macvlan", Master: uplink, Mode: "bridge", MAC: mac.String()}
	if dhcpSocket != "" {
		mv.IPAM = &ipamConf{Type: "dhcp", DaemonSocketPath: dhcpSocket}
	}
	b, err := json.MarshalIndent(conflist{CNIVersion: cniVersion, Name: networkName, Plugins: []macvlanConf{mv}}, "", "  ")
	if err != nil {
		panic("network: conflist: " + err.Error()) // only plain strings: cannot fail
	}
	return append(b, '\n')
}

// parseConflist reads back a configuration Conflist rendered (from a lease, or from libcni's
// cache of the last ADD) and refuses anything else.
func parseConflist(b []byte) (conflist, error) {
	var c conflist
	if err := json.Unmarshal(b, &c); err != nil {
		return conflist{}, fmt.Errorf("conflist: %w", err)
	}
	if c.Name != networkName || len(c.Plugins) != 1 || c.Plugins[0].Type != "macvlan" {
		return conflist{}, errors.New("conflist: not one of onionpod's")
	}
	if ipam := c.Plugins[0].IPAM; ipam != nil {
		if ipam.Type != "dhcp" || genvalue.Path("DHCP socket", ipam.DaemonSocketPath) != nil {
			return conflist{}, errors.New("conflist: not one of onionpod's")
		}
	}
	return c, nil
}
