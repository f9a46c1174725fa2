package network

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"sync"
)

// The kernel keeps one IPv6 neighbour table (NDP) and one IPv4 table (ARP) for the whole box,
// shared by every network namespace, and refuses new entries past gc_thresh3 (1024 by default):
// "neighbour: ndisc_cache: neighbor table overflow!". Every LAN pod holds at least its router's
// entry, and a pod whose router advertisement finds no room for the router drops the
// advertisement ("got default router without neighbour") before it reads the prefix: the pod
// never forms its SLAAC address, and the address onionpod predicted and printed for it does not
// answer (the scale lab, 1000 pods: 67 without an address minutes after they started). So every
// LAN attach makes sure the limits leave room for every pod, raising them (never lowering them)
// in steps that double.
//
// The limits exist only in the box's initial network namespace: where the box is itself a
// namespace (the lab's), there is nothing to raise, and its host's limits apply.

const (
	neighboursPerPod = 4   // its router, the host's shim, a few LAN peers
	neighboursOfHost = 256 // the box's own
)

// neighbourLimits are what gc_thresh2 (need) and gc_thresh3 (raise to) should be for pods
// attached pods when gc_thresh3 is below need. Pure.
func neighbourLimits(pods int) (need, raiseTo int) {
	need = neighboursOfHost + neighboursPerPod*pods
	return need, 2 * need
}

// ensureNeighbourRoom makes the box's neighbour tables (IPv6 and IPv4) hold the entries of
// every attached pod. It counts the lease files only when the box has limits to look at.
func (m *Manager) ensureNeighbourRoom() error {
	return m.boxDo(func() error {
		return raiseBothNeighbourLimits(func() (int, error) {
			apps, err := m.leasedApps()
			return len(apps), err
		})
	})
}

// EnsureNeighbourRoom raises the neighbour table limits of the calling thread's network
// namespace for pods attached pods, as every LAN attach does in the box's namespace. It is for
// the host of a box that is itself a namespace (a lab's), whose limits are the host's.
func EnsureNeighbourRoom(pods int) error {
	if err := raiseBothNeighbourLimits(func() (int, error) { return pods, nil }); err != nil {
		return fmt.Errorf("network: %w", err)
	}
	return nil
}

// raiseBothNeighbourLimits raises the IPv6 and IPv4 limits of the calling thread's namespace,
// counting the pods (at most once) only if one of them is there to look at.
func raiseBothNeighbourLimits(count func() (int, error)) error {
	count = sync.OnceValues(count)
	var errs []error
	for _, family := range []string{"ipv6", "ipv4"} {
		errs = append(errs, raiseNeighbourLimits(NeighbourLimitsDir(family), count))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("neighbour table: %w", err)
	}
	return nil
}

// NeighbourLimitsDir is where the calling thread's namespace keeps the limits of family's
// ("ipv6", "ipv4") neighbour table: gc_thresh1, gc_thresh2, gc_thresh3.
func NeighbourLimitsDir(family string) string {
	return "/proc/sys/net/" + family + "/neigh/default"
}

// raiseNeighbourLimits raises gc_thresh3 and gc_thresh2 in dir (a /proc/sys/net/FAMILY/neigh/default)
// for as many pods as count says, when gc_thresh3 is below what they need. A dir without the
// limits (not the initial network namespace) is left alone.
func raiseNeighbourLimits(dir string, count func() (int, error)) error {
	hard, err := readIntFile(dir + "/gc_thresh3")
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	pods, err := count()
	if err != nil {
		return err
	}
	need, raiseTo := neighbourLimits(pods)
	if hard >= need {
		return nil
	}
	if err := os.WriteFile(dir+"/gc_thresh3", []byte(strconv.Itoa(raiseTo)), 0o644); err != nil {
		return fmt.Errorf("%d pods need room for %d neighbours, %s/gc_thresh3 is %d: %w", pods, need, dir, hard, err)
	}
	if soft, err := readIntFile(dir + "/gc_thresh2"); err != nil || soft < need {
		if err := os.WriteFile(dir+"/gc_thresh2", []byte(strconv.Itoa(need)), 0o644); err != nil {
			return fmt.Errorf("%s/gc_thresh2: %w", dir, err)
		}
	}
	return nil
}

func readIntFile(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	return n, nil
}
