package tornet

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/textproto"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cretz/bine/control"

	"github.com/onionpod/onionpod/internal/atomicfile"
	"github.com/onionpod/onionpod/internal/lab/hostcheck"
)

// Options starts one tor.
type Options struct {
	// Dir holds the torrc, tor's stderr and what the torrc puts there. Created 0700.
	Dir string
	// Torrc is the whole configuration. It must pass CheckTorrc.
	Torrc []byte
	// ControlSocket is the unix control socket the torrc configures (cookie auth); Start
	// waits until it answers. Its directory must exist with mode 0700.
	ControlSocket string
	// ControlTCP, instead of ControlSocket, is a "127.0.0.1:PORT" control port, with
	// ControlPassword (HashedControlPassword) or cookie authentication when empty.
	ControlTCP      string
	ControlPassword string
	// NetnsPath runs tor inside that network namespace (nsenter --net=PATH); "" = current.
	NetnsPath string
	// KeepAfterExit lets tor outlive this process (for a lab that outlives its command).
	// By default tor exits when this process does.
	KeepAfterExit bool
}

// Tor is one tor process started by this package.
type Tor struct {
	opts      Options
	torrcPath string
	cmd       *exec.Cmd
	done      chan struct{}
	exitErr   error
}

// StartOffline starts a tor that cannot reach any network (DisableNetwork 1, SocksPort 0)
// with a unix control socket in a 0700 directory, cookie authentication and its own
// DataDirectory, all under dir.
func StartOffline(ctx context.Context, dir string) (*Tor, error) {
	sock, err := prepareNodeDirs(dir)
	if err != nil {
		return nil, err
	}
	torrc := fmt.Sprintf(`DataDirectory %s
DisableNetwork 1
SocksPort 0
ControlPort unix:%s
CookieAuthentication 1
Log notice file %s
RunAsDaemon 0
`, filepath.Join(dir, "data"), sock, filepath.Join(dir, "notice.log"))
	return Start(ctx, Options{Dir: dir, Torrc: []byte(torrc), ControlSocket: sock})
}

// prepareNodeDirs makes dir, dir/data and dir/ctl (0700) and returns the socket path.
func prepareNodeDirs(dir string) (string, error) {
	for _, d := range []string{dir, filepath.Join(dir, "data"), filepath.Join(dir, "ctl")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return "", fmt.Errorf("tornet: %w", err)
		}
		if err := os.Chmod(d, 0o700); err != nil {
			return "", fmt.Errorf("tornet: %w", err)
		}
	}
	sock := filepath.Join(dir, "ctl", "control.sock")
	if len(sock) >= 108 {
		return "", fmt.Errorf("tornet: control socket path %q is too long for a unix socket", sock)
	}
	return sock, nil
}

// Start checks the torrc, writes it to Dir/torrc, starts tor and waits until its control
// socket accepts cookie authentication.
func Start(ctx context.Context, o Options) (*Tor, error) {
	if err := CheckTorrc(o.Torrc); err != nil {
		return nil, err
	}
	if err := hostcheck.Missing(hostcheck.Tor); err != nil {
		return nil, fmt.Errorf("tornet: %w", err)
	}
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("tornet: %w", err)
	}
	t := &Tor{opts: o, torrcPath: filepath.Join(o.Dir, "torrc")}
	if _, err := atomicfile.WriteFile(t.torrcPath, o.Torrc, 0o600); err != nil {
		return nil, fmt.Errorf("tornet: %w", err)
	}
	if err := t.start(ctx); err != nil {
		return nil, err
	}
	return t, nil
}

func (t *Tor) start(ctx context.Context) error {
	argv := []string{"tor", "--defaults-torrc", "/dev/null", "-f", t.torrcPath}
	if !t.opts.KeepAfterExit {
		argv = append(argv, "--__OwningControllerProcess", strconv.Itoa(os.Getpid()))
	}
	if t.opts.NetnsPath != "" {
		// nsenter execs tor in place: the PID we get is tor's.
		argv = append([]string{"nsenter", "--net=" + t.opts.NetnsPath, "--"}, argv...)
	}
	stderr, err := os.OpenFile(filepath.Join(t.opts.Dir, "stderr.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("tornet: %w", err)
	}
	defer stderr.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = stderr, stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("tornet: start tor: %w", err)
	}
	t.cmd = cmd
	t.done = make(chan struct{})
	go func() {
		t.exitErr = cmd.Wait()
		close(t.done)
	}()
	if _, err := atomicfile.WriteFile(filepath.Join(t.opts.Dir, "tor.pid"), []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o600); err != nil {
		t.Close()
		return fmt.Errorf("tornet: %w", err)
	}
	if err := t.waitControl(ctx); err != nil {
		t.Close()
		return err
	}
	return nil
}

