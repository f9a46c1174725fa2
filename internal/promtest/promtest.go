// Package promtest runs a real Prometheus (Debian's prometheus package) for tests: on loopback,
// with its own config and storage directory, scraping the given targets every second, and
// queried over its HTTP API.
package promtest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Binary is Debian's Prometheus server.
const Binary = "/usr/bin/prometheus"

// Prom is one running Prometheus.
type Prom struct {
	URL string // http://127.0.0.1:PORT
	dir string
}

// Options configure Start.
type Options struct {
	// Targets are "host:port" scraped at /metrics every second.
	Targets []string
	// Netns runs Prometheus in that network namespace (nsenter --net); "" = the test's.
	Netns string
	// Port is the port of its web API on 127.0.0.1 (default 19090 in a netns, else a free one).
	Port int
}

// SkipReason says why Prometheus cannot run here ("" when it can).
func SkipReason() string {
	if _, err := os.Stat(Binary); err != nil {
		return "prometheus is not installed (apt-get install prometheus; bash .ci/install-deps)"
	}
	return ""
}

// Start starts Prometheus and waits until it answers; it is stopped (by PID) in t.Cleanup.
func Start(t testing.TB, opts Options) *Prom {
	t.Helper()
	if r := SkipReason(); r != "" {
		t.Skip(r)
	}
	dir := t.TempDir()
	port := opts.Port
	if port == 0 && opts.Netns == "" {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port = l.Addr().(*net.TCPAddr).Port
		l.Close()
	} else if port == 0 {
		port = 19090
	}
	var targets []string
	for _, tg := range opts.Targets {
		targets = append(targets, fmt.Sprintf("%q", tg))
	}
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: onionpod
    static_configs:
      - targets: [%s]
`, strings.Join(targets, ", "))
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	argv := []string{Binary, "--config.file=" + filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path=" + filepath.Join(dir, "data"), "--web.listen-address=" + addr,
		"--log.level=warn"}
	if opts.Netns != "" {
		argv = append([]string{"nsenter", "--net=" + opts.Netns, "--"}, argv...)
	}
	log, err := os.Create(filepath.Join(dir, "prometheus.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		log.Close()
	})
	p := &Prom{URL: "http://" + addr, dir: dir}
	p.wait(t, opts.Netns, done)
	return p
}

func (p *Prom) wait(t testing.TB, netns string, done chan struct{}) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := p.get(context.Background(), netns, "/-/ready", nil)
		if err == nil {
			return
		}
		select {
		case <-done:
			b, _ := os.ReadFile(filepath.Join(p.dir, "prometheus.log"))
			t.Fatalf("prometheus exited: %s", b)
		default:
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(p.dir, "prometheus.log"))
			t.Fatalf("prometheus not ready: %v\n%s", err, b)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// get fetches path of the API, in netns when given (through curl, as the API listens there).
func (p *Prom) get(ctx context.Context, netns, path string, out any) error {
	var body []byte
	if netns != "" {
		b, err := exec.CommandContext(ctx, "nsenter", "--net="+netns, "--", "curl", "-sS", "--fail", "--max-time", "5", p.URL+path).Output()
		if err != nil {
			return fmt.Errorf("curl %s: %w", path, err)
		}
		body = b
	} else {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.URL+path, nil)
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if body, err = io.ReadAll(resp.Body); err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %s: %s", path, resp.Status, body)
		}
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(body, out)
}

// Sample is one series of an instant query's vector result.
type Sample struct {
	Metric map[string]string
	Value  string
}

// Query runs an instant PromQL query over the HTTP API (/api/v1/query) and returns its vector.
func (p *Prom) Query(ctx context.Context, netns, q string) ([]Sample, error) {
	var resp struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string `json:"resultType"`
			Result     []struct {
				Metric map[string]string `json:"metric"`
				Value  []any             `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := p.get(ctx, netns, "/api/v1/query?query="+url.QueryEscape(q), &resp); err != nil {
		return nil, err
	}
	if resp.Status != "success" {
		return nil, fmt.Errorf("query %q: %s", q, resp.Error)
	}
	var out []Sample
	for _, r := range resp.Data.Result {
		s := Sample{Metric: r.Metric}
		if len(r.Value) == 2 {
			s.Value, _ = r.Value[1].(string)
		}
		out = append(out, s)
	}
	return out, nil
}

// WaitQuery repeats q until check accepts its result or d passes.
func (p *Prom) WaitQuery(t testing.TB, netns, q string, d time.Duration, check func([]Sample) bool) []Sample {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		got, err := p.Query(ctx, netns, q)
		cancel()
		if err == nil && check(got) {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("PromQL %q: got %v (%v) after %v", q, got, err, d)
		}
		time.Sleep(500 * time.Millisecond)
	}
}
