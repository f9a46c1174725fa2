package network

import (
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"net/netip"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"

	"github.com/onionpod/onionpod/internal/netnsfile"
	"github.com/onionpod/onionpod/network/nettest"
)

const benchPods = 50

var benchCNIPath = flag.String("bench-cni-path", "", "CNI plugin dir for BenchmarkAttachDetach (default: the default CNI paths)")

// BenchmarkAttachDetach attaches and detaches 50 LAN pods with the Manager, side by side with the
// floor: `ip netns add` plus a raw libcni ADD of the same conflist (and DEL plus `ip netns del`),
// and with what CNI static IPAM for the ULA plus the loopback plugin would cost. DAD is not waited
// for. Reported per pod, medians: attach-ms, attach-again-ms (of an attached pod, as the daemon
// does before it starts one), detach-ms, floor-add-ms, floor-del-ms,
// static-lo-add-ms, attach/floor; and attach50-s, the time to attach all 50.
//
//	go test -run '^$' -bench AttachDetach -benchtime 3x ./network/ [-args -bench-cni-path /usr/lib/cni]
func BenchmarkAttachDetach(b *testing.B) {
	if why := nettest.Missing(false); why != "" {
		b.Skip(why)
	}
	lan := nettest.New(b, nettest.Options{})
	cfg := Config{
		Uplink: lan.Uplink(), ULAPrefix: randomULAPrefix(), StateDir: b.TempDir(), NetnsDir: b.TempDir(),
		BoxNetns: lan.BoxNetns(),
	}
	if *benchCNIPath != "" {
		cfg.CNIPaths = []string{*benchCNIPath}
	}
	m, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	waitBoxPrefix(b, m, lan.Uplink())
	ctx := context.Background()

	var attach, again, detach, floorAdd, floorDel, staticAdd, all50 []float64
	for round := 0; round < b.N; round++ {
		fa, fd := benchFloor(b, m, lan, fmt.Sprintf("floor%d", round), false)
		floorAdd, floorDel = append(floorAdd, fa...), append(floorDel, fd...)
		sa, _ := benchFloor(b, m, lan, fmt.Sprintf("static%d", round), true)
		staticAdd = append(staticAdd, sa...)

		start := time.Now()
		for i := range benchPods {
			t0 := time.Now()
			if _, err := m.Attach(ctx, Attachment{App: fmt.Sprintf("pod%d-%d", round, i)}); err != nil {
				b.Fatal(err)
			}
			attach = append(attach, ms(time.Since(t0)))
		}
		all50 = append(all50, time.Since(start).Seconds())
		for i := range benchPods {
			t0 := time.Now()
			if _, err := m.Attach(ctx, Attachment{App: fmt.Sprintf("pod%d-%d", round, i)}); err != nil {
				b.Fatal(err)
			}
			again = append(again, ms(time.Since(t0)))
		}
		for i := range benchPods {
			t0 := time.Now()
			if err := m.Detach(ctx, fmt.Sprintf("pod%d-%d", round, i)); err != nil {
				b.Fatal(err)
			}
			detach = append(detach, ms(time.Since(t0)))
		}
		b.StopTimer()
		m.bg.Wait() // let the kernel catch up between rounds, off the clock
		b.StartTimer()
	}
	b.ReportMetric(median(attach), "attach-ms")
	b.ReportMetric(median(again), "attach-again-ms")
	b.ReportMetric(median(detach), "detach-ms")
	b.ReportMetric(median(floorAdd), "floor-add-ms")
	b.ReportMetric(median(floorDel), "floor-del-ms")
	b.ReportMetric(median(staticAdd), "static-lo-add-ms")
	b.ReportMetric(median(attach)/median(floorAdd), "attach/floor")
	b.ReportMetric(median(all50), "attach50-s")
}

