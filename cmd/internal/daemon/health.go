package daemon

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/onionpod/onionpod/cmd/internal/api"
	"github.com/onionpod/onionpod/cmd/internal/health"
	"github.com/onionpod/onionpod/cmd/internal/reconcile"
	"github.com/onionpod/onionpod/cmd/internal/store"
	"github.com/onionpod/onionpod/pods"
)

// The daemon runs the containers' health checks (package health): an HTTP GET or a TCP connect
// from the host to the pod's ULA address (through the shim, which the pod's firewall always lets
// in: what tor reaches is what is checked), or a command in the container's sandbox (a transient
// unit: pods.Systemd.RunCheck). An unhealthy container is restarted (restartUnhealthy); every
// change of a container's health refreshes the statuses, which waits on.

// newHealthMonitor makes the daemon's monitor: it restarts unhealthy containers and refreshes
// the statuses (from a goroutine of Run) when a container's health changes.
func (d *Daemon) newHealthMonitor() *health.Monitor {
	return health.New(d.restartUnhealthy, func() {
		select {
		case d.healthChanged <- struct{}{}:
		default:
		}
	})
}

// runHealth runs the monitor and refreshes the statuses on its changes, until ctx ends.
func (d *Daemon) runHealth(ctx context.Context, wg *sync.WaitGroup) {
	wg.Go(func() { d.health.Run(ctx) })
	wg.Go(func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-d.healthChanged:
				d.refresh(ctx, true)
			}
		}
	})
}

// restartUnhealthy restarts a container whose checks failed, unless systemd restarted it (or it
// stopped) after its check began (since): that start is given its own chance.
func (d *Daemon) restartUnhealthy(ctx context.Context, ref health.Ref, since time.Time, reason string) (bool, error) {
	us, err := d.parts.systemd.ContainerStatus(ctx, ref.App, ref.Container)
	if err != nil {
		return false, err
	}
	if us.ActiveState != "active" || us.Since.After(since) {
		return false, nil
	}
	d.log.Warn("container unhealthy: restarting it", "app", ref.App, "container", ref.Container, "why", reason)
	if err := d.parts.systemd.RestartUnit(ctx, us.Unit); err != nil {
		return false, err
	}
	return true, nil
}

// noteStarts counts, per app, the passes that started or restarted its units: a check of the
// app's containers then starts over (with its start period), so a wait never takes the health of
// the containers that ran before for that of the new ones. Call with passMu held.
func (d *Daemon) noteStarts(res reconcile.Result) {
	for name, r := range res.Apps {
		for _, s := range r.Steps {
			if s.Kind == reconcile.StartUnit && s.Err == nil {
				d.unitStarts[name]++
				break
			}
		}
	}
}

// setHealthTargets gives the monitor the checks of every running container of the apps. Call
// with passMu held.
func (d *Daemon) setHealthTargets(apps []store.App, res reconcile.Result, units map[pods.PodRef]pods.Status) {
	var targets []health.Target
	for _, app := range apps {
		if app.Stopped {
			continue
		}
		var net reconcile.AppResult
		if r := res.Apps[app.Name]; r != nil {
			net = *r
		}
		for _, c := range app.Containers {
			if c.Health == nil || units[pods.PodRef{App: app.Name, Container: c.Name}].ActiveState != "active" {
				continue
			}
			h := c.Health.WithDefaults()
			t := health.Target{Ref: health.Ref{App: app.Name, Container: c.Name}, Check: h,
				Describe: describeCheck(app, c), Key: d.checkKey(app, c)}
			switch h.Kind() {
			case "command":
				t.Probe = d.commandProbe(app, c, net.Net.Netns, h)
			default:
				if !net.Net.ULA.IsValid() {
					continue // not attached (yet): nothing to reach
				}
				addr := netip.AddrPortFrom(net.Net.ULA, checkPort(app, c))
				if h.Kind() == "http" {
					t.Probe = httpProbe("http://"+addr.String()+h.HTTP, h.Timeout)
				} else {
					t.Probe = tcpProbe(addr.String(), h.Timeout)
				}
			}
			targets = append(targets, t)
		}
	}
	d.health.Set(targets)
}

// checkKey changes when what runs in the container changes: its record, the app's limits and
// ports, or a start of the app's units by a pass.
func (d *Daemon) checkKey(app store.App, c store.Container) string {
	h := sha256.New()
	c.Trial = nil // its end changes nothing that runs
	json.NewEncoder(h).Encode([]any{c, app.Limits, app.PortsOf(c.Name), d.unitStarts[app.Name]})
	return hex.EncodeToString(h.Sum(nil)[:12])
}

// checkPort is the port an HTTP or TCP check reaches: its own, or the first the container serves.
func checkPort(app store.App, c store.Container) uint16 {
	if c.Health.Port != 0 {
		return c.Health.Port
	}
	if ports := app.PortsOf(c.Name); len(ports) > 0 {
		return ports[0].Target
	}
	return 0
}

