package named

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/template"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/onionpod/onionpod/internal/atomicfile"
	"github.com/onionpod/onionpod/internal/lab/child"
	"github.com/onionpod/onionpod/internal/lab/hostcheck"
	"github.com/onionpod/onionpod/internal/netnsfile"
)

// Key is a TSIG key as named.conf declares it.
type Key struct {
	// Name of the key, e.g. "onionpod." (the final dot is optional).
	Name string
	// Algorithm is hmac-sha256 (the default when empty), hmac-sha1, hmac-sha224, hmac-sha384 or
	// hmac-sha512.
	Algorithm string
	// Secret is the base64 key material.
	Secret string
}

// Options configures a BIND9 named.
type Options struct {
	// Dir holds the configuration, zone file, journal and pid file. Empty:
	// a temporary directory that Close removes.
	Dir string
	// Zone served (default "box.example.").
	Zone string
	// Keys may update the zone (update-policy grant KEY zonesub ANY) and
	// transfer it. Empty: one random hmac-sha256 key "onionpod-test.".
	Keys []Key
	// Port on 127.0.0.1 and ::1. 0 picks a free one.
	Port int
	// Primary, when set ("127.0.0.1:PORT"), makes named a secondary of the
	// zone that transfers it from Primary signed with Keys[0] (and accepts
	// its NOTIFY). Otherwise named is the zone's primary.
	Primary string
	// Threads passed to named -n (0: named's default).
	Threads int
	// Persist keeps named running when this process dies (for a lab that
	// outlives the command). By default named gets SIGTERM then.
	Persist bool
	// Netns runs named in that network namespace (e.g. a lab's box, whose
	// loopback it then listens on); "" is this process's.
	Netns string
}

// Server is a running (or stopped) named. Start and Stop may be called again
// on the same directory: the zone and its journal are kept.
type Server struct {
	opts    Options
	tempDir bool
	bin     string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done <-chan struct{}
	log  *tailBuffer
}

// Start writes the configuration and starts named -g in the foreground
// of its own process, listening only on 127.0.0.1 and ::1, and waits until
// it answers. Without named installed the error wraps ErrMissing.
func Start(ctx context.Context, opts Options) (*Server, error) {
	if err := hostcheck.Missing(hostcheck.Named); err != nil {
		return nil, fmt.Errorf("named: %w", err)
	}
	bin, err := exec.LookPath("named")
	if err != nil {
		bin = "/usr/sbin/named"
	}
	n := &Server{opts: opts, bin: bin}
	if n.opts.Zone == "" {
		n.opts.Zone = "box.example."
	}
	n.opts.Zone = strings.ToLower(mdns.Fqdn(n.opts.Zone))
	if len(n.opts.Keys) == 0 {
		n.opts.Keys = []Key{RandomKey("onionpod-test.", "hmac-sha256")}
	}
	if n.opts.Dir == "" {
		d, err := os.MkdirTemp("", "onionpod-named-")
		if err != nil {
			return nil, fmt.Errorf("named: %w", err)
		}
		n.opts.Dir, n.tempDir = d, true
	}
	if err := os.MkdirAll(n.opts.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("named: %w", err)
	}
	if n.opts.Primary == "" {
		if err := n.writeZone(); err != nil {
			n.cleanup()
			return nil, err
		}
	}
	pickPort := n.opts.Port == 0
	for attempt := 0; ; attempt++ {
		if pickPort {
			if n.opts.Port, err = freePort(); err != nil {
				n.cleanup()
				return nil, err
			}
		}
		err = n.Start(ctx)
		if err == nil {
			return n, nil
		}
		if !pickPort || attempt == 4 || !strings.Contains(n.Log(), "address in use") {
			n.cleanup()
			return nil, err
		}
	}
}

// RandomKey makes a TSIG key with a random 32-byte secret.
func RandomKey(name, algorithm string) Key {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return Key{Name: name, Algorithm: algorithm, Secret: base64.StdEncoding.EncodeToString(b)}
}

// Addr is "127.0.0.1:PORT".
func (n *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(n.opts.Port)) }

// Port named listens on (127.0.0.1 and ::1).
func (n *Server) Port() int { return n.opts.Port }

// Zone is the canonical zone name.
func (n *Server) Zone() string { return n.opts.Zone }

// Key is the first TSIG key (the one allowed to update the zone).
func (n *Server) Key() Key { return n.opts.Keys[0] }

// Dir is named's directory.
func (n *Server) Dir() string { return n.opts.Dir }

// Log returns the end of named's log (standard error).
func (n *Server) Log() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.log == nil {
		return ""
	}
	return n.log.String()
}

