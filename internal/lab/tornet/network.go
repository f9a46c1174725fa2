package tornet

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/onionpod/onionpod/internal/atomicfile"
	"github.com/onionpod/onionpod/internal/lab/hostcheck"
)

// NetworkOptions configures a private Tor network on 127.0.0.1.
type NetworkOptions struct {
	// Dir keeps each node's directory. Keys (the slow part: RSA authority identities) are
	// kept between runs, so a second StartNetwork on the same Dir is faster; everything
	// else in the nodes' data directories is wiped at start.
	Dir string
	// NetnsPath runs every node inside this network namespace (nsenter --net=PATH); its
	// loopback must be up. "" runs them in the current namespace.
	NetnsPath string
	// Relays is the number of relays besides the three authorities (default 2).
	Relays int
	// KeepAfterExit lets the nodes outlive this process; stop them with StopNetwork(Dir).
	KeepAfterExit bool
}

// Network is a running private Tor network: three directory authorities (which are also
// relays, guards and HSDirs), some relays, and a client with a SOCKS port.
type Network struct {
	opts   NetworkOptions
	auths  []*Tor
	relays []*Tor
	client *Tor
	socks  string
	join   []string
}

// nodeSpec is one node of the network before it starts.
type nodeSpec struct {
	name    string
	dir     string
	orPort  int
	dirPort int // authorities only
	v3ident string
	fpr     string
}

const authorities = 3

// The fastest consensus schedule tor accepts: delays of at least 2 s whose sum is less than
// half the interval.
const (
	votingInterval = "10"
	voteDelay      = "2"
)

// StartNetwork generates (or reuses) the authorities' keys, starts every node and returns
// once each answers on its control socket. Call WaitFormed before starting a tor that joins
// it, WaitReady before fetching through it: the first consensus takes 7-35 s.
func StartNetwork(ctx context.Context, o NetworkOptions) (_ *Network, err error) {
	if o.Dir == "" {
		return nil, errors.New("tornet: NetworkOptions.Dir is empty")
	}
	if o.Relays <= 0 {
		o.Relays = 2
	}
	if err := hostcheck.Missing(hostcheck.Tor); err != nil {
		return nil, fmt.Errorf("tornet: %w", err)
	}
	specs, err := planNodes(o)
	if err != nil {
		return nil, err
	}
	if err := prepareNodes(specs); err != nil {
		return nil, err
	}
	// Keys: authorities need an authority certificate (tor-gencert) and a relay identity.
	auths := specs[:authorities]
	if err := parallel(auths, func(s *nodeSpec) error { return s.ensureKeys(ctx, o.NetnsPath) }); err != nil {
		return nil, err
	}
	n := &Network{opts: o, join: dirAuthorityLines(auths)}
	defer func() {
		if err != nil {
			n.Close()
		}
	}()
	if err := n.startNodes(ctx, specs); err != nil {
		return nil, err
	}
	if n.socks, err = n.client.SocksAddr(ctx); err != nil {
		return nil, err
	}
	return n, nil
}

// planNodes names the authorities and relays and gives each its ports and directory.
func planNodes(o NetworkOptions) ([]*nodeSpec, error) {
	ports, err := pickPorts(2*authorities+o.Relays, o.NetnsPath)
	if err != nil {
		return nil, err
	}
	var specs []*nodeSpec
	for i := range authorities {
		specs = append(specs, &nodeSpec{name: fmt.Sprintf("auth%d", i), orPort: ports[2*i], dirPort: ports[2*i+1]})
	}
	for i := range o.Relays {
		specs = append(specs, &nodeSpec{name: fmt.Sprintf("relay%d", i), orPort: ports[2*authorities+i]})
	}
	for _, s := range specs {
		s.dir = filepath.Join(o.Dir, s.name)
	}
	return specs, nil
}

// prepareNodes makes each node's directories and empties them of everything but its keys, so
// each node starts from a clean state with the identity it had.
func prepareNodes(specs []*nodeSpec) error {
	for _, s := range specs {
		if _, err := prepareNodeDirs(s.dir); err != nil {
			return err
		}
		if err := wipeExceptKeys(filepath.Join(s.dir, "data")); err != nil {
			return err
		}
		removeLogs(s.dir)
	}
	return nil
}

