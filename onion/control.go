package onion

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/textproto"
	"strings"
	"sync"
	"time"

	"github.com/cretz/bine/control"
)

// ControlConfig says how to reach and authenticate to a Tor control port.
type ControlConfig struct {
	// Network is "unix" (Address is a socket path) or "tcp" (Address is host:port).
	Network string
	Address string
	// Auth is "cookie" (SAFECOOKIE, with the cookie file tor names in PROTOCOLINFO),
	// "password" (HASHEDPASSWORD with Password), "none" (tor asks for no authentication),
	// or "" for the best method tor offers.
	Auth     string
	Password string
	// Exclusive says the tor is onionpod's own (managed mode): detached onion services that
	// are not in the desired set are removed even when this Manager did not add them (for
	// example those of apps removed while the daemon was down). Leave it false for a system
	// tor that other programs use too: then only services this Manager added are removed.
	Exclusive bool
}

// Format prints the config with its password redacted, for every verb.
func (c ControlConfig) Format(f fmt.State, _ rune) {
	pw := ""
	if c.Password != "" {
		pw = ", password redacted"
	}
	fmt.Fprintf(f, "onion.ControlConfig(%s:%s, auth=%s, exclusive=%t%s)", c.Network, c.Address, c.Auth, c.Exclusive, pw)
}

// ParseControlEndpoint parses "unix:/path/to/socket" or "tcp:host:port" (the config's
// tor.control) into a ControlConfig's Network and Address.
func ParseControlEndpoint(s string) (network, address string, err error) {
	network, address, ok := strings.Cut(s, ":")
	switch {
	case ok && network == "unix" && strings.HasPrefix(address, "/"):
		return network, address, nil
	case ok && network == "tcp":
		if _, _, err := net.SplitHostPort(address); err == nil {
			return network, address, nil
		}
	}
	return "", "", fmt.Errorf("onion: control endpoint %q: want unix:/path or tcp:host:port: %w", s, ErrBadInput)
}

func (c ControlConfig) validate() error {
	switch c.Network {
	case "unix", "tcp":
	default:
		return fmt.Errorf("onion: control network %q: want unix or tcp: %w", c.Network, ErrBadInput)
	}
	if c.Address == "" {
		return fmt.Errorf("onion: control address is empty: %w", ErrBadInput)
	}
	switch c.Auth {
	case "", "cookie", "none":
	case "password":
		if c.Password == "" {
			return fmt.Errorf("onion: control auth password without a password: %w", ErrBadInput)
		}
	default:
		return fmt.Errorf("onion: control auth %q: want cookie, password or none: %w", c.Auth, ErrBadInput)
	}
	return nil
}

// ctlConn is one authenticated control connection. One goroutine (the Manager's) writes and
// consumes responses; a reader goroutine parses responses with bine and queues them in
// order, so commands can be pipelined and events arrive while the owner is idle.
type ctlConn struct {
	nc   net.Conn
	tp   *textproto.Conn
	stop func() bool // stops the context watcher

	mu    sync.Mutex
	queue []*control.Response
	err   error
	avail chan struct{} // capacity 1: something was queued
}

// dialControl connects and authenticates. The connection is closed when ctx ends.
func dialControl(ctx context.Context, cfg ControlConfig) (*ctlConn, error) {
	d := net.Dialer{Timeout: 5 * time.Second}
	nc, err := d.DialContext(ctx, cfg.Network, cfg.Address)
	if err != nil {
		return nil, err
	}
	tp := textproto.NewConn(nc)
	bc := control.NewConn(tp)
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	if err := authenticate(bc, cfg); err != nil {
		nc.Close()
		return nil, fmt.Errorf("authenticate: %w", err)
	}
	nc.SetDeadline(time.Time{})
	c := &ctlConn{nc: nc, tp: tp, avail: make(chan struct{}, 1)}
	// Unblock reads and writes when ctx ends.
	c.stop = context.AfterFunc(ctx, func() { nc.SetDeadline(time.Unix(1, 0)) })
	go c.read(bc)
	return c, nil
}

