// Package registry runs Debian's docker-registry (the CNCF distribution registry, a registry
// nobody on this project wrote) for the lab and the tests: plain HTTP on a loopback or lab
// address, its blobs in a directory of its own, its access log kept so a test can see which
// blobs a client fetched. Push copies an image archive into it with skopeo, as a user would.
// It is product code for `onionpod lab` and the tests' engine (no testing import); the test
// wrapper is registrytest.
package registry

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/onionpod/onionpod/internal/atomicfile"
	"github.com/onionpod/onionpod/internal/lab/child"
	"github.com/onionpod/onionpod/internal/lab/hostcheck"
)

// Options configures a registry.
type Options struct {
	// Dir holds the configuration and the registry's storage. Empty: a temporary directory
	// that Stop removes.
	Dir string
	// Host is the address clients reach it at (default 127.0.0.1). Host names are not accepted.
	// On loopback it listens there only; in a namespace of its own (Netns) on every address of
	// that namespace, and Push reaches it on 127.0.0.1 there (skopeo's reference parser takes no
	// IPv6 address).
	Host string
	// Port; 0 picks a free one (on loopback only: in another namespace, name one).
	Port int
	// Netns, when set, is the path of a network namespace the registry runs in
	// (nsenter --net=NETNS), e.g. the lab LAN's.
	Netns string
}

// Request is one line of the registry's access log.
type Request struct {
	Method string
	Path   string
	Status int
}

// Registry is a running docker-registry.
type Registry struct {
	opts    Options
	tempDir bool
	cmd     *exec.Cmd
	exited  <-chan struct{}

	mu       sync.Mutex
	flushes  int
	requests []Request
	errTail  []string
	logDone  chan struct{}
}

// Start writes a configuration (no authentication, plain HTTP, deletes allowed) and starts
// docker-registry serve, and waits until it answers /v2/. Without docker-registry installed the
// error wraps hostcheck.ErrUnavailable.
func Start(ctx context.Context, opts Options) (*Registry, error) {
	if err := hostcheck.Missing(hostcheck.Registry); err != nil {
		return nil, fmt.Errorf("registry: %w", err)
	}
	r := &Registry{opts: opts}
	if r.opts.Host == "" {
		r.opts.Host = "127.0.0.1"
	}
	if net.ParseIP(r.opts.Host) == nil {
		return nil, fmt.Errorf("registry: host %q: want an IP address", r.opts.Host)
	}
	if r.opts.Dir == "" {
		d, err := os.MkdirTemp("", "onionpod-registry-")
		if err != nil {
			return nil, fmt.Errorf("registry: %w", err)
		}
		r.opts.Dir, r.tempDir = d, true
	}
	if r.opts.Port == 0 {
		if r.opts.Netns != "" {
			r.cleanup()
			return nil, errors.New("registry: a registry in another namespace needs a port")
		}
		p, err := freePort(r.opts.Host)
		if err != nil {
			r.cleanup()
			return nil, err
		}
		r.opts.Port = p
	}
	if err := r.start(ctx); err != nil {
		r.cleanup()
		return nil, err
	}
	return r, nil
}

const configTemplate = `version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: %q
  delete:
    enabled: true
http:
  addr: %q
  secret: onionpod-lab-registry
`

func (r *Registry) start(ctx context.Context) error {
	cfg := filepath.Join(r.opts.Dir, "config.yml")
	data := filepath.Join(r.opts.Dir, "data")
	if err := os.MkdirAll(data, 0o700); err != nil {
		return fmt.Errorf("registry: %w", err)
	}
	listen := r.Addr()
	if r.opts.Netns != "" {
		listen = ":" + strconv.Itoa(r.opts.Port)
	}
	if _, err := atomicfile.WriteFile(cfg, fmt.Appendf(nil, configTemplate, data, listen), 0o600); err != nil {
		return fmt.Errorf("registry: %w", err)
	}
	args := []string{"serve", cfg}
	bin := "docker-registry"
	if r.opts.Netns != "" {
		args = append([]string{"--net=" + r.opts.Netns, "--", bin}, args...)
		bin = "nsenter"
	}
	cmd := exec.Command(bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM, Setpgid: true}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return fmt.Errorf("registry: %w", err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return fmt.Errorf("registry: %w", err)
	}
	exited, _, err := child.Start(cmd)
	if err != nil {
		return fmt.Errorf("registry: start: %w", err)
	}
	r.cmd, r.exited = cmd, exited
	r.logDone = make(chan struct{}, 2)
	go r.readAccessLog(stdout)
	go r.readErrors(stderr)
	if err := r.waitReady(ctx); err != nil {
		r.Stop()
		return err
	}
	return nil
}

// waitReady polls /v2/ until it answers 200 (from inside the registry's namespace when it has
// one: curl through nsenter), for at most 10 s.
func (r *Registry) waitReady(ctx context.Context) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		if r.ping(ctx) == nil {
			return nil
		}
		select {
		case <-r.exited:
			return fmt.Errorf("registry: docker-registry exited: %s", r.errorTail())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("registry: not answering on %s after 10 s: %s", r.Addr(), r.errorTail())
		}
	}
}

func (r *Registry) ping(ctx context.Context) error { return r.get(ctx, "/v2/") }

