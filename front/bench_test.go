package front

import (
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// BenchmarkFrontVsCaddy compares, in one run, requests per second and p99 latency (wrk, HTTPS,
// keep-alive connections) of: the app directly (plain HTTP), the app through the front (TLS), and
// the app through Caddy as a TLS reverse proxy (Debian's caddy) with the same certificate, all on
// this namespace's loopback. It prints the figures and the front's ratios to Caddy (target:
// latency within 1.2x, throughput at least 0.8x); it asserts nothing.
func BenchmarkFrontVsCaddy(b *testing.B) {
	for _, tool := range []string{"wrk", "caddy"} {
		if _, err := exec.LookPath(tool); err != nil {
			b.Skipf("%s not installed (bash .ci/install-deps --bench)", tool)
		}
	}
	dir := b.TempDir()
	ca := newTestCA(b)
	bundle := ca.bundleIP(b, "127.0.0.1")
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	splitBundle(b, bundle, certFile, keyFile)

	appLn := listenIPv4Only(b) // the front dials ::1 first
	page := []byte(strings.Repeat("x", 1024))
	app := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(page) })}
	go app.Serve(appLn)
	defer app.Close()
	appPort := appLn.Addr().(*net.TCPAddr).Port

	// The front in a process of its own (this test binary, see TestMain), as Caddy is.
	bundleFile := filepath.Join(dir, "bundle.pem")
	os.WriteFile(bundleFile, bundle, 0o600)
	frontPort := freePort(b)
	frontProc := exec.Command(os.Args[0])
	frontProc.Env = append(os.Environ(), fmt.Sprintf("FRONT_BENCH_LISTEN=127.0.0.1:%d", frontPort),
		"FRONT_BENCH_BUNDLE="+bundleFile, fmt.Sprintf("FRONT_BENCH_TARGET=%d", appPort))
	if err := frontProc.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { frontProc.Process.Kill(); frontProc.Wait() }()
	waitListening(b, frontPort)

	caddyPort := freePort(b)
	caddyfile := filepath.Join(dir, "Caddyfile")
	os.WriteFile(caddyfile, []byte(fmt.Sprintf(`{
	admin off
	auto_https off
}
https://127.0.0.1:%d {
	bind 127.0.0.1
	tls %s %s
	reverse_proxy 127.0.0.1:%d
}
`, caddyPort, certFile, keyFile, appPort)), 0o600)
	caddy := exec.Command("caddy", "run", "--config", caddyfile, "--adapter", "caddyfile")
	caddy.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
	caddyLog, _ := os.Create(filepath.Join(dir, "caddy.log"))
	caddy.Stdout, caddy.Stderr = caddyLog, caddyLog
	if err := caddy.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { caddy.Process.Kill(); caddy.Wait() }()
	waitListening(b, caddyPort)

	targets := []struct{ name, url string }{
		{"app directly (HTTP)", fmt.Sprintf("http://127.0.0.1:%d/", appPort)},
		{"through the front (HTTPS)", fmt.Sprintf("https://127.0.0.1:%d/", frontPort)},
		{"through Caddy (HTTPS)", fmt.Sprintf("https://127.0.0.1:%d/", caddyPort)},
	}
	b.ResetTimer()
	// Three rounds, the targets interleaved in each; the median of each target's rounds.
	runs := map[string][][2]float64{}
	for range 3 {
		for _, tg := range targets {
			rps, p99 := runWrk(b, tg.url)
			runs[tg.name] = append(runs[tg.name], [2]float64{rps, p99})
		}
	}
	results := map[string][2]float64{}
	for _, tg := range targets {
		r := runs[tg.name]
		rps := []float64{r[0][0], r[1][0], r[2][0]}
		p99 := []float64{r[0][1], r[1][1], r[2][1]}
		slices.Sort(rps)
		slices.Sort(p99)
		results[tg.name] = [2]float64{rps[1], p99[1]}
		fmt.Printf("front bench: %-26s %9.0f req/s  p99 %7.2f ms  (median of 3)\n", tg.name, rps[1], p99[1])
	}
	f, c := results["through the front (HTTPS)"], results["through Caddy (HTTPS)"]
	if c[0] > 0 && c[1] > 0 {
		fmt.Printf("front bench: front/Caddy throughput %.2fx (target >= 0.8x), p99 latency %.2fx (target <= 1.2x)\n", f[0]/c[0], f[1]/c[1])
		b.ReportMetric(f[0]/c[0], "throughput-vs-caddy")
		b.ReportMetric(f[1]/c[1], "p99-vs-caddy")
	}
}

var (
	wrkRPS = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	wrkP99 = regexp.MustCompile(`\s99%\s+([0-9.]+)(us|ms|s)`)
)

func runWrk(b *testing.B, url string) (rps, p99ms float64) {
	out, err := exec.Command("wrk", "-t2", "-c32", "-d5s", "--latency", url).CombinedOutput()
	if err != nil {
		b.Fatalf("wrk %s: %v\n%s", url, err, out)
	}
	m, l := wrkRPS.FindSubmatch(out), wrkP99.FindSubmatch(out)
	if m == nil || l == nil {
		b.Fatalf("wrk output:\n%s", out)
	}
	rps, _ = strconv.ParseFloat(string(m[1]), 64)
	p99ms, _ = strconv.ParseFloat(string(l[1]), 64)
	switch string(l[2]) {
	case "us":
		p99ms /= 1000
	case "s":
		p99ms *= 1000
	}
	if strings.Contains(string(out), "Non-2xx") || strings.Contains(string(out), "Socket errors") {
		fmt.Printf("front bench: %s: %s\n", url, out)
	}
	return rps, p99ms
}

func freePort(b testing.TB) int {
	ln := listen(b, "127.0.0.1:0")
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return port
}

func waitListening(b testing.TB, port int) {
	for range 100 {
		if c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port))); err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	b.Fatalf("nothing listens on %d", port)
}

// splitBundle writes a bundle's certificates and key to two files (as Caddy wants them).
func splitBundle(b testing.TB, bundle []byte, certFile, keyFile string) {
	var certs, key []byte
	for rest := bundle; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if blk.Type == "CERTIFICATE" {
			certs = append(certs, pem.EncodeToMemory(blk)...)
		} else {
			key = append(key, pem.EncodeToMemory(blk)...)
		}
	}
	os.WriteFile(certFile, certs, 0o600)
	os.WriteFile(keyFile, key, 0o600)
}