func authenticate(bc *control.Conn, cfg ControlConfig) error {
	pi, err := bc.ProtocolInfo()
	if err != nil {
		return err
	}
	switch cfg.Auth {
	case "cookie":
		if !pi.HasAuthMethod("SAFECOOKIE") && !pi.HasAuthMethod("NULL") {
			return fmt.Errorf("tor offers %v, not SAFECOOKIE", pi.AuthMethods)
		}
		return bc.Authenticate("")
	case "none":
		if !pi.HasAuthMethod("NULL") {
			return fmt.Errorf("tor offers %v, not NULL (no authentication)", pi.AuthMethods)
		}
		return bc.Authenticate("")
	case "password":
		if !pi.HasAuthMethod("HASHEDPASSWORD") {
			return fmt.Errorf("tor offers %v, not HASHEDPASSWORD", pi.AuthMethods)
		}
		_, err := bc.SendRequest("AUTHENTICATE %s", hex.EncodeToString([]byte(cfg.Password)))
		return err
	default:
		return bc.Authenticate(cfg.Password)
	}
}

// read queues every response until the connection fails.
func (c *ctlConn) read(bc *control.Conn) {
	for {
		resp, err := bc.ReadResponse()
		c.mu.Lock()
		if err != nil {
			c.err = err
		} else {
			c.queue = append(c.queue, resp)
		}
		c.mu.Unlock()
		select {
		case c.avail <- struct{}{}:
		default:
		}
		if err != nil {
			return
		}
	}
}

func (c *ctlConn) close() {
	c.stop()
	c.nc.Close()
}

// send writes commands in one flush. Commands may hold a secret key: they never appear in
// errors.
func (c *ctlConn) send(cmds ...string) error {
	for _, cmd := range cmds {
		if _, err := c.tp.W.WriteString(cmd + "\r\n"); err != nil {
			return err
		}
	}
	return c.tp.W.Flush()
}

// next returns the next queued response, waiting for one.
func (c *ctlConn) next(ctx context.Context) (*control.Response, error) {
	for {
		c.mu.Lock()
		if len(c.queue) > 0 {
			r := c.queue[0]
			c.queue[0] = nil
			c.queue = c.queue[1:]
			c.mu.Unlock()
			return r, nil
		}
		err := c.err
		c.mu.Unlock()
		if err != nil {
			return nil, err
		}
		select {
		case <-c.avail:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// roundTrip pipelines cmds and returns their replies in order; events that arrive meanwhile
// go to onEvent. A reply with an error status is returned as is (not as an error): callers
// judge each one.
func (c *ctlConn) roundTrip(ctx context.Context, onEvent func(*control.Response), cmds ...string) ([]*control.Response, error) {
	if err := c.send(cmds...); err != nil {
		return nil, err
	}
	replies := make([]*control.Response, 0, len(cmds))
	for len(replies) < len(cmds) {
		r, err := c.next(ctx)
		if err != nil {
			return nil, err
		}
		if r.IsAsync() {
			onEvent(r)
			continue
		}
		replies = append(replies, r)
	}
	return replies, nil
}

// replyError turns a failed reply into an error ("552 Unknown Onion Service id").
func replyError(r *control.Response) error {
	if r.IsOk() {
		return nil
	}
	return fmt.Errorf("tor: %d %s", r.Err.Code, r.Reply)
}

// parseDetached parses the reply to GETINFO onions/detached: service IDs, one per line.
func parseDetached(r *control.Response) (map[string]bool, error) {
	if err := replyError(r); err != nil {
		return nil, err
	}
	ids := map[string]bool{}
	for _, d := range r.Data {
		v, ok := strings.CutPrefix(d, "onions/detached=")
		if !ok {
			continue
		}
		for _, id := range strings.Fields(v) {
			ids[id] = true
		}
		return ids, nil
	}
	return nil, errors.New("tor: GETINFO onions/detached: no value in reply")
}
