package network

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// leaseNotify is an inotify instance on the leases dir: how a Watch learns of pods that another
// process (net-up, net-down, another Manager) attached or detached. Every store of a lease is a
// rename into the dir, every removal an unlink, and the end of an attach touches the lease's times.
type leaseNotify struct{ f *os.File }

const leaseEvents = unix.IN_MOVED_TO | unix.IN_MOVED_FROM | unix.IN_DELETE | unix.IN_CLOSE_WRITE |
	unix.IN_ATTRIB | unix.IN_ONLYDIR

func openLeaseNotify(dir string) (*leaseNotify, error) {
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("inotify: %w", err)
	}
	if _, err := unix.InotifyAddWatch(fd, dir, leaseEvents); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("inotify on %s: %w", dir, err)
	}
	// Non-blocking, so the runtime poller reads it and Close ends a pending Read.
	return &leaseNotify{f: os.NewFile(uintptr(fd), "inotify:"+dir)}, nil
}

// run calls changed with the apps whose lease files changed (once per app per batch of events),
// and lost when the kernel dropped events, until ctx ends. It closes the instance.
func (n *leaseNotify) run(ctx context.Context, changed func(apps []string), lost func()) {
	stop := context.AfterFunc(ctx, func() { n.f.Close() })
	defer stop()
	defer n.f.Close()
	buf := make([]byte, 64<<10)
	for {
		k, err := n.f.Read(buf)
		if err != nil {
			if !errors.Is(err, os.ErrClosed) && ctx.Err() == nil {
				rescanUntil(ctx, lost) // inotify broke: fall back to looking now and then
			}
			return
		}
		apps, overflow := parseLeaseEvents(buf[:k])
		if overflow {
			lost()
			continue
		}
		changed(apps)
	}
}

// parseLeaseEvents returns the apps named by a buffer of inotify events, each once, and whether the
// queue overflowed.
func parseLeaseEvents(buf []byte) (apps []string, overflow bool) {
	seen := map[string]bool{}
	for len(buf) >= unix.SizeofInotifyEvent {
		mask := binary.NativeEndian.Uint32(buf[4:8])
		nameLen := int(binary.NativeEndian.Uint32(buf[12:16]))
		end := unix.SizeofInotifyEvent + nameLen
		if end > len(buf) {
			break
		}
		name := strings.TrimRight(string(buf[unix.SizeofInotifyEvent:end]), "\x00")
		buf = buf[end:]
		if mask&unix.IN_Q_OVERFLOW != 0 {
			overflow = true
			continue
		}
		if app, ok := leaseApp(name); ok && !seen[app] {
			seen[app] = true
			apps = append(apps, app)
		}
	}
	return apps, overflow
}

// rescanInterval is how often a Watch without inotify looks at the leases dir again.
const rescanInterval = 2 * time.Second

// rescanUntil calls rescan every rescanInterval until ctx ends: the fallback when inotify is not
// available (the per-user limit of instances reached).
func rescanUntil(ctx context.Context, rescan func()) {
	tick := time.NewTicker(rescanInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			rescan()
		}
	}
}