// dirAuthorityLines are the torrc lines naming the authorities, which every node needs.
func dirAuthorityLines(auths []*nodeSpec) []string {
	var lines []string
	for _, s := range auths {
		lines = append(lines, fmt.Sprintf("DirAuthority %s orport=%d no-v2 v3ident=%s 127.0.0.1:%d %s",
			s.name, s.orPort, s.v3ident, s.dirPort, s.fpr))
	}
	return lines
}

// startNodes starts the authorities, the relays and the client at once and files each under n.
func (n *Network) startNodes(ctx context.Context, specs []*nodeSpec) error {
	var mu sync.Mutex
	client := &nodeSpec{name: "client", dir: filepath.Join(n.opts.Dir, "client")}
	return parallel(append(specs, client), func(s *nodeSpec) error {
		var t *Tor
		var err error
		if s == client {
			t, err = n.StartClient(ctx, s.dir, nil)
		} else {
			t, err = n.startNode(ctx, s)
		}
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		switch {
		case s == client:
			n.client = t
		case s.dirPort != 0:
			n.auths = append(n.auths, t)
		default:
			n.relays = append(n.relays, t)
		}
		return nil
	})
}

// commonTorrc are the lines every node of the network and every tor joining it needs.
func (n *Network) commonTorrc() []string {
	return append([]string{
		"TestingTorNetwork 1",
		"UseDefaultFallbackDirs 0",
		"PathsNeededToBuildCircuits 0.67",
		"V3AuthNIntervalsValid 2",
		"LearnCircuitBuildTimeout 0",
		"CircuitBuildTimeout 30",
	}, n.join...)
}

// JoinTorrc returns the torrc lines a tor adds to use this network (for example the managed
// tor that hosts onion services: onion.TorrcOptions.Extra).
func (n *Network) JoinTorrc() []string { return append([]string(nil), n.commonTorrc()...) }

// SocksAddr is the client's SOCKS address ("127.0.0.1:PORT", in the network's namespace).
func (n *Network) SocksAddr() string { return n.socks }

// Client is the network's client tor.
func (n *Network) Client() *Tor { return n.client }

func nodeBaseTorrc(dir, name string) []string {
	return []string{
		"DataDirectory " + filepath.Join(dir, "data"),
		"Nickname " + name,
		"ControlPort unix:" + filepath.Join(dir, "ctl", "control.sock"),
		"CookieAuthentication 1",
		"Log notice file " + filepath.Join(dir, "notice.log"),
		"RunAsDaemon 0",
		"ShutdownWaitLength 0",
		"SafeLogging 0",
	}
}

func (n *Network) startNode(ctx context.Context, s *nodeSpec) (*Tor, error) {
	lines := append(nodeBaseTorrc(s.dir, s.name), n.commonTorrc()...)
	lines = append(lines,
		"SocksPort 0",
		"Address 127.0.0.1",
		fmt.Sprintf("ORPort 127.0.0.1:%d", s.orPort),
		"AssumeReachable 1",
		"ExitRelay 0",
		"ExitPolicy reject *:*",
		"ServerDNSResolvConfFile /dev/null",
		"TestingDirAuthVoteGuard *",
		"TestingDirAuthVoteHSDir *",
		"TestingDirAuthVoteExit *",
	)
	if s.dirPort != 0 {
		lines = append(lines,
			fmt.Sprintf("DirPort 127.0.0.1:%d", s.dirPort),
			"AuthoritativeDirectory 1",
			"V3AuthoritativeDirectory 1",
			"ContactInfo "+s.name+"@test.invalid",
			"V3AuthVotingInterval "+votingInterval,
			"V3AuthVoteDelay "+voteDelay,
			"V3AuthDistDelay "+voteDelay,
			"TestingV3AuthInitialVotingInterval "+votingInterval,
			"TestingV3AuthInitialVoteDelay "+voteDelay,
			"TestingV3AuthInitialDistDelay "+voteDelay,
			// Every node Stable and Fast from the first votes: an onion service's circuits
			// ask for both, and by uptime alone a relay started after the authorities stays
			// below the median for minutes on a loaded machine.
			"AuthDirVoteStableGuaranteeMinUptime 0",
			"AuthDirVoteStableGuaranteeMTBF 0",
			"AuthDirFastGuarantee 1",
		)
	}
	return Start(ctx, Options{
		Dir:           s.dir,
		Torrc:         []byte(strings.Join(lines, "\n") + "\n"),
		ControlSocket: filepath.Join(s.dir, "ctl", "control.sock"),
		NetnsPath:     n.opts.NetnsPath,
		KeepAfterExit: n.opts.KeepAfterExit,
	})
}