// Start starts named again after Stop, on the same directory and port.
func (n *Server) Start(ctx context.Context) error {
	n.mu.Lock()
	if n.cmd != nil {
		n.mu.Unlock()
		return errors.New("named: named already running")
	}
	if err := n.writeConfig(); err != nil {
		n.mu.Unlock()
		return err
	}
	args := []string{"-g", "-c", filepath.Join(n.opts.Dir, "named.conf")}
	if n.opts.Threads > 0 {
		args = append(args, "-n", strconv.Itoa(n.opts.Threads))
	}
	cmd := exec.Command(n.bin, args...)
	if n.opts.Netns != "" {
		cmd = exec.Command("nsenter", append([]string{"--net=" + n.opts.Netns, "--", n.bin}, args...)...)
	}
	cmd.Dir = n.opts.Dir
	n.log = &tailBuffer{max: 64 << 10}
	cmd.Stdout, cmd.Stderr = n.log, n.log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if !n.opts.Persist {
		cmd.SysProcAttr.Pdeathsig = syscall.SIGTERM
	}
	done, _, err := child.Start(cmd)
	if err != nil {
		n.mu.Unlock()
		return fmt.Errorf("named: start named: %w", err)
	}
	n.cmd, n.done = cmd, done
	n.mu.Unlock()

	if err := n.waitReady(ctx); err != nil {
		_ = n.Stop()
		return fmt.Errorf("named: named on port %d: %w\n%s", n.opts.Port, err, n.Log())
	}
	return nil
}

// waitReady polls with SOA queries until named answers, over UDP and then over TCP (which
// dynamic updates and transfers use: named may answer on one a moment before the other).
func (n *Server) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	for _, network := range []string{"udp", "tcp"} {
		if err := n.waitAnswer(ctx, network); err != nil {
			return err
		}
	}
	return nil
}

