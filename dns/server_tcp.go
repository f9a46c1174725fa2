package dns

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"
)

// TCP serves zone transfers to the secondaries and the answers too large for
// UDP. Its connections are a scarce resource an outsider could hold, so:
//   - one source (an IPv4 address, an IPv6 /64) holds at most
//     maxTCPPerSource connections: a flood from one place leaves the other
//     slots to everyone else. A new connection from a source at its share
//     takes the place of that source's connection waiting the longest for
//     (the rest of) a query, or is refused when all of them are being
//     answered. The secondaries' own addresses have no share to exhaust;
//   - a connection must deliver its first query within tcpFirstTimeout, and
//     may then stay idle only tcpIdleTimeout between queries; a started
//     message must arrive whole within tcpReadTimeout;
//   - when every slot is taken, a new connection takes the place of the one
//     waiting the longest, from any source, so many sources holding idle or
//     trickling connections cannot lock a secondary out either. A
//     connection being answered (a transfer under way) is never evicted.
const (
	maxTCPConns     = 128
	maxTCPPerSource = 8
	tcpFirstTimeout = 3 * time.Second
	tcpIdleTimeout  = 5 * time.Second
	tcpReadTimeout  = 2 * time.Second
	tcpWriteTimeout = 10 * time.Second
)

// tcpConns admits, tracks and evicts the server's TCP connections.
type tcpConns struct {
	unlimited map[netip.Prefix]bool // sources with no share: the secondaries

	mu        sync.Mutex
	closed    bool
	all       map[net.Conn]*tcpConn
	perSource map[netip.Prefix]int
}

// tcpConn is the state of one admitted connection.
type tcpConn struct {
	source    netip.Prefix
	idle      bool      // waiting for (the rest of) the next query
	idleSince time.Time // when it started waiting
}

// newTCPConns tracks connections; the secondaries' addresses (host:port,
// host names ignored) have no per-source share.
func newTCPConns(secondaries []secondary) *tcpConns {
	t := &tcpConns{unlimited: map[netip.Prefix]bool{}, all: map[net.Conn]*tcpConn{}, perSource: map[netip.Prefix]int{}}
	for _, sec := range secondaries {
		host, _, _ := net.SplitHostPort(sec.addr)
		if ip, err := netip.ParseAddr(host); err == nil {
			t.unlimited[sourceOf(net.TCPAddrFromAddrPort(netip.AddrPortFrom(ip, 0)))] = true
		}
	}
	return t
}

// sourceOf groups a peer address: an IPv4 address alone, an IPv6 address
// with its /64 (one host easily holds a whole /64).
func sourceOf(a net.Addr) netip.Prefix {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return netip.Prefix{}
	}
	ip := ta.AddrPort().Addr().Unmap().WithZone("")
	if ip.Is4() {
		return netip.PrefixFrom(ip, 32)
	}
	p, _ := ip.Prefix(64)
	return p
}

// admit registers c, making room when its source has its share (evicting
// that source's connection waiting the longest) or all slots are taken
// (evicting the one waiting the longest). It reports false, and c must be
// closed, when there is no room to make or the server is closing.
func (t *tcpConns) admit(c net.Conn, now time.Time) bool {
	src := sourceOf(c.RemoteAddr())
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	if t.perSource[src] >= maxTCPPerSource && !t.unlimited[src] && !t.evictWaiting(func(st *tcpConn) bool { return st.source == src }) {
		return false
	}
	if len(t.all) >= maxTCPConns && !t.evictWaiting(func(*tcpConn) bool { return true }) {
		return false
	}
	t.all[c] = &tcpConn{source: src, idle: true, idleSince: now}
	t.perSource[src]++
	return true
}

// evictWaiting closes the connection among those that match which has
// waited the longest for a query; false when every one is being answered.
func (t *tcpConns) evictWaiting(match func(*tcpConn) bool) bool {
	var victim net.Conn
	var since time.Time
	for c, st := range t.all {
		if st.idle && match(st) && (victim == nil || st.idleSince.Before(since)) {
			victim, since = c, st.idleSince
		}
	}
	if victim == nil {
		return false
	}
	t.dropLocked(victim)
	_ = victim.Close()
	return true
}

// setIdle marks c as waiting for a query (idle) or working on one.
func (t *tcpConns) setIdle(c net.Conn, idle bool, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if st := t.all[c]; st != nil {
		st.idle, st.idleSince = idle, now
	}
}

// drop forgets c (it may have been evicted already).
func (t *tcpConns) drop(c net.Conn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.dropLocked(c)
}

func (t *tcpConns) dropLocked(c net.Conn) {
	st := t.all[c]
	if st == nil {
		return
	}
	delete(t.all, c)
	if t.perSource[st.source]--; t.perSource[st.source] <= 0 {
		delete(t.perSource, st.source)
	}
}

// closeAll closes every connection and admits no more.
func (t *tcpConns) closeAll() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
	for c := range t.all {
		_ = c.Close()
	}
}

func (s *Server) serveTCP(ctx context.Context, l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || ctx.Err() != nil {
				return
			}
			time.Sleep(10 * time.Millisecond)
			continue
		}
		if !s.tcp.admit(c, time.Now()) {
			_ = c.Close()
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serveConn(c)
			s.tcp.drop(c)
			_ = c.Close()
		}()
	}
}

// serveConn answers length-prefixed messages on one TCP connection until
// the peer closes it, stays idle too long, or is evicted.
func (s *Server) serveConn(c net.Conn) {
	w := s.workers.Get().(*tcpWorker)
	defer s.workers.Put(w)
	var lenBuf [2]byte
	wait := tcpFirstTimeout
	for {
		start := time.Now()
		_ = c.SetReadDeadline(start.Add(wait))
		if _, err := io.ReadFull(c, lenBuf[:1]); err != nil {
			return
		}
		if wait != tcpFirstTimeout { // the first query's deadline covers its whole message
			_ = c.SetReadDeadline(time.Now().Add(tcpReadTimeout))
		}
		if _, err := io.ReadFull(c, lenBuf[1:]); err != nil {
			return
		}
		n := int(binary.BigEndian.Uint16(lenBuf[:]))
		if _, err := io.ReadFull(c, w.req[:n]); err != nil {
			return
		}
		s.tcp.setIdle(c, false, time.Now())
		resp, more := s.serve(&w.worker, w.req[:n], w.out[:], true)
		if resp != nil {
			s.counts.tcp.add(w.rcode)
			_ = c.SetWriteDeadline(time.Now().Add(tcpWriteTimeout))
			for _, m := range append([][]byte{resp}, more...) {
				if err := writeTCP(c, m); err != nil {
					return
				}
			}
		}
		s.tcp.setIdle(c, true, time.Now())
		wait = tcpIdleTimeout
	}
}

func writeTCP(c net.Conn, msg []byte) error {
	buf := make([]byte, 2+len(msg))
	binary.BigEndian.PutUint16(buf, uint16(len(msg)))
	copy(buf[2:], msg)
	_, err := c.Write(buf)
	return err
}
