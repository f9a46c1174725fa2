package dashboard

import (
	"encoding/base64"
	"fmt"
	"html/template"
	"strings"
	"time"

	qrcode "github.com/skip2/go-qrcode"

	"github.com/onionpod/onionpod/cmd/internal/api"
	"github.com/onionpod/onionpod/cmd/internal/probe"
)

// appView is one app as the templates show it.
type appView struct {
	Name       string
	State      string
	Health     string // healthy, unreachable, unknown (not probed yet), or "" when not running
	Source     string
	Ports      string
	Stopped    bool
	WantsOnion bool
	OnionOnly  bool
	Onion      string // the .onion
	OnionState string
	OnionQR    template.URL // a PNG data: URL (images work at Tor Browser's safest level; SVG does not)
	DNS        string
	IPv6       string
	IPv4       string
	ULA        string
	Unit       string
	Restarts   int
	LastError  string
	Paths      []pathView
	Containers []containerView // on the app's page
	Cert       string          // the HTTPS certificate: until when, or why there is none
	CertBad    bool            // Cert is an error or expires within a week
}

// containerView is one container on the app's page: its unit and its health check.
type containerView struct {
	Name, Image, Unit, Health, HealthDetail string
	Restarts                                int
}

// pathView is one probe path: its last result and a small history.
type pathView struct {
	Path    string
	Last    probe.Result
	History []probe.Result
}

func (s *Server) view(a api.AppStatus, detail bool) appView {
	v := appView{
		Name: a.App.Name, State: a.State, Stopped: a.App.Stopped, WantsOnion: a.App.WantsOnion(),
		OnionOnly: a.App.OnionOnly, Onion: a.Onion.Address, DNS: strings.TrimSuffix(a.DNS.Name, "."),
		IPv6: a.Network.LAN, IPv4: a.Network.IPv4, ULA: a.Network.ULA, Unit: a.Unit.ActiveState,
		Restarts: a.Unit.Restarts, LastError: a.LastError,
	}
	var sources []string
	for _, c := range a.App.Containers {
		src := c.Image
		if c.Static != "" {
			src = "static site " + c.Static
		}
		if len(a.App.Containers) > 1 {
			src = c.Name + ": " + src
		}
		sources = append(sources, src)
	}
	v.Source = strings.Join(sources, ", ")
	var ports []string
	for _, p := range a.App.Ports {
		if p.Public == p.Target {
			ports = append(ports, fmt.Sprint(p.Public))
		} else {
			ports = append(ports, fmt.Sprintf("%d→%d", p.Public, p.Target))
		}
	}
	v.Ports = strings.Join(ports, " ")
	switch {
	case !v.WantsOnion:
		v.OnionState = "off"
	case a.Onion.Published:
		v.OnionState = "published"
	case a.Onion.Added:
		v.OnionState = "added, descriptor not uploaded yet"
	default:
		v.OnionState = "not added"
	}
	if s.deps.Probes != nil {
		hist := s.deps.Probes.History(a.App.Name)
		for _, p := range []probe.Path{probe.PathOnion, probe.PathIPv6, probe.PathIPv4} {
			if h := hist[p]; len(h) > 0 {
				v.Paths = append(v.Paths, pathView{Path: string(p), Last: h[len(h)-1], History: h})
			}
		}
	}
	var latest []probe.Result
	for _, p := range v.Paths {
		latest = append(latest, p.Last)
	}
	v.Health = probe.Health(a.State == api.StateRunning, latest)
	if detail {
		if v.Onion != "" {
			v.OnionQR = qrDataURL("http://" + v.Onion + "/")
		}
		v.Containers = containerViews(a.Containers)
		v.Cert, v.CertBad = certView(a.TLS, s.cfg.Now())
	}
	return v
}

// containerViews are the containers of an app's status, as its page shows them.
func containerViews(cs []api.ContainerStatus) []containerView {
	var out []containerView
	for _, c := range cs {
		cv := containerView{Name: c.Name, Image: c.Image, Unit: c.Unit.ActiveState, Restarts: c.Unit.Restarts}
		if h := c.Health; h != nil {
			cv.Health, cv.HealthDetail = h.State, h.Check
			if h.LastError != "" {
				cv.HealthDetail += ": " + h.LastError
			}
		}
		out = append(out, cv)
	}
	return out
}

// certView says until when the app's certificate holds, or why it has none (tls nil: the box
// does not do HTTPS).
func certView(tls *api.TLSStatus, now time.Time) (string, bool) {
	switch {
	case tls == nil:
		return "", false
	case tls.NotAfter.IsZero() && tls.LastError != "":
		return "none: " + tls.LastError, true
	case tls.NotAfter.IsZero():
		return "not obtained yet", false
	}
	text := "expires " + tls.NotAfter.UTC().Format("2006-01-02 15:04 MST")
	if !tls.RenewAt.IsZero() {
		text += ", renewal due " + tls.RenewAt.UTC().Format("2006-01-02")
	}
	if tls.LastError != "" {
		text += " (last renewal failed: " + tls.LastError + ")"
	}
	return text, tls.LastError != "" || tls.NotAfter.Sub(now) < 7*24*time.Hour
}

// qrDataURL is a QR code of text as a PNG data: URL ("" if it cannot be made).
func qrDataURL(text string) template.URL {
	png, err := qrcode.Encode(text, qrcode.Medium, 256)
	if err != nil {
		return ""
	}
	return template.URL("data:image/png;base64," + base64.StdEncoding.EncodeToString(png))
}

// TerminalQR draws text as a QR code with Unicode half blocks, for the CLI.
func TerminalQR(text string) (string, error) {
	q, err := qrcode.New(text, qrcode.Low)
	if err != nil {
		return "", err
	}
	return q.ToSmallString(false), nil
}

// actionArgs are the "action" template's: one button in its own POST form.
type actionArgs struct{ CSRF, App, Action, Label, Back string }

var funcs = template.FuncMap{
	"args": func(csrf, app, action, label, back string) actionArgs {
		return actionArgs{CSRF: csrf, App: app, Action: action, Label: label, Back: back}
	},
	"ms": func(d time.Duration) string {
		switch {
		case d <= 0:
			return "-"
		case d < time.Second:
			return fmt.Sprintf("%d ms", d.Milliseconds())
		}
		return fmt.Sprintf("%.1f s", d.Seconds())
	},
	"ago": func(t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		d := time.Since(t).Round(time.Second)
		switch {
		case d < time.Minute:
			return fmt.Sprintf("%d s ago", int(d.Seconds()))
		case d < time.Hour:
			return fmt.Sprintf("%d min ago", int(d.Minutes()))
		}
		return t.Format("2006-01-02 15:04")
	},
	"clock": func(t time.Time) string { return t.Format("15:04:05") },
	"probeTitle": func(r probe.Result) string {
		if r.OK {
			return fmt.Sprintf("%s %s: HTTP %d in %d ms", r.At.Format("15:04:05"), r.Path, r.Status, r.Latency.Milliseconds())
		}
		return fmt.Sprintf("%s %s: failed at %s: %s", r.At.Format("15:04:05"), r.Path, r.Hop, r.Err)
	},
	"realmName": func(r Realm) string {
		if r == RealmOnion {
			return "onion"
		}
		return "LAN"
	},
}