// waitAnswer polls with SOA queries over network until named answers: a primary when it serves
// the zone, a secondary as soon as it answers (the transfer follows).
func (n *Server) waitAnswer(ctx context.Context, network string) error {
	c := &mdns.Client{Net: network, Timeout: 200 * time.Millisecond}
	m := new(mdns.Msg)
	m.SetQuestion(n.opts.Zone, mdns.TypeSOA)
	for {
		select {
		case <-n.done:
			return errors.New("named exited")
		default:
		}
		if r, err := n.exchange(ctx, c, m); err == nil && r != nil && (n.opts.Primary != "" || r.Rcode == mdns.RcodeSuccess) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not answering over %s: %w", network, ctx.Err())
		case <-n.done:
			return errors.New("named exited")
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// exchange sends m to named, from its namespace.
func (n *Server) exchange(ctx context.Context, c *mdns.Client, m *mdns.Msg) (*mdns.Msg, error) {
	if n.opts.Netns == "" {
		r, _, err := c.ExchangeContext(ctx, m, n.Addr())
		return r, err
	}
	var conn net.Conn
	if err := netnsfile.Do(n.opts.Netns, func() error {
		var err error
		conn, err = (&net.Dialer{Timeout: c.Timeout}).DialContext(ctx, c.Net, n.Addr())
		return err
	}); err != nil {
		return nil, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(c.Timeout))
	r, _, err := c.ExchangeWithConn(m, &mdns.Conn{Conn: conn})
	return r, err
}

// Stop terminates named (SIGTERM, then SIGKILL after 10 s) and waits for
// it. Only named's own process is signalled. Stopping a stopped named is a
// no-op.
func (n *Server) Stop() error {
	n.mu.Lock()
	cmd, done := n.cmd, n.done
	n.cmd = nil
	n.mu.Unlock()
	if cmd == nil {
		return nil
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
	return nil
}

// Running reports whether named is running.
func (n *Server) Running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return false
	}
	select {
	case <-n.done:
		return false
	default:
		return true
	}
}

// Close stops named and removes its directory when StartNamed made it.
func (n *Server) Close() error {
	err := n.Stop()
	n.cleanup()
	return err
}

func (n *Server) cleanup() {
	if n.tempDir {
		_ = os.RemoveAll(n.opts.Dir)
	}
}

// Serial asks named for the zone's SOA serial.
func (n *Server) Serial(ctx context.Context) (uint32, error) {
	c := &mdns.Client{Net: "udp", Timeout: time.Second}
	m := new(mdns.Msg)
	m.SetQuestion(n.opts.Zone, mdns.TypeSOA)
	r, err := n.exchange(ctx, c, m)
	if err != nil {
		return 0, fmt.Errorf("named: SOA: %w", err)
	}
	for _, rr := range r.Answer {
		if soa, ok := rr.(*mdns.SOA); ok {
			return soa.Serial, nil
		}
	}
	return 0, fmt.Errorf("named: SOA: no SOA in answer (%s)", mdns.RcodeToString[r.Rcode])
}

func (n *Server) writeZone() error {
	path := filepath.Join(n.opts.Dir, "zone.db")
	if _, err := os.Stat(path); err == nil {
		return nil // kept from an earlier run: the journal goes with it
	}
	z := n.opts.Zone
	data := fmt.Sprintf("$TTL 300\n@ IN SOA ns1.%s hostmaster.%s 1 3600 600 1209600 60\n@ IN NS ns1.%s\nns1 IN A 127.0.0.1\n", z, z, z)
	if _, err := atomicfile.WriteFile(path, []byte(data), 0o600); err != nil {
		return fmt.Errorf("named: %w", err)
	}
	return nil
}

var confTemplate = template.Must(template.New("named.conf").Parse(`options {
	directory "{{.Dir}}";
	pid-file "{{.Dir}}/named.pid";
	session-keyfile "{{.Dir}}/session.key";
	managed-keys-directory "{{.Dir}}";
	listen-on port {{.Port}} { 127.0.0.1; };
	listen-on-v6 port {{.Port}} { ::1; };
	recursion no;
	allow-recursion { none; };
	dnssec-validation no;
	notify no;
	minimal-responses yes;
};
controls { };
{{range .Keys}}
key "{{.Name}}" {
	algorithm {{.Algorithm}};
	secret "{{.Secret}}";
};
{{end}}
zone "{{.Zone}}" {
{{- if .Primary}}
	type secondary;
	file "secondary.db";
	primaries { {{.PrimaryHost}} port {{.PrimaryPort}} key "{{(index .Keys 0).Name}}"; };
{{- else}}
	type primary;
	file "zone.db";
	update-policy {
{{- range .Keys}}
		grant "{{.Name}}" zonesub ANY;
{{- end}}
	};
	allow-transfer { {{range .Keys}}key "{{.Name}}"; {{end}}};
{{- end}}
};
`))

func (n *Server) writeConfig() error {
	type key struct{ Name, Algorithm, Secret string }
	data := struct {
		Dir, Zone, Primary, PrimaryHost, PrimaryPort string
		Port                                         int
		Keys                                         []key
	}{Dir: n.opts.Dir, Zone: n.opts.Zone, Port: n.opts.Port, Primary: n.opts.Primary}
	for _, k := range n.opts.Keys {
		alg := k.Algorithm
		if alg == "" {
			alg = "hmac-sha256"
		}
		data.Keys = append(data.Keys, key{Name: strings.TrimSuffix(k.Name, "."), Algorithm: alg, Secret: k.Secret})
	}
	if n.opts.Primary != "" {
		host, port, err := net.SplitHostPort(n.opts.Primary)
		if err != nil {
			return fmt.Errorf("named: primary %q: %w", n.opts.Primary, err)
		}
		data.PrimaryHost, data.PrimaryPort = host, port
	}
	var buf bytes.Buffer
	if err := confTemplate.Execute(&buf, data); err != nil {
		return fmt.Errorf("named: named.conf: %w", err)
	}
	if _, err := atomicfile.WriteFile(filepath.Join(n.opts.Dir, "named.conf"), buf.Bytes(), 0o600); err != nil {
		return fmt.Errorf("named: %w", err)
	}
	return nil
}

// FreePort finds a port that is free for UDP and TCP on 127.0.0.1 and ::1
// (for a server that must know a peer's port before the peer starts).
func FreePort() (int, error) { return freePort() }

func freePort() (int, error) {
	for i := 0; i < 50; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("named: free port: %w", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		var closers = []interface{ Close() error }{l}
		ok := true
		for _, try := range []struct{ net, addr string }{
			{"udp", "127.0.0.1"}, {"udp", "::1"}, {"tcp", "::1"},
		} {
			a := net.JoinHostPort(try.addr, strconv.Itoa(port))
			if try.net == "udp" {
				c, err := net.ListenPacket(try.net, a)
				if err != nil {
					ok = false
					break
				}
				closers = append(closers, c)
			} else {
				c, err := net.Listen(try.net, a)
				if err != nil {
					ok = false
					break
				}
				closers = append(closers, c)
			}
		}
		for _, c := range closers {
			_ = c.Close()
		}
		if ok {
			return port, nil
		}
	}
	return 0, errors.New("named: no free port")
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.max {
		t.buf = append([]byte(nil), t.buf[len(t.buf)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}