// benchFloor attaches 50 pods the plain way: `ip netns add` and libcni ADD of the Manager's
// conflist (with static IPAM for the ULA and the loopback plugin too, if static), then removes
// them with libcni DEL and `ip netns del`. It returns per-pod times in ms.
func benchFloor(b *testing.B, m *Manager, lan *nettest.LAN, prefix string, static bool) (add, del []float64) {
	ctx := context.Background()
	cni := libcni.NewCNIConfigWithCacheDir(m.cfg.CNIPaths, b.TempDir(), &boxExec{box: m.box})
	loList, err := libcni.ConfListFromBytes([]byte(`{"cniVersion":"1.0.0","name":"lo","plugins":[{"type":"loopback"}]}`))
	if err != nil {
		b.Fatal(err)
	}
	type pod struct {
		name string
		list *libcni.NetworkConfigList
		rt   *libcni.RuntimeConf
	}
	var pods []pod
	for i := range benchPods {
		name := fmt.Sprintf("onionpod-bench-%s-%d-%d", prefix, i, time.Now().UnixNano()%100000)
		conf := Conflist(lan.Uplink(), PredictMAC(name), "")
		if static {
			ula := ulaFor(m.cfg.ULAPrefix, name, 0)
			conf = []byte(fmt.Sprintf(`{"cniVersion":"1.0.0","name":"onionpod","plugins":[{"type":"macvlan",`+
				`"master":%q,"mode":"bridge","mac":%q,"ipam":{"type":"static","addresses":[{"address":"%s/64"}]}}]}`,
				lan.Uplink(), PredictMAC(name), ula))
		}
		list, err := libcni.ConfListFromBytes(conf)
		if err != nil {
			b.Fatal(err)
		}
		t0 := time.Now()
		if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
			b.Fatalf("ip netns add: %v: %s", err, out)
		}
		rt := &libcni.RuntimeConf{ContainerID: name, NetNS: "/run/netns/" + name, IfName: "eth0"}
		if _, err := cni.AddNetworkList(ctx, list, rt); err != nil {
			b.Fatal(err)
		}
		if static {
			lo := &libcni.RuntimeConf{ContainerID: name, NetNS: rt.NetNS, IfName: "lo"}
			if _, err := cni.AddNetworkList(ctx, loList, lo); err != nil {
				b.Fatal(err)
			}
		}
		add = append(add, ms(time.Since(t0)))
		pods = append(pods, pod{name, list, rt})
	}
	for _, p := range pods {
		t0 := time.Now()
		if err := cni.DelNetworkList(ctx, p.list, p.rt); err != nil {
			b.Fatal(err)
		}
		if static {
			lo := &libcni.RuntimeConf{ContainerID: p.name, NetNS: p.rt.NetNS, IfName: "lo"}
			cni.DelNetworkList(ctx, loList, lo)
		}
		if out, err := exec.Command("ip", "netns", "del", p.name).CombinedOutput(); err != nil {
			b.Fatalf("ip netns del: %v: %s", err, out)
		}
		del = append(del, ms(time.Since(t0)))
	}
	return add, del
}

// waitBoxPrefix waits until the box saw the router's prefix, so attaches predict LAN addresses.
func waitBoxPrefix(b testing.TB, m *Manager, uplink string) {
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if _, ok := m.advertisedPrefix(uplink); ok {
			return
		}
	}
	b.Fatal("the box never saw the router's prefix")
}

func randomULAPrefix() netip.Prefix {
	var b [16]byte
	rand.Read(b[1:8])
	b[0] = 0xfd
	return netip.PrefixFrom(netip.AddrFrom16(b), 64)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

// BenchmarkFirewall measures a pod's firewall against the namespace it lives in: writing it
// (what a fresh attach adds), reading it back (what Addresses and Check add), making sure of it
// when it is already there (what an attach of an attached pod adds), and replacing it (a change of
// ports), beside creating the namespace itself. Reported per pod, medians: netns-ms, apply-ms,
// read-ms, ensure-ms, replace-ms, and apply/netns.
//
//	go test -run '^$' -bench Firewall -benchtime 200x ./network/
func BenchmarkFirewall(b *testing.B) {
	if why := nettest.Missing(false); why != "" {
		b.Skip(why)
	}
	dir := b.TempDir()
	f := firewall{ula: netip.MustParseAddr("fd00:1:2:3:4:5:6:7"), prefix: netip.MustParsePrefix("fd00:1:2:3::/64"),
		ports: []PortMap{{Public: 80, Target: 8080}, {Public: 443, Target: 8443}}}
	var create, apply, read, ensure, replace []float64
	for i := 0; i < b.N; i++ {
		path := filepath.Join(dir, fmt.Sprintf("ns%d", i))
		t0 := time.Now()
		if err := netnsfile.Create(path, nil); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if err := applyFirewall(path, f, false); err != nil {
			b.Fatal(err)
		}
		t2 := time.Now()
		st, err := readFirewall(path)
		if err != nil || !st.holds(f) {
			b.Fatalf("read back %+v, %v", st, err)
		}
		t3 := time.Now()
		if err := ensureFirewall(path, f); err != nil {
			b.Fatal(err)
		}
		t4 := time.Now()
		if err := applyFirewall(path, f, true); err != nil {
			b.Fatal(err)
		}
		t5 := time.Now()
		create, apply, read, ensure = append(create, ms(t1.Sub(t0))), append(apply, ms(t2.Sub(t1))),
			append(read, ms(t3.Sub(t2))), append(ensure, ms(t4.Sub(t3)))
		replace = append(replace, ms(t5.Sub(t4)))
		if err := netnsfile.Remove(path); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(median(create), "netns-ms")
	b.ReportMetric(median(apply), "apply-ms")
	b.ReportMetric(median(read), "read-ms")
	b.ReportMetric(median(ensure), "ensure-ms")
	b.ReportMetric(median(replace), "replace-ms")
	b.ReportMetric(median(apply)/median(create), "apply/netns")
}
