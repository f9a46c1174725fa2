package network_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/onionpod/onionpod/network"
	"github.com/onionpod/onionpod/network/nettest"
)

// No pod opens a connection to the host: neither a LAN pod (through the shim: the host's ULA and
// the shim's link-local address) nor an onion-only pod (through its veth: the host's ULA and the
// veth's link-local address), whatever the host listens on there. The host, as tor does, still
// connects into every pod, and ping still works both ways.
func TestPodsOpenNoConnectionToTheHost(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nettest.Options{})
	e.waitForBox(t)
	ctx := context.Background()
	box := e.lan.BoxNetns()
	lanPod := e.attach(t, network.Attachment{App: "web", Ports: []network.PortMap{{Public: 80, Target: 80}}})
	onion := e.attach(t, network.Attachment{App: "hidden", OnionOnly: true, Ports: []network.PortMap{{Public: 80, Target: 80}}})
	plain := e.attach(t, network.Attachment{App: "plain"}) // no ports declared: the guard holds all the same
	serveHTTP(t, lanPod.Netns, "web")
	serveHTTP(t, onion.Netns, "hidden")
	serveHTTP(t, plain.Netns, "plain")
	// What the host runs on all its addresses (a database, tor's ports, sshd...).
	serveHTTPOn(t, box, 7000, "the host")
	host := hostULA(e.cfg.ULAPrefix)
	fetchEventually(t, box, httpURLPort(host, 7000), "the host") // it answers: the checks below mean something

	// tor's way in: the host connects to each pod's ULA.
	for _, p := range []struct {
		res  network.Result
		body string
	}{{lanPod, "web"}, {onion, "hidden"}, {plain, "plain"}} {
		fetchEventually(t, box, httpURL(p.res.ULA), p.body)
		if out, err := nettest.Exec(ctx, p.res.Netns, "busybox", "ping", "-6", "-c1", "-W2", host.String()); err != nil {
			t.Errorf("%s cannot ping the host: %v\n%s", p.body, err, out)
		}
	}

	shimLL := linkLocalOf(t, box, "onionpod0")
	vethLL := linkLocalOf(t, box, "opv")
	for _, c := range []struct {
		pod     network.Result
		targets []string
	}{
		{lanPod, []string{httpURLPort(host, 7000), "http://[" + shimLL + "%eth0]:7000/"}},
		{plain, []string{httpURLPort(host, 7000), "http://[" + shimLL + "%eth0]:7000/"}},
		{onion, []string{httpURLPort(host, 7000), "http://[" + vethLL + "%eth0]:7000/"}},
	} {
		for _, url := range c.targets {
			assertRefused(t, c.pod.Netns, url)
		}
	}
}

// linkLocalOf is the link-local address of the box's link whose name starts with prefix.
func linkLocalOf(t *testing.T, box, prefix string) string {
	t.Helper()
	out, err := nettest.Exec(context.Background(), box, "ip", "-o", "-6", "addr", "show", "scope", "link")
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`^\d+: (\S+?)(@\S+)?\s+inet6 (fe80::[0-9a-f:]+)/64`)
	for _, line := range strings.Split(string(out), "\n") {
		if m := re.FindStringSubmatch(line); m != nil && strings.HasPrefix(m[1], prefix) {
			return m[3]
		}
	}
	t.Fatalf("no link-local address on a link %s* in the box:\n%s", prefix, out)
	return ""
}

// hostULA is prefix::1, the host's address on the pods' ULA link.
func hostULA(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As16()
	b[15] = 1
	return netip.AddrFrom16(b)
}

// Nor does a pod send the host datagrams: not to the host's IPv4 address (through the shim,
// which would answer ARP for it), nor to multicast or broadcast addresses the shim hears. (A TCP
// connection that way never completes, since the host answers through the uplink, but a datagram
// gets there.) The LAN client, any LAN host, still gets them.
func TestPodsSendNoDatagramToTheHost(t *testing.T) {
	t.Parallel()
	socket := filepath.Join(t.TempDir(), "dhcp.sock")
	e := newEnv(t, nettest.Options{IPv4: true}, func(c *network.Config) { c.DHCPSocket = socket })
	e.waitForBox(t)
	startDHCPDaemon(t, e.lan.BoxNetns(), socket)
	ctx := context.Background()
	box := e.lan.BoxNetns()
	if _, err := nettest.Exec(ctx, box, "ip", "addr", "add", "192.0.2.2/24", "dev", e.lan.Uplink()); err != nil {
		t.Fatal(err)
	}
	if _, err := e.lan.ClientExec(ctx, "ip", "addr", "add", "192.0.2.9/24", "dev", "eth0"); err != nil {
		t.Fatal(err)
	}
	pod := e.attach(t, network.Attachment{App: "v4", IPv4: true, Ports: []network.PortMap{{Public: 80, Target: 80}}})
	atHost := listenUDP(t, box, 7001)
	atClient := listenUDP(t, e.lan.ClientNetns(), 7001)

	send := func(to string) {
		t.Helper()
		err := ns.WithNetNSPath(pod.Netns, func(ns.NetNS) error {
			c, err := net.Dial("udp", to)
			if err != nil {
				return err
			}
			defer c.Close()
			for range 10 { // the first ones wait for neighbour resolution
				c.Write([]byte("from the pod to " + to))
				time.Sleep(50 * time.Millisecond)
			}
			return nil
		})
		if err != nil {
			t.Logf("send to %s: %v", to, err)
		}
	}
	send("192.0.2.9:7001") // the LAN client: it must get it, or the rest proves nothing
	if got := atClient.wait(2 * time.Second); got == "" {
		t.Fatal("the LAN client got no datagram from the pod")
	}
	for _, to := range []string{"192.0.2.2:7001", "[ff02::1%eth0]:7001", "255.255.255.255:7001", "192.0.2.255:7001"} {
		send(to)
	}
	if got := atHost.wait(time.Second); got != "" {
		t.Errorf("the host got a datagram from the pod: %q", got)
	}
}

// udpListener collects what arrives on a UDP port in a namespace.
type udpListener struct{ got chan string }

func listenUDP(t *testing.T, netnsPath string, port int) udpListener {
	t.Helper()
	var c net.PacketConn
	err := ns.WithNetNSPath(netnsPath, func(ns.NetNS) error {
		var err error
		c, err = net.ListenPacket("udp", fmt.Sprintf("[::]:%d", port))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	l := udpListener{got: make(chan string, 100)}
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			l.got <- fmt.Sprintf("%s from %s", buf[:n], from)
		}
	}()
	return l
}

// wait returns the first datagram that arrives within d ("" if none).
func (l udpListener) wait(d time.Duration) string {
	select {
	case s := <-l.got:
		return s
	case <-time.After(d):
		return ""
	}
}
