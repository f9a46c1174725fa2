package network_test

import (
	"context"
	"errors"
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
	// The app listens on 8080; http://blog.ZONE/ and its .onion both answer on 80.
	ports := []network.PortMap{{Public: 80, Target: 8080}}
	res, err := m.Attach(ctx, network.Attachment{App: "blog", Ports: ports})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(res.Netns, res.ULA, res.LAN)
	// Each pass: attach again (in place) when the app's ports changed, and report damaged leases.
	if now, err := m.Addresses(context.Background(), "blog"); errors.Is(err, network.ErrDamagedLease) || (err == nil && !now.Publishes(ports)) {
		m.Attach(ctx, network.Attachment{App: "blog", Ports: ports})
	}
	if damaged, _ := m.DamagedLeases(); len(damaged) > 0 {
		fmt.Println("lease of", damaged[0].App, "damaged, kept as", damaged[0].File)
	}
	// ... later, after the pod's unit stopped:
	if err := m.Detach(ctx, "blog"); err != nil {
		fmt.Println(err)
	}
}