// StartClient starts another client of the network in dir, with authPrivate lines (the
// "<56 chars>:descriptor:x25519:<key>" a service's owner hands out) in its
// ClientOnionAuthDir. Its SOCKS address is Tor.SocksAddr. Close it when done (Network.Close
// does not know it).
func (n *Network) StartClient(ctx context.Context, dir string, authPrivate []string) (*Tor, error) {
	if _, err := prepareNodeDirs(dir); err != nil {
		return nil, err
	}
	if err := wipeExceptKeys(filepath.Join(dir, "data")); err != nil {
		return nil, err
	}
	removeLogs(dir)
	return n.startClient(ctx, dir, authPrivate)
}

func (n *Network) startClient(ctx context.Context, dir string, authPrivate []string) (*Tor, error) {
	if _, err := prepareNodeDirs(dir); err != nil {
		return nil, err
	}
	lines := append(nodeBaseTorrc(dir, "client"), n.commonTorrc()...)
	// A client of five nodes may not keep guards or vanguards-lite layer-2 guards: with
	// either, a set picked from an early consensus (the authorities only) can leave no node
	// for a circuit's second hop ("Failed to find node for hop #2 of our path") until the set
	// rotates, hours later. CI saw such a client stuck at "Bootstrapped 95%" for 3 minutes.
	// The box's tor (the product's torrc plus JoinTorrc) keeps both, as on the real network.
	lines = append(lines, "SocksPort 127.0.0.1:auto ExtendedErrors", "ClientOnly 1",
		"UseEntryGuards 0", "VanguardsLiteEnabled 0")
	if len(authPrivate) > 0 {
		authDir := filepath.Join(dir, "onion_auth")
		os.RemoveAll(authDir)
		if err := os.Mkdir(authDir, 0o700); err != nil {
			return nil, fmt.Errorf("tornet: %w", err)
		}
		for i, l := range authPrivate {
			if strings.ContainsAny(l, "\r\n") {
				return nil, errors.New("tornet: auth_private line with a line break")
			}
			if _, err := atomicfile.WriteFile(filepath.Join(authDir, fmt.Sprintf("client%d.auth_private", i)), []byte(l+"\n"), 0o600); err != nil {
				return nil, fmt.Errorf("tornet: %w", err)
			}
		}
		lines = append(lines, "ClientOnionAuthDir "+authDir)
	}
	return Start(ctx, Options{
		Dir:           dir,
		Torrc:         []byte(strings.Join(lines, "\n") + "\n"),
		ControlSocket: filepath.Join(dir, "ctl", "control.sock"),
		NetnsPath:     n.opts.NetnsPath,
		KeepAfterExit: n.opts.KeepAfterExit,
	})
}

// WaitReady waits until the client has bootstrapped to 100% (a consensus, descriptors and a
// circuit).
func (n *Network) WaitReady(ctx context.Context) error {
	return n.client.WaitBootstrapped(ctx)
}

// formedFlags are the flags every node of the network has in a formed consensus: what a tor
// that hosts onion services needs to pick its guards and layer-2 guards and its HSDirs. The
// authorities vote Guard and HSDir for every node (TestingDirAuthVote*) and guarantee Fast and
// Stable (AuthDir*Guarantee*); waiting for those two without the guarantees, CI waited 2
// minutes in vain, so they are not waited for.
var formedFlags = []string{"Running", "Valid", "Guard", "HSDir"}