// describeCheck says what a container's check is, e.g. "http GET :8080/healthz every 10s".
func describeCheck(app store.App, c store.Container) string {
	h := c.Health.WithDefaults()
	var what string
	switch h.Kind() {
	case "http":
		what = "http GET :" + strconv.Itoa(int(checkPort(app, c))) + h.HTTP
	case "tcp":
		what = "tcp :" + strconv.Itoa(int(checkPort(app, c)))
	default:
		what = "command " + strings.Join(h.Command, " ")
	}
	return fmt.Sprintf("%s every %v (timeout %v, %d retries, start period %v)", what, h.Interval, h.Timeout, h.Retries, h.StartPeriod)
}

// httpProbe GETs url (no redirect followed): 2xx and 3xx pass.
func httpProbe(url string, timeout time.Duration) func(ctx context.Context) error {
	client := &http.Client{
		Transport:     &http.Transport{DisableKeepAlives: true, Proxy: nil},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		req.Header.Set("User-Agent", "onionpod-health-check")
		resp, err := client.Do(req)
		if err != nil {
			return errors.Unwrap(err) // the url.Error's cause: the URL is in the check's description
		}
		resp.Body.Close()
		if resp.StatusCode < 200 || resp.StatusCode > 399 {
			return fmt.Errorf("HTTP %s", resp.Status)
		}
		return nil
	}
}

// tcpProbe connects to addr.
func tcpProbe(addr string, timeout time.Duration) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		var dialer net.Dialer
		conn, err := dialer.DialContext(ctx, "tcp", addr)
		if err != nil {
			var op *net.OpError
			if errors.As(err, &op) && op.Err != nil {
				return op.Err
			}
			return err
		}
		return conn.Close()
	}
}

// commandProbe runs the check's command in the container's sandbox. Its spec is made on the
// first run (it reads the image's record) and kept.
func (d *Daemon) commandProbe(app store.App, c store.Container, netns string, h store.Health) func(ctx context.Context) error {
	var once sync.Once
	var spec pods.Spec
	var argv []string
	var err error
	return func(ctx context.Context) error {
		once.Do(func() { spec, argv, err = d.parts.pods.checkCommand(app, c, netns, h.Command) })
		if err != nil {
			return err
		}
		return d.parts.systemd.RunCheck(ctx, spec, argv, h.Timeout)
	}
}

// containerStatuses are the app's containers as systemd and the health monitor see them.
func (d *Daemon) containerStatuses(app store.App, units map[pods.PodRef]pods.Status) []api.ContainerStatus {
	out := make([]api.ContainerStatus, 0, len(app.Containers))
	for _, c := range app.Containers {
		cs := api.ContainerStatus{Name: c.Name, Image: c.Image, ImageID: c.ImageID, PreviousImageID: c.PreviousImageID,
			Digest: c.Digest, PreviousDigest: c.PreviousDigest, Rejected: c.RejectedImageID, RejectedReason: c.RejectedReason, Trial: c.Trial}
		if c.Static != "" {
			cs.Image = "static " + c.Static
		}
		cs.Unit.Name = pods.ContainerUnitName(app.Name, c.Name)
		if us, ok := units[pods.PodRef{App: app.Name, Container: c.Name}]; ok {
			cs.Unit.ActiveState, cs.Unit.SubState = us.ActiveState, us.SubState
		}
		for _, p := range app.PortsOf(c.Name) {
			cs.Ports = append(cs.Ports, fmt.Sprintf("%d->%d", p.Public, p.Target))
		}
		if c.Health != nil {
			hs := &api.HealthStatus{Check: describeCheck(app, c)}
			if st, ok := d.health.Status(health.Ref{App: app.Name, Container: c.Name}); ok {
				hs.State, hs.Since, hs.Failures, hs.LastError = st.Status, st.Since, st.Failures, st.LastError
				hs.Restarts, hs.LastRestart, hs.RestartReason = st.Restarts, st.LastRestart, st.RestartReason
			}
			cs.Health = hs
		}
		out = append(out, cs)
	}
	return out
}

// containersHealthy reports whether every container with a health check is healthy, and if not,
// why (of the first that is not, when it says anything).
func containersHealthy(cs []api.ContainerStatus) (bool, string) {
	healthy, why := true, ""
	for _, c := range cs {
		h := c.Health
		if h == nil || h.State == api.HealthHealthy {
			continue
		}
		healthy = false
		if why != "" {
			continue
		}
		switch {
		case h.State == api.HealthUnhealthy:
			why = fmt.Sprintf("container %s is unhealthy (%s): restarting it", c.Name, h.LastError)
		case h.Restarts > 0 && !h.LastRestart.Before(h.Since):
			why = fmt.Sprintf("container %s was restarted by its health check at %s (%s); waiting for it to be healthy",
				c.Name, h.LastRestart.Format(time.TimeOnly), h.RestartReason)
		case h.LastError != "":
			why = fmt.Sprintf("container %s is not healthy yet: %s", c.Name, h.LastError)
		}
	}
	return healthy, why
}