// get sends GET path to the registry (from its namespace when it has one: curl through nsenter)
// and wants 200.
func (r *Registry) get(ctx context.Context, path string) error {
	if r.opts.Netns != "" {
		return exec.CommandContext(ctx, "nsenter", "--net="+r.opts.Netns, "--", "curl", "-fsS", "-o", "/dev/null", "--max-time", "1", r.URL()+path).Run()
	}
	c := http.Client{Timeout: time.Second}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.URL()+path, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

// readAccessLog parses the combined-format lines docker-registry writes to stdout:
// 127.0.0.1 - - [date] "GET /v2/ HTTP/1.1" 200 2 "" "curl/7.88.1"
func (r *Registry) readAccessLog(rd io.Reader) {
	defer func() { r.logDone <- struct{}{} }()
	sc := bufio.NewScanner(rd)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		_, rest, ok := strings.Cut(line, `"`)
		if !ok {
			continue
		}
		reqLine, rest, ok := strings.Cut(rest, `"`)
		if !ok {
			continue
		}
		f := strings.Fields(reqLine)
		st := strings.Fields(rest)
		if len(f) < 2 || len(st) < 1 {
			continue
		}
		status, _ := strconv.Atoi(st[0])
		r.mu.Lock()
		r.requests = append(r.requests, Request{Method: f[0], Path: f[1], Status: status})
		r.mu.Unlock()
	}
}

func (r *Registry) readErrors(rd io.Reader) {
	defer func() { r.logDone <- struct{}{} }()
	sc := bufio.NewScanner(rd)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		r.mu.Lock()
		r.errTail = append(r.errTail, sc.Text())
		if len(r.errTail) > 20 {
			r.errTail = r.errTail[len(r.errTail)-20:]
		}
		r.mu.Unlock()
	}
}

func (r *Registry) errorTail() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.errTail, "\n")
}

// Requests returns the requests served so far (the access log is written after each response:
// a request just answered may show a moment later).
func (r *Registry) Requests() []Request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Request(nil), r.requests...)
}

// Flush waits until every request answered before it was called is in Requests: it sends a
// marker request of its own and waits (at most 5 s) for it to be logged. The marker is not
// kept.
func (r *Registry) Flush(ctx context.Context) error {
	r.mu.Lock()
	r.flushes++
	marker := "/v2/?onionpod-flush=" + strconv.Itoa(r.flushes)
	r.mu.Unlock()
	if err := r.get(ctx, marker); err != nil {
		return fmt.Errorf("registry: flush: %w", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		r.mu.Lock()
		for i, q := range r.requests {
			if q.Path == marker {
				r.requests = append(r.requests[:i], r.requests[i+1:]...)
				r.mu.Unlock()
				return nil
			}
		}
		r.mu.Unlock()
		time.Sleep(5 * time.Millisecond)
	}
	return errors.New("registry: flush: the marker request was not logged within 5 s")
}

// ResetRequests forgets the requests answered so far (Flush first: a request answered just
// before is not left to show up later).
func (r *Registry) ResetRequests(ctx context.Context) error {
	if err := r.Flush(ctx); err != nil {
		return err
	}
	r.mu.Lock()
	r.requests = nil
	r.mu.Unlock()
	return nil
}

// Addr is HOST:PORT (IPv6 hosts in brackets).
func (r *Registry) Addr() string { return net.JoinHostPort(r.opts.Host, strconv.Itoa(r.opts.Port)) }

// URL is http://HOST:PORT.
func (r *Registry) URL() string { return "http://" + r.Addr() }

// Dir is the registry's directory (configuration and storage).
func (r *Registry) Dir() string { return r.opts.Dir }

// Ref names repo:tag at this registry ("127.0.0.1:PORT/repo:tag").
func (r *Registry) Ref(repoTag string) string { return r.Addr() + "/" + repoTag }

// Push copies an image archive (a `docker save` tar, "docker-archive:" assumed, or a path given
// with its transport, "oci-archive:F.tar") to repoTag at this registry with skopeo, over plain
// HTTP. In a registry's own namespace skopeo runs there too, and pushes to 127.0.0.1.
func (r *Registry) Push(ctx context.Context, archive, repoTag string) error {
	if err := hostcheck.Missing(hostcheck.Skopeo); err != nil {
		return fmt.Errorf("registry: %w", err)
	}
	src := archive
	if !strings.HasPrefix(src, "docker-archive:") && !strings.HasPrefix(src, "oci-archive:") {
		src = "docker-archive:" + src
	}
	dest := r.Ref(repoTag)
	if r.opts.Netns != "" {
		dest = net.JoinHostPort("127.0.0.1", strconv.Itoa(r.opts.Port)) + "/" + repoTag
	}
	args := []string{"copy", "--quiet", "--insecure-policy", "--dest-tls-verify=false", src, "docker://" + dest}
	bin := "skopeo"
	if r.opts.Netns != "" {
		args = append([]string{"--net=" + r.opts.Netns, "--", bin}, args...)
		bin = "nsenter"
	}
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("registry: push %s: %w: %s", repoTag, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Stop stops the registry (SIGTERM, SIGKILL after 5 s). Its storage stays unless Start made a
// temporary directory for it.
func (r *Registry) Stop() {
	if r.cmd != nil && r.cmd.Process != nil {
		_ = r.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-r.exited:
		case <-time.After(5 * time.Second):
			_ = r.cmd.Process.Kill()
			<-r.exited
		}
		<-r.logDone
		<-r.logDone
		r.cmd = nil
	}
	r.cleanup()
}

func (r *Registry) cleanup() {
	if r.tempDir {
		os.RemoveAll(r.opts.Dir)
	}
}

func freePort(host string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, fmt.Errorf("registry: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