// WaitFormed waits until the client's consensus lists every authority and relay with the
// flags in formedFlags. Start a tor that keeps entry guards and vanguards-lite layer-2 guards
// (the box's tor, the product's torrc plus JoinTorrc) only after it: such a tor picks its
// guard sets from its first consensus, and one picked from an early consensus (authorities
// only, or relays not yet Running) can leave no node for a circuit's second hop ("Failed to
// find node for hop #2 of our path") until the sets rotate, hours later: CI saw a service
// host upload no descriptor in 4 minutes.
func (n *Network) WaitFormed(ctx context.Context) error {
	want := len(n.auths) + len(n.relays)
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	last := "no consensus"
	for {
		ns, err := n.client.GetInfo(ctx, "ns/all")
		if err == nil {
			ready, total, lacking := formedNodes(ns)
			if ready >= want {
				return nil
			}
			last = fmt.Sprintf("%d of %d nodes listed, %d of them with %s%s", total, want, ready, strings.Join(formedFlags, ", "), lacking)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("tornet: the network did not form (%s): %w", last, ctx.Err())
		case <-tick.C:
		}
	}
}

// formedNodes counts the routers of a consensus (GETINFO ns/all) and those with every flag in
// formedFlags; lacking says what the others lack (", relay0 lacks Running").
func formedNodes(ns string) (ready, total int, lacking string) {
	node := ""
	for _, line := range strings.Split(ns, "\n") {
		switch {
		case strings.HasPrefix(line, "r "):
			total++
			if f := strings.Fields(line); len(f) > 1 {
				node = f[1]
			}
		case strings.HasPrefix(line, "s "):
			flags := strings.Fields(line)[1:]
			var missing []string
			for _, f := range formedFlags {
				if !slices.Contains(flags, f) {
					missing = append(missing, f)
				}
			}
			if len(missing) == 0 {
				ready++
			} else {
				lacking += fmt.Sprintf(", %s lacks %s", node, strings.Join(missing, " "))
			}
		}
	}
	return ready, total, lacking
}

// WaitBootstrapped waits until tor reports "Bootstrapped 100%".
func (t *Tor) WaitBootstrapped(ctx context.Context) error {
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	last := ""
	for {
		v, err := t.GetInfo(ctx, "status/bootstrap-phase")
		if err == nil && strings.Contains(v, "PROGRESS=100") {
			return nil
		}
		if err == nil {
			last = v
		}
		select {
		case <-t.Done():
			return fmt.Errorf("tornet: tor exited while bootstrapping: %s", t.LogTail())
		case <-ctx.Done():
			// The summary goes last: CI shows the end of a failure's output.
			return fmt.Errorf("tornet: tor's log ends with:%s\ntornet: not bootstrapped (%s): %w", t.LogTail(), last, ctx.Err())
		case <-tick.C:
		}
	}
}

// Close stops every node (by PID).
func (n *Network) Close() error {
	var all []*Tor
	all = append(all, n.client)
	all = append(all, n.relays...)
	all = append(all, n.auths...)
	var wg sync.WaitGroup
	for _, t := range all {
		if t == nil {
			continue
		}
		wg.Add(1)
		go func() { defer wg.Done(); t.Close() }()
	}
	wg.Wait()
	return nil
}

// StopNetwork stops the nodes of a network started in dir with KeepAfterExit, from their
// PID files. A PID is signalled only if that process still runs tor on the node's torrc.
func StopNetwork(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("tornet: %w", err)
	}
	var errs []error
	for _, e := range entries {
		if e.IsDir() {
			errs = append(errs, stopByPIDFile(filepath.Join(dir, e.Name())))
		}
	}
	return errors.Join(errs...)
}

