package dns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"

	"github.com/onionpod/onionpod/dns/internal/udpbatch"
)

const maxMsgSize = 65535

// listen binds a group of UDP sockets (see udpbatch.Listen) and a TCP
// listener on one address. With port 0 the kernel picks the port for the
// group and TCP takes the same one.
func (s *Server) listen(ctx context.Context, addr string) error {
	// With port 0 the kernel picks a free UDP port, which TCP may have in use (another program's
	// outgoing connection): pick again a few times rather than fail.
	_, port, _ := net.SplitHostPort(addr)
	attempts := 1
	if port == "0" {
		attempts = 8
	}
	for i := 1; ; i++ {
		g, err := udpbatch.Listen(addr, s.setup.udpSockets)
		if err != nil {
			return fmt.Errorf("dns: listen udp %s: %w", addr, err)
		}
		bind := g.Addr().String()
		// TCP without SO_REUSEPORT: a second server on the same port must fail.
		l, err := (&net.ListenConfig{}).Listen(ctx, "tcp", bind)
		if err != nil {
			g.Close()
			if i < attempts && errors.Is(err, syscall.EADDRINUSE) {
				continue
			}
			return fmt.Errorf("dns: listen tcp %s: %w", bind, err)
		}
		s.udp = append(s.udp, g)
		s.tcpLs = append(s.tcpLs, l)
		return nil
	}
}

// worker holds what one reader learns of a query, so serving allocates
// nothing.
type worker struct {
	key [260]byte
	q   query
	// rcode is the response code of the last answer serve returned.
	rcode int
}

// tcpWorker adds the buffers of a TCP connection.
type tcpWorker struct {
	worker
	req [maxMsgSize]byte
	out [maxMsgSize]byte
}

// udpWorker answers the datagrams of one UDP socket (udpbatch.Handler).
// Only that socket's thread writes it: its counters too (see rcodeCounts).
type udpWorker struct {
	s      *Server
	w      worker
	counts rcodeCounts
}

func (u *udpWorker) Answer(req, out []byte) []byte {
	resp, _ := u.s.serve(&u.w, req, out, false)
	if resp != nil {
		u.counts.add(u.w.rcode)
	}
	return resp
}

func (s *Server) serveUDP(g *udpbatch.Group) {
	g.Serve(func() udpbatch.Handler {
		u := &udpWorker{s: s}
		s.counts.register(&u.counts)
		return u
	})
}

// serve answers one request into out: the hot path for plain queries, the
// slow path (TSIG, transfers, other opcodes) otherwise. more holds the
// further messages of a zone transfer. w.rcode is set to the answer's
// response code.
func (s *Server) serve(w *worker, req, out []byte, tcp bool) (resp []byte, more [][]byte) {
	switch parseQuery(req, w.key[:], &w.q) {
	case parseDrop:
		return nil, nil
	case parseFormErr:
		w.rcode = rcodeFormErr
		return formErr(req, out), nil
	case parseSlow:
		msgs := s.slow(w, req, out, tcp)
		if len(msgs) == 0 {
			return nil, nil
		}
		w.rcode = rcodeOf(msgs[0])
		return msgs[0], msgs[1:]
	}
	limit := maxMsgSize
	if !tcp {
		limit = w.q.udpLimit()
	}
	resp = s.snap.Load().respond(req, w.key[:], &w.q, out, limit)
	// The header's code, extended by the OPT record that ends the answer
	// to an EDNS query (putOPT: the extended code is its sixth byte).
	w.rcode = int(resp[3] & 0xF)
	if w.q.edns {
		w.rcode |= int(resp[len(resp)-optLen+5]) << 4
	}
	return resp, nil
}
