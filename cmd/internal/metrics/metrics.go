// Package metrics is onionpod's Prometheus endpoint: per-app state, health, restarts, probe
// success and latency per path, the onion descriptor's last upload, DNS queries by response
// code and RFC 2136 updates (through small interfaces the DNS parts satisfy), the reconcile pass duration, and tor's control connection and
// bootstrap. What the daemon knows at scrape time is read through Source; events (a pass, a
// probe, an update) are pushed with the Observe methods. Names and labels follow Prometheus'
// conventions: base units (seconds), _total for counters, timestamps rather than ages.
package metrics

import (
	"context"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/onionpod/onionpod/cmd/internal/probe"
)

// App is one app as the metrics see it.
type App struct {
	Name  string
	State string // running, starting, stopped, failed, ...
	// Healthy: running, and every path's last probe succeeded.
	Healthy  bool
	Restarts int // the pod unit's restarts (systemd's NRestarts)
	// Onion: the app has an onion service; Uploaded is when tor last uploaded its descriptor
	// (zero: not since it was added).
	Onion    bool
	Uploaded time.Time
	// Probes are the last result of each path.
	Probes []probe.Result
	// CertExpiry is when the app's HTTPS certificate expires (zero: none, or no HTTPS).
	CertExpiry time.Time
}

// Tor is the daemon's view of tor.
type Tor struct {
	Connected bool
	Bootstrap int // percent; -1 unknown
}

// Snapshot is what Source reports at a scrape.
type Snapshot struct {
	Apps []App
	Tor  Tor
}

// Source reports the daemon's current view.
type Source func(ctx context.Context) (Snapshot, error)

// DNSQueryCounter is what a DNS server offers for onionpod_dns_queries_total: the queries it
// answered since it started, by response code name (NOERROR, NXDOMAIN, REFUSED...). The
// built-in server can implement it; until then the series is absent.
type DNSQueryCounter interface {
	QueryCounts() map[string]uint64
}

// DNSUpdateCounter is what an RFC 2136 publisher offers for onionpod_dns_updates_total: the
// UPDATE messages it sent since it started, answered with success (ok) or not (failed).
type DNSUpdateCounter interface {
	UpdateCounts() (ok, failed uint64)
}

// States are the app states exported (one series each, 1 for the current one).
var States = []string{"running", "starting", "stopped", "failed", "damaged", "unreadable"}

// Metrics holds the registry and the pushed metrics.
type Metrics struct {
	reg    *prometheus.Registry
	passes prometheus.Histogram
	probes *prometheus.CounterVec
}

// Options configure New.
type Options struct {
	Source Source
	// DNS, when set, is asked for query counts at each scrape.
	DNS DNSQueryCounter
	// Updates, when set, is asked for RFC 2136 update counts at each scrape.
	Updates DNSUpdateCounter
	// Timeout bounds a scrape's Source call (default 5 s).
	Timeout time.Duration
}

// New builds the metrics: the Go runtime's and the process's (CPU seconds, memory), the
// daemon's view through opts.Source, and the pushed ones.
func New(opts Options) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.passes = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "onionpod_reconcile_pass_duration_seconds",
		Help:    "How long a reconcile pass took (observe, plan, apply).",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
	})
	m.probes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "onionpod_probes_total",
		Help: "Reachability probes, by app, path (onion, ipv6, ipv4) and result (ok, or the hop that failed).",
	}, []string{"app", "path", "result"})
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.passes, m.probes,
		&snapshotCollector{src: opts.Source, dns: opts.DNS, updates: opts.Updates, timeout: opts.Timeout},
	)
	return m
}

// ObservePass records one reconcile pass.
func (m *Metrics) ObservePass(d time.Duration) { m.passes.Observe(d.Seconds()) }

// ObserveProbe counts one probe (probe.Monitor's OnResult).
func (m *Metrics) ObserveProbe(app string, r probe.Result) {
	result := "ok"
	if !r.OK {
		result = r.Hop
	}
	m.probes.WithLabelValues(app, string(r.Path), result).Inc()
}

// Forget drops the pushed series of an app that is gone.
func (m *Metrics) Forget(app string) {
	m.probes.DeletePartialMatch(prometheus.Labels{"app": app})
}

// Handler serves the metrics in Prometheus' text (or OpenMetrics) format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{EnableOpenMetrics: true, Timeout: 10 * time.Second})
}

// Registry is the registry (for tests and for other collectors of the daemon).
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

