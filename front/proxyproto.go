package front

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"
)

// The PROXY protocol, version 2 (haproxy.org/download/2.9/doc/proxy-protocol.txt): the edge sends
// a binary header before the visitor's bytes, so the front learns who the visitor is although the
// connection comes from the host. Only what the edge sends is read: PROXY over TCP, IPv4 or IPv6;
// LOCAL (a health check) keeps the connection's own address; TLVs are skipped.

var proxySignature = []byte("\r\n\r\n\x00\r\nQUIT\n")

const (
	proxyV2Proxy   = 0x21 // version 2, command PROXY
	proxyV2Local   = 0x20 // version 2, command LOCAL
	proxyTCP4      = 0x11
	proxyTCP6      = 0x21
	proxyMaxLength = 512 // addresses and TLVs: far more than the edge ever sends
)

// proxyHeader renders the header of a connection from src to dst.
func proxyHeader(src, dst netip.AddrPort) []byte {
	s, d := src.Addr().Unmap(), dst.Addr().Unmap()
	var b bytes.Buffer
	b.Write(proxySignature)
	b.WriteByte(proxyV2Proxy)
	if s.Is4() && d.Is4() {
		b.WriteByte(proxyTCP4)
		binary.Write(&b, binary.BigEndian, uint16(12))
		s4, d4 := s.As4(), d.As4()
		b.Write(s4[:])
		b.Write(d4[:])
	} else {
		b.WriteByte(proxyTCP6)
		binary.Write(&b, binary.BigEndian, uint16(36))
		s16, d16 := src.Addr().As16(), dst.Addr().As16()
		b.Write(s16[:])
		b.Write(d16[:])
	}
	binary.Write(&b, binary.BigEndian, src.Port())
	binary.Write(&b, binary.BigEndian, dst.Port())
	return b.Bytes()
}

var errProxyHeader = errors.New("front: bad PROXY protocol header")

// readProxyHeader reads a header from r: the visitor's address, or an invalid AddrPort for LOCAL.
func readProxyHeader(r io.Reader) (netip.AddrPort, error) {
	var head [16]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return netip.AddrPort{}, fmt.Errorf("%w: %w", errProxyHeader, err)
	}
	if !bytes.Equal(head[:12], proxySignature) {
		return netip.AddrPort{}, fmt.Errorf("%w: no signature", errProxyHeader)
	}
	n := int(binary.BigEndian.Uint16(head[14:]))
	if n > proxyMaxLength {
		return netip.AddrPort{}, fmt.Errorf("%w: %d bytes of addresses", errProxyHeader, n)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return netip.AddrPort{}, fmt.Errorf("%w: %w", errProxyHeader, err)
	}
	switch {
	case head[12] == proxyV2Local:
		return netip.AddrPort{}, nil
	case head[12] != proxyV2Proxy:
		return netip.AddrPort{}, fmt.Errorf("%w: command %#x", errProxyHeader, head[12])
	case head[13] == proxyTCP4 && n >= 12:
		a, _ := netip.AddrFromSlice(body[0:4])
		return netip.AddrPortFrom(a, binary.BigEndian.Uint16(body[8:10])), nil
	case head[13] == proxyTCP6 && n >= 36:
		a, _ := netip.AddrFromSlice(body[0:16])
		return netip.AddrPortFrom(a.Unmap(), binary.BigEndian.Uint16(body[32:34])), nil
	}
	return netip.AddrPort{}, fmt.Errorf("%w: family %#x", errProxyHeader, head[13])
}

// proxyListener accepts connections and, on those from trusted (the host, where the edge
// connects from), reads a PROXY header before anything else: their RemoteAddr is the visitor's.
// The header is read lazily, in the connection's own goroutine (the first Read or RemoteAddr),
// so a slow peer never holds up Accept.
type proxyListener struct {
	net.Listener
	trusted netip.Addr
	timeout time.Duration
}

func (l *proxyListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if !l.trusted.IsValid() {
		return c, nil
	}
	ap, err := netip.ParseAddrPort(c.RemoteAddr().String())
	if err != nil || ap.Addr().Unmap().WithZone("") != l.trusted {
		return c, nil
	}
	return &proxyConn{Conn: c, timeout: l.timeout}, nil
}

// proxyConn is a connection that starts with a PROXY header.
type proxyConn struct {
	net.Conn
	timeout time.Duration
	once    sync.Once
	remote  net.Addr
	err     error
}

func (c *proxyConn) readHeader() {
	c.once.Do(func() {
		c.Conn.SetReadDeadline(time.Now().Add(c.timeout))
		ap, err := readProxyHeader(c.Conn)
		c.Conn.SetReadDeadline(time.Time{})
		switch {
		case err != nil:
			c.err = err
			c.Conn.Close() // a header was required: nothing else is trusted from this peer
		case ap.IsValid():
			c.remote = net.TCPAddrFromAddrPort(ap)
		}
	})
}

func (c *proxyConn) Read(p []byte) (int, error) {
	c.readHeader()
	if c.err != nil {
		return 0, c.err
	}
	return c.Conn.Read(p)
}

func (c *proxyConn) RemoteAddr() net.Addr {
	c.readHeader()
	if c.remote != nil {
		return c.remote
	}
	return c.Conn.RemoteAddr()
}
