package dns

import (
	"context"
	"fmt"
	"net"

	"github.com/onionpod/onionpod/dns/internal/udpbatch"
)

const maxMsgSize = 65535

// listen binds a group of UDP sockets (see udpbatch.Listen) and a TCP
// listener on one address. With port 0 the kernel picks the port for the
// group and TCP takes the same one.
func (s *Server) listen(ctx context.Context, addr string) error {
	g, err := udpbatch.Listen(addr, s.setup.udpSockets)
	if err != nil {
		return fmt.Errorf("dns: listen udp %s: %w", addr, err)
	}
	s.udp = append(s.udp, g)
	bind := g.Addr().String()
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

func (s *Server) serveUDP(g *udpbatch.Group) {
	g.Serve(func() udpbatch.Handler { return &udpWorker{s: s} })
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
