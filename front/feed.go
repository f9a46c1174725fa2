package front

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/onionpod/onionpod/internal/peercred"
)

// A Feed hands each of onionpod's sandboxed units (fronts, edge) its own latest message, now and
// whenever it changes, over one unix socket. A message is opaque bytes (a certificate bundle, a
// routing table), sent as a 4-byte length and the bytes. Who connects is told by the kernel: the
// peer's cgroup is its unit (systemd puts every process of a unit there and an unprivileged
// process cannot leave it), and a peer gets only what was published for that unit. The socket
// may be world-connectable: a peer in no unit of ours gets nothing and is disconnected.
type Feed struct {
	ln       *net.UnixListener
	log      *slog.Logger
	identify func(pid int32) (string, error)

	mu     sync.Mutex
	latest map[string][]byte
	subs   map[string]map[chan []byte]struct{}
	closed bool
}

// maxMessage bounds one message (a bundle is a few kB; a routing table of a thousand apps ~100 kB).
const maxMessage = 4 << 20

// unitPattern is what a feed serves: a front of an app, or the edge.
var unitPattern = regexp.MustCompile(`^onionpod-(front-[a-z0-9-]{1,63}|edge)\.service$`)

// FrontUnit is the unit name of an app's front; EdgeUnit the edge's.
func FrontUnit(app string) string { return "onionpod-front-" + app + ".service" }

// EdgeUnit is the edge's unit name.
const EdgeUnit = "onionpod-edge.service"

// NewFeed listens on the unix socket at path (replacing a stale one; its directory is created
// 0755) and serves until Close.
func NewFeed(path string, log *slog.Logger) (*Feed, error) {
	return newFeed(path, log, UnitOfPID)
}

// newFeed is NewFeed with the peers' identification given (a unit test's).
func newFeed(path string, log *slog.Logger, identify func(pid int32) (string, error)) (*Feed, error) {
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("front: feed: %w", err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("front: feed: %w", err)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("front: feed: %w", err)
	}
	// Any process may connect; only our units' peers get anything (see Feed).
	if err := os.Chmod(path, 0o666); err != nil {
		ln.Close()
		return nil, fmt.Errorf("front: feed: %w", err)
	}
	f := &Feed{ln: ln, log: log, identify: identify, latest: map[string][]byte{}, subs: map[string]map[chan []byte]struct{}{}}
	go f.accept()
	return f, nil
}

// Publish makes msg the unit's latest message and sends it to the unit's connected peers. A nil
// msg forgets the unit (its peers keep what they have).
func (f *Feed) Publish(unit string, msg []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if msg == nil {
		delete(f.latest, unit)
		return
	}
	if old, ok := f.latest[unit]; ok && bytes.Equal(old, msg) {
		return // the peers have it
	}
	f.latest[unit] = msg
	for ch := range f.subs[unit] {
		select {
		case <-ch: // drop the older message not yet sent: only the latest matters
		default:
		}
		ch <- msg
	}
}

// Close stops the feed and disconnects every peer.
func (f *Feed) Close() error {
	f.mu.Lock()
	f.closed = true
	for _, subs := range f.subs {
		for ch := range subs {
			close(ch)
		}
	}
	f.subs = map[string]map[chan []byte]struct{}{}
	f.mu.Unlock()
	return f.ln.Close()
}

func (f *Feed) accept() {
	for {
		c, err := f.ln.AcceptUnix()
		if err != nil {
			return
		}
		go f.serve(c)
	}
}

func (f *Feed) serve(c *net.UnixConn) {
	defer c.Close()
	unit, err := f.peerUnit(c)
	if err != nil || !unitPattern.MatchString(unit) {
		f.log.Warn("feed: refused a peer that is no unit of ours", "unit", unit, "err", err)
		return
	}
	ch := make(chan []byte, 1)
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return
	}
	if f.subs[unit] == nil {
		f.subs[unit] = map[chan []byte]struct{}{}
	}
	f.subs[unit][ch] = struct{}{}
	if msg, ok := f.latest[unit]; ok {
		ch <- msg
	}
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		delete(f.subs[unit], ch)
		f.mu.Unlock()
	}()
	gone := make(chan struct{})
	go func() { // the peer sends nothing: a read returns when it goes
		io.Copy(io.Discard, c)
		close(gone)
	}()
	for {
		select {
		case msg, ok := <-ch:
			if !ok {
				return
			}
			if err := writeMessage(c, msg); err != nil {
				return
			}
		case <-gone:
			return
		}
	}
}

func (f *Feed) peerUnit(c *net.UnixConn) (string, error) {
	cred, err := peercred.Of(c)
	if err != nil {
		return "", err
	}
	return f.identify(cred.Pid)
}

// UnitOfPID names the systemd unit a process runs in, from its cgroup (the unified hierarchy's,
// or systemd's named v1 hierarchy on a hybrid host).
func UnitOfPID(pid int32) (string, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(int(pid)) + "/cgroup")
	if err != nil {
		return "", err
	}
	return unitOfCgroup(string(data))
}

func unitOfCgroup(data string) (string, error) {
	for _, line := range strings.Split(data, "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 || !(parts[0] == "0" && parts[1] == "" || parts[1] == "name=systemd") {
			continue
		}
		if base := filepath.Base(parts[2]); strings.HasSuffix(base, ".service") {
			return base, nil
		}
	}
	return "", errors.New("front: feed: the peer is in no service's cgroup")
}

func writeMessage(w io.Writer, msg []byte) error {
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(len(msg)))
	_, err := w.Write(append(n[:], msg...))
	return err
}

func readMessage(r *bufio.Reader) ([]byte, error) {
	var n [4]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return nil, err
	}
	size := binary.BigEndian.Uint32(n[:])
	if size > maxMessage {
		return nil, fmt.Errorf("front: feed: message of %d bytes", size)
	}
	msg := make([]byte, size)
	_, err := io.ReadFull(r, msg)
	return msg, err
}

// Follow connects to the feed at path and calls apply with every message for this unit, until
// ctx ends; it reconnects (after 100 ms, doubling up to 5 s) whenever the feed goes away, as it
// does while the daemon restarts. An error from apply is logged; the next message is tried.
func Follow(ctx context.Context, path string, log *slog.Logger, apply func([]byte) error) {
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	wait := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := followOnce(ctx, path, log, apply, func() { wait = 100 * time.Millisecond })
		if ctx.Err() != nil {
			return
		}
		log.Debug("feed: disconnected", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
}

func followOnce(ctx context.Context, path string, log *slog.Logger, apply func([]byte) error, connected func()) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	r := bufio.NewReader(c)
	for {
		msg, err := readMessage(r)
		if err != nil {
			return err
		}
		connected()
		if err := apply(msg); err != nil {
			log.Warn("feed: message not applied", "err", err)
		}
	}
}
