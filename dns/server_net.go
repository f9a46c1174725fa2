package dns

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"strconv"
	"syscall"

	"github.com/onionpod/onionpod/dns/internal/udpbatch"
	"golang.org/x/sys/unix"
)

const maxMsgSize = 65535

func reusePort(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	})
	if err != nil {
		return err
	}
	return serr
}

// listen binds a group of UDP sockets (SO_REUSEPORT) and a TCP listener on
// one address. With port 0 the first socket picks the port and the others
// (and TCP) take the same one.
func (s *Server) listen(ctx context.Context, addr string) error {
	host, _, _ := net.SplitHostPort(addr)
	n := s.setup.udpSockets
	if n == 0 {
		n = runtime.GOMAXPROCS(0)
	}
	lc := net.ListenConfig{Control: reusePort}
	bind := addr
	for i := 0; i < n; i++ {
		pc, err := lc.ListenPacket(ctx, "udp", bind)
		if err != nil {
			return fmt.Errorf("dns: listen udp %s: %w", addr, err)
		}
		c := pc.(*net.UDPConn)
		s.udp = append(s.udp, c)
		if i == 0 {
			bind = net.JoinHostPort(host, strconv.Itoa(c.LocalAddr().(*net.UDPAddr).Port))
		}
	}
	// TCP without SO_REUSEPORT: a second server on the same port must fail.
	l, err := (&net.ListenConfig{}).Listen(ctx, "tcp", bind)
	if err != nil {
		return fmt.Errorf("dns: listen tcp %s: %w", bind, err)
	}
	s.tcpLs = append(s.tcpLs, l)
	return nil
}

// worker holds what one reader learns of a query, so serving allocates
// nothing.
type worker struct {
	key [260]byte
	q   query
}

// tcpWorker adds the buffers of a TCP connection.
type tcpWorker struct {
	worker
	req [maxMsgSize]byte
	out [maxMsgSize]byte
}

// udpWorker answers the datagrams of one UDP socket (udpbatch.Handler).
type udpWorker struct {
	s *Server
	w worker
}

func (u *udpWorker) Answer(req, out []byte) []byte {
	resp, _ := u.s.serve(&u.w, req, out, false)
	return resp
}

func (s *Server) serveUDP(c *net.UDPConn) {
	_ = udpbatch.Serve(c, &udpWorker{s: s})
}

// serve answers one request into out: the hot path for plain queries, the
// slow path (TSIG, transfers, other opcodes) otherwise. more holds the
// further messages of a zone transfer.
func (s *Server) serve(w *worker, req, out []byte, tcp bool) (resp []byte, more [][]byte) {
	switch parseQuery(req, w.key[:], &w.q) {
	case parseDrop:
		return nil, nil
	case parseFormErr:
		return formErr(req, out), nil
	case parseSlow:
		msgs := s.slow(w, req, out, tcp)
		if len(msgs) == 0 {
			return nil, nil
		}
		return msgs[0], msgs[1:]
	}
	limit := maxMsgSize
	if !tcp {
		limit = w.q.udpLimit()
	}
	return s.snap.Load().respond(req, w.key[:], &w.q, out, limit), nil
}
