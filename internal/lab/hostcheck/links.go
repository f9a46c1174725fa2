package hostcheck

import (
	"fmt"
	"runtime"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// probeLinks makes a veth pair, a bridge and a macvlan on the veth (what a simulated LAN and a
// pod's attachment need) in a new network namespace that nothing else sees and that the kernel
// frees when the probe closes it. The probing thread returns to its namespace before it is
// unlocked; if it cannot, it stays locked and is discarded with its goroutine.
func probeLinks() string {
	res := make(chan string, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			res <- "cannot open this thread's network namespace: " + err.Error()
			return
		}
		defer orig.Close()
		probe, err := netns.New() // unshare: this thread is now in the new namespace
		if err != nil {
			runtime.UnlockOSThread()
			res <- "cannot create a network namespace: " + err.Error()
			return
		}
		defer probe.Close()
		if err := netns.Set(orig); err != nil {
			res <- "cannot return from a network namespace: " + err.Error()
			return // the thread stays locked: discarded with this goroutine
		}
		runtime.UnlockOSThread()
		res <- makeLinks(probe)
	}()
	return <-res
}

// makeLinks creates the probe's links inside ns, through a netlink socket opened there.
func makeLinks(ns netns.NsHandle) string {
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return "netlink: " + err.Error()
	}
	defer h.Close()
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "probe0"}, PeerName: "probe1"}); err != nil {
		return kernelLink("veth", err)
	}
	if err := h.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "probebr"}}); err != nil {
		return kernelLink("bridge", err)
	}
	master, err := h.LinkByName("probe0")
	if err != nil {
		return kernelLink("veth", err)
	}
	mv := &netlink.Macvlan{LinkAttrs: netlink.LinkAttrs{Name: "probemv", ParentIndex: master.Attrs().Index},
		Mode: netlink.MACVLAN_MODE_BRIDGE}
	if err := h.LinkAdd(mv); err != nil {
		return kernelLink("macvlan", err)
	}
	return ""
}

func kernelLink(kind string, err error) string {
	return fmt.Sprintf("kernel cannot make %s links (%v)", kind, err)
}