// waitControl polls the control socket until cookie authentication succeeds.
func (t *Tor) waitControl(ctx context.Context) error {
	deadline := time.NewTimer(60 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var lastErr error
	for {
		c, err := t.Control(ctx)
		if err == nil {
			c.Close()
			return nil
		}
		lastErr = err
		select {
		case <-t.done:
			return fmt.Errorf("tornet: tor exited at start (%v): %s", t.exitErr, t.LogTail())
		case <-ctx.Done():
			return fmt.Errorf("tornet: waiting for tor's control socket: %w (last: %v)", ctx.Err(), lastErr)
		case <-deadline.C:
			return fmt.Errorf("tornet: tor's control socket did not answer in 60 s (last: %v): %s", lastErr, t.LogTail())
		case <-tick.C:
		}
	}
}

// ControlSocket is the path of the unix control socket (cookie authentication).
func (t *Tor) ControlSocket() string { return t.opts.ControlSocket }

// Dir is the directory tor's files are in.
func (t *Tor) Dir() string { return t.opts.Dir }

// PID is tor's process ID (0 when stopped).
func (t *Tor) PID() int {
	if t.cmd == nil || t.exited() {
		return 0
	}
	return t.cmd.Process.Pid
}

func (t *Tor) exited() bool {
	select {
	case <-t.done:
		return true
	default:
		return false
	}
}

// Control opens an authenticated control connection (bine), for tests that inspect tor.
// The caller closes it; closing it never stops tor.
func (t *Tor) Control(ctx context.Context) (*control.Conn, error) {
	var d net.Dialer
	network, addr := "unix", t.opts.ControlSocket
	if t.opts.ControlTCP != "" {
		network, addr = "tcp", t.opts.ControlTCP
	}
	nc, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	c := control.NewConn(textproto.NewConn(nc))
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	if err := c.Authenticate(t.opts.ControlPassword); err != nil {
		nc.Close()
		return nil, err
	}
	nc.SetDeadline(time.Time{})
	return c, nil
}

// GetInfo runs GETINFO key on a fresh control connection and returns the value (multi-line
// values without bine's leading line break).
func (t *Tor) GetInfo(ctx context.Context, key string) (string, error) {
	c, err := t.Control(ctx)
	if err != nil {
		return "", err
	}
	defer c.Close()
	kvs, err := c.GetInfo(key)
	if err != nil {
		return "", err
	}
	for _, kv := range kvs {
		if kv.Key == key {
			return strings.TrimLeft(kv.Val, "\r\n"), nil
		}
	}
	return "", fmt.Errorf("tornet: GETINFO %s: no value", key)
}

// Detached returns the service IDs of tor's detached onion services.
func (t *Tor) Detached(ctx context.Context) ([]string, error) {
	v, err := t.GetInfo(ctx, "onions/detached")
	if err != nil {
		return nil, err
	}
	return strings.Fields(v), nil
}

// SocksAddr returns the address of tor's first SOCKS listener ("127.0.0.1:PORT").
func (t *Tor) SocksAddr(ctx context.Context) (string, error) {
	v, err := t.GetInfo(ctx, "net/listeners/socks")
	if err != nil {
		return "", err
	}
	f := strings.Fields(v)
	if len(f) == 0 {
		return "", errors.New("tornet: tor has no SOCKS listener")
	}
	return strings.Trim(f[0], `"`), nil
}

// Restart stops tor and starts it again on the same directory and torrc: a real restart
// (tor forgets every ephemeral onion service).
func (t *Tor) Restart(ctx context.Context) error {
	if err := t.stop(); err != nil {
		return err
	}
	return t.start(ctx)
}

// Close stops tor (SIGTERM, SIGKILL after 10 s) by its PID. Closing a stopped Tor is a no-op.
func (t *Tor) Close() error { return t.stop() }

func (t *Tor) stop() error {
	if t.cmd == nil || t.exited() {
		return nil
	}
	t.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-t.done:
	case <-time.After(10 * time.Second):
		t.cmd.Process.Kill()
		<-t.done
	}
	os.Remove(filepath.Join(t.opts.Dir, "tor.pid"))
	return nil
}

// Done is closed when tor exits.
func (t *Tor) Done() <-chan struct{} { return t.done }

// LogTail returns the last lines of tor's stderr and notice log, for error messages.
func (t *Tor) LogTail() string {
	var b bytes.Buffer
	for _, name := range []string{"stderr.log", "notice.log"} {
		data, err := os.ReadFile(filepath.Join(t.opts.Dir, name))
		if err != nil || len(data) == 0 {
			continue
		}
		var lines []string
		for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
			// Every GETINFO of a wait opens one: noise that would fill the tail.
			if !strings.Contains(l, "New control connection opened") {
				lines = append(lines, l)
			}
		}
		if len(lines) > 15 {
			lines = lines[len(lines)-15:]
		}
		fmt.Fprintf(&b, "\n--- %s ---\n%s", name, strings.Join(lines, "\n"))
	}
	return b.String()
}
