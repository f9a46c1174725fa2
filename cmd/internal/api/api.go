// Package api is the LocalAPI between the onionpod CLI and its daemon: JSON over HTTP on a unix
// socket that only root (and the configured group) may open. It holds the wire types and the client;
// the daemon serves it.
package api

import (
	"errors"
	"time"

	"github.com/onionpod/onionpod/cmd/internal/store"
)

// Errors the client returns for the daemon's answers, so callers can branch on them.
var (
	ErrNotFound = errors.New("not found")
	ErrBadInput = errors.New("bad input")
	ErrNoDaemon = errors.New("the onionpod daemon is not running")
)

// App states as the daemon reports them.
const (
	StateRunning  = "running"  // unit active, network attached, onion added and DNS published as wanted
	StateStarting = "starting" // on its way: some step not done yet
	StateStopped  = "stopped"  // stopped by the user
	StateFailed   = "failed"   // a step failed; LastError says which and why
)

// AppStatus is one app as the daemon sees it: the desired record and what was observed.
type AppStatus struct {
	App       store.App   `json:"app"`
	State     string      `json:"state"`
	Unit      UnitStatus  `json:"unit"`
	Network   NetStatus   `json:"network"`
	Onion     OnionStatus `json:"onion"`
	DNS       DNSRecord   `json:"dns"`
	TLS       *TLSStatus  `json:"tls,omitempty"` // tls.mode = "acme" only
	LastError string      `json:"last_error,omitempty"`
	Steps     []Step      `json:"steps,omitempty"` // the last reconcile pass, step by step
	Updated   time.Time   `json:"updated"`
}

// Step is one reconcile step of an app and how long it took.
type Step struct {
	Name     string        `json:"name"`
	Duration time.Duration `json:"duration_ns"`
	Err      string        `json:"error,omitempty"`
}

// UnitStatus is the pod's systemd unit.
type UnitStatus struct {
	Name        string    `json:"name,omitempty"`
	ActiveState string    `json:"active_state,omitempty"`
	SubState    string    `json:"sub_state,omitempty"`
	MainPID     int       `json:"main_pid,omitempty"`
	Restarts    int       `json:"restarts"`
	Since       time.Time `json:"since,omitempty"`
}

// NetStatus is the pod's addresses.
type NetStatus struct {
	LAN  string `json:"lan,omitempty"`  // IPv6 address on the LAN (SLAAC)
	ULA  string `json:"ula,omitempty"`  // the host's path to the pod
	IPv4 string `json:"ipv4,omitempty"` // DHCP, when asked for
	MAC  string `json:"mac,omitempty"`
}

// OnionStatus is the pod's onion service.
type OnionStatus struct {
	Address   string    `json:"address,omitempty"` // <56 chars>.onion
	Added     bool      `json:"added"`             // known to tor
	Published bool      `json:"published"`         // descriptor uploaded (HS_DESC UPLOADED)
	Since     time.Time `json:"since,omitempty"`
	Clients   int       `json:"clients,omitempty"` // v3 client-auth keys
	Err       string    `json:"error,omitempty"`   // tor refused this service
}

// DNSRecord is one published name.
type DNSRecord struct {
	Name      string   `json:"name,omitempty"`
	Addresses []string `json:"addresses,omitempty"`
	Published bool     `json:"published"`
}

// TLSStatus is the app's HTTPS: its certificate and front.
type TLSStatus struct {
	Issuer      string    `json:"issuer,omitempty"`
	NotAfter    time.Time `json:"not_after,omitzero"`
	RenewAt     time.Time `json:"renew_at,omitzero"`     // when the next attempt is due
	LastRenewal time.Time `json:"last_renewal,omitzero"` // when this daemon obtained the one in place
	LastError   string    `json:"last_error,omitempty"`  // the last attempt's failure
	Failures    int       `json:"failures,omitempty"`
	Front       bool      `json:"front"` // the HTTPS front serves it
	Note        string    `json:"note,omitempty"`
}

// DNSStatus is what `onionpod dns ls` shows: where records go and which are published.
type DNSStatus struct {
	Mode    string      `json:"mode"` // builtin or rfc2136
	Zone    string      `json:"zone"`
	Server  string      `json:"server"` // where the zone is served or updated
	Serial  uint32      `json:"serial,omitempty"`
	Pending bool        `json:"pending,omitempty"`
	Error   string      `json:"error,omitempty"`
	Records []DNSRecord `json:"records"`
}

// DaemonStatus is the daemon's own health.
type DaemonStatus struct {
	Version   string    `json:"version"`
	Started   time.Time `json:"started"`
	Tor       string    `json:"tor"` // connected / connecting: ...
	Apps      int       `json:"apps"`
	LastPass  time.Time `json:"last_pass"`
	ConfigErr string    `json:"config_error,omitempty"`
}

// WaitFor names what `wait` waits for.
const (
	WaitRunning   = "running"   // the pod runs, onion added, DNS published
	WaitPublished = "published" // and the onion descriptor is uploaded
)

// errorBody is the JSON of every error answer.
type errorBody struct {
	Error string `json:"error"`
}