var (
	descState = prometheus.NewDesc("onionpod_app_state",
		"The app's state: 1 for the state it is in, 0 for the others.", []string{"app", "state"}, nil)
	descHealthy = prometheus.NewDesc("onionpod_app_healthy",
		"1 when the app runs and every path's last probe succeeded.", []string{"app"}, nil)
	descRestarts = prometheus.NewDesc("onionpod_app_restarts_total",
		"Restarts of the app's pod unit (systemd's NRestarts).", []string{"app"}, nil)
	descProbeOK = prometheus.NewDesc("onionpod_probe_success",
		"1 when the last probe of the path succeeded.", []string{"app", "path"}, nil)
	descProbeDur = prometheus.NewDesc("onionpod_probe_duration_seconds",
		"How long the last probe of the path took, to the response's headers (failed ones too).", []string{"app", "path"}, nil)
	descProbeAt = prometheus.NewDesc("onionpod_probe_timestamp_seconds",
		"When the last probe of the path ran (Unix time).", []string{"app", "path"}, nil)
	descUploaded = prometheus.NewDesc("onionpod_onion_descriptor_upload_timestamp_seconds",
		"When tor last uploaded the app's onion service descriptor (Unix time); absent until it did. Its age: time() - this.",
		[]string{"app"}, nil)
	descCertExpiry = prometheus.NewDesc("onionpod_tls_certificate_expiry_timestamp_seconds",
		"When the app's HTTPS certificate expires (Unix time); absent while it has none.", []string{"app"}, nil)
	descQueries = prometheus.NewDesc("onionpod_dns_queries_total",
		"DNS queries the built-in server answered, by response code.", []string{"rcode"}, nil)
	descUpdates = prometheus.NewDesc("onionpod_dns_updates_total",
		"RFC 2136 updates sent to the primary, by result (ok, failed).", []string{"result"}, nil)
	descTorUp = prometheus.NewDesc("onionpod_tor_control_connected",
		"1 while the daemon's control connection to tor is up.", nil, nil)
	descTorBoot = prometheus.NewDesc("onionpod_tor_bootstrap_percent",
		"tor's bootstrap progress (100: it has a consensus and can build circuits).", nil, nil)
	descUp = prometheus.NewDesc("onionpod_scrape_source_ok",
		"1 when the daemon's view could be read for this scrape.", nil, nil)
)

// snapshotCollector turns the daemon's view into metrics at each scrape.
type snapshotCollector struct {
	src     Source
	dns     DNSQueryCounter
	updates DNSUpdateCounter
	timeout time.Duration
}

func (c *snapshotCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descState, descHealthy, descRestarts, descProbeOK, descProbeDur,
		descProbeAt, descUploaded, descQueries, descUpdates, descTorUp, descTorBoot, descUp} {
		ch <- d
	}
}

func (c *snapshotCollector) Collect(ch chan<- prometheus.Metric) {
	if c.dns != nil {
		for rcode, n := range c.dns.QueryCounts() {
			ch <- prometheus.MustNewConstMetric(descQueries, prometheus.CounterValue, float64(n), rcode)
		}
	}
	if c.updates != nil {
		ok, failed := c.updates.UpdateCounts()
		ch <- prometheus.MustNewConstMetric(descUpdates, prometheus.CounterValue, float64(ok), "ok")
		ch <- prometheus.MustNewConstMetric(descUpdates, prometheus.CounterValue, float64(failed), "failed")
	}
	if c.src == nil {
		return
	}
	timeout := c.timeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	snap, err := c.src(ctx)
	ch <- prometheus.MustNewConstMetric(descUp, prometheus.GaugeValue, boolValue(err == nil))
	if err != nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(descTorUp, prometheus.GaugeValue, boolValue(snap.Tor.Connected))
	if snap.Tor.Bootstrap >= 0 {
		ch <- prometheus.MustNewConstMetric(descTorBoot, prometheus.GaugeValue, float64(snap.Tor.Bootstrap))
	}
	for _, a := range snap.Apps {
		known := false
		for _, s := range States {
			known = known || s == a.State
			ch <- prometheus.MustNewConstMetric(descState, prometheus.GaugeValue, boolValue(s == a.State), a.Name, s)
		}
		if !known && a.State != "" {
			ch <- prometheus.MustNewConstMetric(descState, prometheus.GaugeValue, 1, a.Name, a.State)
		}
		ch <- prometheus.MustNewConstMetric(descHealthy, prometheus.GaugeValue, boolValue(a.Healthy), a.Name)
		ch <- prometheus.MustNewConstMetric(descRestarts, prometheus.CounterValue, float64(a.Restarts), a.Name)
		if a.Onion && !a.Uploaded.IsZero() {
			ch <- prometheus.MustNewConstMetric(descUploaded, prometheus.GaugeValue, unix(a.Uploaded), a.Name)
		}
		if !a.CertExpiry.IsZero() {
			ch <- prometheus.MustNewConstMetric(descCertExpiry, prometheus.GaugeValue, unix(a.CertExpiry), a.Name)
		}
		for _, r := range a.Probes {
			path := string(r.Path)
			ch <- prometheus.MustNewConstMetric(descProbeOK, prometheus.GaugeValue, boolValue(r.OK), a.Name, path)
			ch <- prometheus.MustNewConstMetric(descProbeDur, prometheus.GaugeValue, r.Latency.Seconds(), a.Name, path)
			ch <- prometheus.MustNewConstMetric(descProbeAt, prometheus.GaugeValue, unix(r.At), a.Name, path)
		}
	}
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func unix(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }
