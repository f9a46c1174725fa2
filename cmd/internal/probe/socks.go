package probe

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"
)

// SOCKSError is a failed SOCKS5 CONNECT: tor's reply code, which with the SocksPort flag
// ExtendedErrors names the hop of an onion connection that failed (tor's socks-extensions.txt,
// proposal 304).
type SOCKSError struct{ Code byte }

// Error names the hop and what happened.
func (e *SOCKSError) Error() string {
	hop, what := e.Describe()
	return fmt.Sprintf("tor: %s: %s (SOCKS5 reply 0x%02X)", hop, what, e.Code)
}

// Describe maps the reply code to the hop that failed and what tor said of it.
func (e *SOCKSError) Describe() (hop, what string) {
	switch e.Code {
	case 0x01:
		return HopTor, "general failure"
	case 0x02:
		return HopTor, "connection not allowed by tor's SocksPolicy"
	case 0x03:
		return HopTor, "network unreachable"
	case 0x04:
		return HopService, "host unreachable (tor's SocksPort lacks ExtendedErrors to say which hop)"
	case 0x05:
		return HopTarget, "connection refused: the onion service could not reach the app"
	case 0x06:
		return HopTor, "timed out (TTL expired)"
	case 0x07:
		return HopTor, "command not supported"
	case 0x08:
		return HopTor, "address type not supported"
	case 0xF0:
		return HopDescriptor, "onion service descriptor not found"
	case 0xF1:
		return HopDescriptor, "onion service descriptor invalid"
	case 0xF2:
		return HopIntroduction, "introduction failed"
	case 0xF3:
		return HopRendezvous, "rendezvous failed"
	case 0xF4:
		return HopClientAuth, "missing client authorization"
	case 0xF5:
		return HopClientAuth, "wrong client authorization"
	case 0xF6:
		return HopAddress, "invalid onion address"
	case 0xF7:
		return HopIntroduction, "introduction timed out"
	}
	return HopTor, "unknown SOCKS5 reply"
}

// dialSOCKS opens a stream to host:port through the SOCKS5 proxy at proxy (tor, no
// authentication), with the name resolved by the proxy (ATYP domain name).
func dialSOCKS(ctx context.Context, proxy, host string, port uint16) (net.Conn, error) {
	if len(host) > 255 {
		return nil, fmt.Errorf("socks: host name longer than 255 bytes")
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", proxy)
	if err != nil {
		return nil, &hopError{hop: HopTor, err: fmt.Errorf("SOCKS port %s: %w", proxy, err)}
	}
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	conn, err := socksHandshake(c, host, port)
	if err != nil {
		c.Close()
		if ctx.Err() != nil {
			return nil, &hopError{hop: HopTor, err: fmt.Errorf("no answer from tor in time: %w", ctx.Err())}
		}
		var se *SOCKSError
		if errors.As(err, &se) {
			hop, _ := se.Describe()
			return nil, &hopError{hop: hop, err: se}
		}
		return nil, &hopError{hop: HopTor, err: err}
	}
	c.SetDeadline(time.Time{})
	return conn, nil
}

func socksHandshake(c net.Conn, host string, port uint16) (net.Conn, error) {
	if _, err := c.Write([]byte{5, 1, 0}); err != nil {
		return nil, fmt.Errorf("socks: %w", err)
	}
	r := bufio.NewReader(c)
	var hello [2]byte
	if _, err := io.ReadFull(r, hello[:]); err != nil {
		return nil, fmt.Errorf("socks: greeting: %w", err)
	}
	if hello != [2]byte{5, 0} {
		return nil, fmt.Errorf("socks: the proxy wants an authentication method we do not offer (%d)", hello[1])
	}
	req := append([]byte{5, 1, 0, 3, byte(len(host))}, host...)
	req = binary.BigEndian.AppendUint16(req, port)
	if _, err := c.Write(req); err != nil {
		return nil, fmt.Errorf("socks: %w", err)
	}
	var head [4]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return nil, fmt.Errorf("socks: reply: %w", err)
	}
	if head[0] != 5 {
		return nil, fmt.Errorf("socks: reply version %d", head[0])
	}
	if head[1] != 0 {
		return nil, &SOCKSError{Code: head[1]}
	}
	var skip int
	switch head[3] {
	case 1:
		skip = 4 + 2
	case 4:
		skip = 16 + 2
	case 3:
		n, err := r.ReadByte()
		if err != nil {
			return nil, fmt.Errorf("socks: reply: %w", err)
		}
		skip = int(n) + 2
	default:
		return nil, fmt.Errorf("socks: reply address type %d", head[3])
	}
	if _, err := io.CopyN(io.Discard, r, int64(skip)); err != nil {
		return nil, fmt.Errorf("socks: reply: %w", err)
	}
	return &bufConn{Conn: c, r: r}, nil
}

// bufConn is a connection whose first bytes may sit in a bufio.Reader.
type bufConn struct {
	net.Conn
	r *bufio.Reader
}

func (b *bufConn) Read(p []byte) (int, error) { return b.r.Read(p) }

func hostPort(host string, port uint16) string {
	return net.JoinHostPort(host, strconv.Itoa(int(port)))
}