func stopByPIDFile(nodeDir string) error {
	b, err := os.ReadFile(filepath.Join(nodeDir, "tor.pid"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return fmt.Errorf("tornet: bad PID file in %s", nodeDir)
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !bytes.Contains(cmdline, []byte(filepath.Join(nodeDir, "torrc"))) {
		os.Remove(filepath.Join(nodeDir, "tor.pid"))
		return nil // gone, or the PID was reused by something else
	}
	syscall.Kill(pid, syscall.SIGTERM)
	for range 100 {
		if err := syscall.Kill(pid, 0); err != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	os.Remove(filepath.Join(nodeDir, "tor.pid"))
	return nil
}

// ensureKeys makes (once) the authority certificate and relay identity of an authority and
// reads its v3 identity and relay fingerprint.
func (s *nodeSpec) ensureKeys(ctx context.Context, netns string) error {
	keys := filepath.Join(s.dir, "data", "keys")
	if err := os.MkdirAll(keys, 0o700); err != nil {
		return fmt.Errorf("tornet: %w", err)
	}
	cert := filepath.Join(keys, "authority_certificate")
	if _, err := os.Stat(cert); err != nil {
		cmd := exec.CommandContext(ctx, "tor-gencert", "--create-identity-key", "-m", "24",
			"-i", filepath.Join(keys, "authority_identity_key"),
			"-s", filepath.Join(keys, "authority_signing_key"),
			"-c", cert, "--passphrase-fd", "0")
		cmd.Stdin = strings.NewReader("\n")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("tornet: tor-gencert for %s: %w: %s", s.name, err, out)
		}
	}
	v3, err := certFingerprint(cert)
	if err != nil {
		return err
	}
	s.v3ident = v3
	argv := []string{"tor", "--defaults-torrc", "/dev/null", "--ignore-missing-torrc", "-f", filepath.Join(s.dir, "no-torrc"),
		"--list-fingerprint", "--DataDirectory", filepath.Join(s.dir, "data"), "--ORPort", "127.0.0.1:1",
		"--Nickname", s.name, "--DisableNetwork", "1", "--Log", "err stderr"}
	if netns != "" {
		argv = append([]string{"nsenter", "--net=" + netns, "--"}, argv...)
	}
	out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("tornet: tor --list-fingerprint for %s: %w: %s", s.name, err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if name, fpr, ok := strings.Cut(strings.TrimSpace(line), " "); ok && name == s.name {
			s.fpr = strings.ReplaceAll(fpr, " ", "")
		}
	}
	if len(s.fpr) != 40 {
		return fmt.Errorf("tornet: no fingerprint for %s in: %s", s.name, out)
	}
	return nil
}

func certFingerprint(cert string) (string, error) {
	f, err := os.Open(cert)
	if err != nil {
		return "", fmt.Errorf("tornet: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fpr, ok := strings.CutPrefix(sc.Text(), "fingerprint "); ok {
			return strings.TrimSpace(fpr), nil
		}
	}
	return "", fmt.Errorf("tornet: no fingerprint line in %s", cert)
}

// wipeExceptKeys empties a data directory except keys/, so a node starts from a clean state
// with the identity it had.
func wipeExceptKeys(data string) error {
	entries, err := os.ReadDir(data)
	if err != nil {
		return fmt.Errorf("tornet: %w", err)
	}
	for _, e := range entries {
		if e.Name() == "keys" {
			continue
		}
		if err := os.RemoveAll(filepath.Join(data, e.Name())); err != nil {
			return fmt.Errorf("tornet: %w", err)
		}
	}
	return nil
}

func removeLogs(dir string) {
	for _, name := range []string{"notice.log", "stderr.log"} {
		os.Remove(filepath.Join(dir, name))
	}
}

// pickPorts returns n distinct free TCP ports on 127.0.0.1: chosen by the kernel in the
// current namespace; at random in another (fresh) namespace, where nothing else listens.
func pickPorts(n int, netns string) ([]int, error) {
	ports := make([]int, 0, n)
	if netns != "" {
		seen := map[int]bool{}
		for len(ports) < n {
			p := 20000 + rand.IntN(30000)
			if !seen[p] {
				seen[p] = true
				ports = append(ports, p)
			}
		}
		return ports, nil
	}
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("tornet: pick port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// parallel runs f on every item at once and joins the errors.
func parallel(items []*nodeSpec, f func(*nodeSpec) error) error {
	errs := make([]error, len(items))
	var wg sync.WaitGroup
	for i, it := range items {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = f(it) }()
	}
	wg.Wait()
	return errors.Join(errs...)
}
