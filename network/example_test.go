package network_test

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/onionpod/onionpod/network"
)

// The daemon's use: one Manager in the host's namespace, a pod attached before its unit starts
// (NetworkNamespacePath=res.Netns), the onion service pointed at res.ULA, DNS fed by Watch.
func Example() {
	m, err := network.New(network.Config{
		Uplink:    "auto",
		ULAPrefix: netip.MustParsePrefix("fd42:1:2:3::/64"),
		StateDir:  "/var/lib/onionpod/network",
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer m.Close()
	ctx := context.Background()
	go func() {
		for change := range m.Watch(ctx) {
			fmt.Println("publish", change.App, change.LAN, change.IPv4)
		}
	}()
	res, err := m.Attach(ctx, network.Attachment{App: "blog"})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(res.Netns, res.ULA, res.LAN)
	// ... later, after the pod's unit stopped:
	if err := m.Detach(ctx, "blog"); err != nil {
		fmt.Println(err)
	}
}
