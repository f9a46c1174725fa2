package probe

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/onionpod/onionpod/dns"
	"github.com/onionpod/onionpod/internal/netnsfile"
	"github.com/onionpod/onionpod/network/nettest"
)

// TestProbeClearnetFromVantage: on a simulated LAN (radvd, a bridge), a "pod" is a macvlan
// sibling on the box's uplink, as onionpod's pods are; the box's own stack cannot reach it, the
// vantage point (a macvlan of its own, autoconfigured by SLAAC) can. The name is looked up at
// onionpod's real built-in DNS server. A name without a record fails at dns, an address with
// nothing listening at connect, and IPv4 without a vantage address at vantage.
func TestProbeClearnetFromVantage(t *testing.T) {
	if r := nettest.Missing(false); r != "" {
		t.Skip(r)
	}
	lan := nettest.New(t, nettest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir := t.TempDir()

	// The pod: a macvlan on the uplink in a namespace of its own, serving HTTP on port 80.
	podNS := filepath.Join(dir, "pod")
	podAddr := netip.MustParseAddr("2001:db8:1::99")
	if err := netnsfile.Create(podNS, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { netnsfile.Remove(podNS) })
	box, err := netns.GetFromPath(lan.BoxNetns())
	if err != nil {
		t.Fatal(err)
	}
	defer box.Close()
	h, err := netlink.NewHandleAt(box)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	uplink, err := h.LinkByName(lan.Uplink())
	if err != nil {
		t.Fatal(err)
	}
	podHandle, err := netns.GetFromPath(podNS)
	if err != nil {
		t.Fatal(err)
	}
	defer podHandle.Close()
	if err := h.LinkAdd(&netlink.Macvlan{LinkAttrs: netlink.LinkAttrs{Name: "eth0", ParentIndex: uplink.Attrs().Index,
		Namespace: netlink.NsFd(podHandle)}, Mode: netlink.MACVLAN_MODE_BRIDGE}); err != nil {
		t.Fatal(err)
	}
	var ln net.Listener
	err = netnsfile.Do(podNS, func() error {
		link, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		a := &netlink.Addr{IPNet: &net.IPNet{IP: podAddr.AsSlice(), Mask: net.CIDRMask(64, 128)}, Flags: 0x02 /* IFA_F_NODAD */}
		if err := netlink.AddrAdd(link, a); err != nil {
			return err
		}
		if err := netlink.LinkSetUp(link); err != nil {
			return err
		}
		ln, err = net.Listen("tcp6", "[::]:80")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Host != "blog.box.example" {
			w.WriteHeader(http.StatusMisdirectedRequest)
		}
		io.WriteString(w, "blog")
	})}
	go srv.Serve(ln)
	defer srv.Close()

	// The zone, at onionpod's built-in server on loopback.
	zone, err := dns.NewServer(dns.ServerConfig{Zone: "box.example", Listen: []string{"127.0.0.1:0"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := zone.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer zone.Close()
	if err := zone.Set(ctx, []dns.Record{
		{Name: "blog.box.example.", Addr: podAddr},
		{Name: "gone.box.example.", Addr: netip.MustParseAddr("2001:db8:1::98")},
	}); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	v, err := OpenVantage(VantageOptions{Uplink: lan.Uplink(), Netns: filepath.Join(dir, "vantage"), Box: lan.BoxNetns()})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if err := v.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	v6, _, _ := v.Addrs()
	t.Logf("vantage point %s after %v", v6, time.Since(start))
	if !lan.Prefix().Contains(v6) {
		t.Errorf("vantage address %s is not in the LAN's prefix %s", v6, lan.Prefix())
	}

	p := &Prober{Resolver: ZoneResolver{Server: zone.Addrs()[0].String()}, LAN: v}
	r := p.ProbePath(ctx, Target{App: "blog", Name: "blog.box.example.", IPv6: true}, PathIPv6)
	if !r.OK || r.Status != 200 || r.Addr != "["+podAddr.String()+"]:80" {
		t.Errorf("blog over IPv6: %+v", r)
	} else {
		t.Logf("blog over IPv6: HTTP %d in %v", r.Status, r.Latency)
	}
	for _, c := range []struct {
		name string
		path Path
		hop  string
	}{
		{"nothing.box.example.", PathIPv6, HopDNS},
		{"gone.box.example.", PathIPv6, HopConnect},
		{"blog.box.example.", PathIPv4, HopDNS},
	} {
		r := p.ProbePath(ctx, Target{App: "x", Name: c.name, IPv6: true, IPv4: true, Port: 80}, c.path)
		if r.OK || r.Hop != c.hop {
			t.Errorf("%s over %s: %+v, want a failure at %s", c.name, c.path, r, c.hop)
		} else {
			t.Logf("%s over %s: %s: %s", c.name, c.path, r.Hop, r.Err)
		}
	}
	if err := zone.Set(ctx, []dns.Record{{Name: "blog.box.example.", Addr: podAddr}, {Name: "blog.box.example.", Addr: netip.MustParseAddr("192.0.2.99")}}); err != nil {
		t.Fatal(err)
	}
	if r := p.ProbePath(ctx, Target{App: "x", Name: "blog.box.example.", IPv4: true}, PathIPv4); r.OK || r.Hop != HopVantage {
		t.Errorf("IPv4 without a vantage address: %+v", r)
	}
	// The box itself cannot reach the pod: what the vantage point is for.
	err = netnsfile.Do(lan.BoxNetns(), func() error {
		c, err := (&net.Dialer{Timeout: time.Second}).Dial("tcp6", "["+podAddr.String()+"]:80")
		if err == nil {
			c.Close()
		}
		return err
	})
	t.Logf("from the box itself: %v", err)
}
