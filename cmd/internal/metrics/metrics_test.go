package metrics

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/onionpod/onionpod/cmd/internal/probe"
	"github.com/onionpod/onionpod/internal/promtest"
)

type queries map[string]uint64

func (q queries) QueryCounts() map[string]uint64 { return q }

type updates [2]uint64

func (u updates) UpdateCounts() (ok, failed uint64) { return u[0], u[1] }

func snapshot() Snapshot {
	now := time.Now()
	return Snapshot{
		Tor: Tor{Connected: true, Bootstrap: 100},
		Apps: []App{
			{Name: "blog", State: "running", Healthy: true, Restarts: 2, Onion: true, Uploaded: now.Add(-time.Minute),
				CertExpiry: now.Add(5 * 24 * time.Hour),
				Probes: []probe.Result{
					{Path: probe.PathOnion, At: now, OK: true, Status: 200, Latency: 800 * time.Millisecond},
					{Path: probe.PathIPv6, At: now, OK: true, Status: 200, Latency: 3 * time.Millisecond},
				}},
			{Name: "shop", State: "stopped"},
			{Name: "wiki", State: "failed", Onion: true,
				Probes: []probe.Result{{Path: probe.PathOnion, At: now, Hop: probe.HopDescriptor, Latency: time.Second}}},
		},
	}
}

// TestPrometheusScrapes: a real Prometheus scrapes the endpoint and PromQL over its HTTP API
// returns the apps' states, probe results, tor's bootstrap and the pushed counters.
func TestPrometheusScrapes(t *testing.T) {
	if r := promtest.SkipReason(); r != "" {
		t.Skip(r)
	}
	m := New(Options{
		Source:  func(context.Context) (Snapshot, error) { return snapshot(), nil },
		DNS:     queries{"NOERROR": 41, "NXDOMAIN": 1},
		Updates: updates{3, 1},
	})
	m.ObservePass(40 * time.Millisecond)
	m.ObserveProbe("wiki", probe.Result{Path: probe.PathOnion, Hop: probe.HopDescriptor})
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	p := promtest.Start(t, promtest.Options{Targets: []string{strings.TrimPrefix(srv.URL, "http://")}})

	apps := func(samples []promtest.Sample) []string {
		var out []string
		for _, s := range samples {
			out = append(out, s.Metric["app"])
		}
		slices.Sort(out)
		return out
	}
	got := p.WaitQuery(t, "", `onionpod_app_state == 1`, 30*time.Second, func(s []promtest.Sample) bool { return len(s) == 3 })
	for _, s := range got {
		want := map[string]string{"blog": "running", "shop": "stopped", "wiki": "failed"}[s.Metric["app"]]
		if s.Metric["state"] != want {
			t.Errorf("app %s in state %s, want %s", s.Metric["app"], s.Metric["state"], want)
		}
	}
	ctx := context.Background()
	for q, want := range map[string][]string{
		`onionpod_app_state{state="running"} == 1`:                               {"blog"},
		`onionpod_app_healthy == 0`:                                              {"shop", "wiki"},
		`onionpod_probe_success{path="onion"} == 0`:                              {"wiki"},
		`onionpod_probe_duration_seconds{path="ipv6"} < 1`:                       {"blog"},
		`time() - onionpod_onion_descriptor_upload_timestamp_seconds > 30`:       {"blog"},
		`onionpod_probes_total{result="descriptor"}`:                             {"wiki"},
		`onionpod_app_restarts_total > 1`:                                        {"blog"},
		`onionpod_tls_certificate_expiry_timestamp_seconds - time() < 7 * 86400`: {"blog"},
	} {
		s, err := p.Query(ctx, "", q)
		if err != nil || !slices.Equal(apps(s), want) {
			t.Errorf("%s: %v (%v), want apps %v", q, apps(s), err, want)
		}
	}
	for q, want := range map[string]string{
		`onionpod_tor_bootstrap_percent`:                       "100",
		`onionpod_dns_queries_total{rcode="NOERROR"}`:          "41",
		`onionpod_dns_updates_total{result="failed"}`:          "1",
		`onionpod_reconcile_pass_duration_seconds_count`:       "1",
		`onionpod_scrape_source_ok`:                            "1",
		`count(process_cpu_seconds_total{job="onionpod"}) > 0`: "1",
	} {
		s, err := p.Query(ctx, "", q)
		if err != nil || len(s) != 1 || s[0].Value != want {
			t.Errorf("%s = %v (%v), want %s", q, s, err, want)
		}
	}
}

// TestSourceFailure: a scrape whose source fails still answers, with onionpod_scrape_source_ok 0
// and no app series.
func TestSourceFailure(t *testing.T) {
	m := New(Options{Source: func(context.Context) (Snapshot, error) { return Snapshot{}, errors.New("store locked") }})
	body := scrape(t, m)
	if !strings.Contains(body, "onionpod_scrape_source_ok 0") || strings.Contains(body, "onionpod_app_state{") {
		t.Errorf("scrape:\n%s", body)
	}
}

func scrape(t *testing.T, m *Metrics) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: m.Handler()}
	go srv.Serve(l)
	defer srv.Close()
	resp, err := http.Get("http://" + l.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
