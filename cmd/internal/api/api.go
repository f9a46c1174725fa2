// Package api is the LocalAPI between the onionpod CLI and its daemon: JSON over HTTP on a unix
// socket that only root (and the configured group) may open. It holds the wire types and the client;
// the daemon serves it.
package api

import (
	"errors"
	"time"

	"github.com/onionpod/onionpod/cmd/internal/probe"
	"github.com/onionpod/onionpod/cmd/internal/store"
	"github.com/onionpod/onionpod/internal/errkind"
)

// Errors the client returns for the daemon's answers, so callers can branch on them. The
// daemon answers errkind's kinds with 400 (BadInput), 404 (NotFound) and 409 (Conflict), and the
// client turns them back into the same kinds.
var (
	ErrNotFound = errkind.NotFound
	ErrBadInput = errkind.BadInput
	ErrConflict = errkind.Conflict
	ErrNoDaemon = errors.New("the onionpod daemon is not running")
)

// App states as the daemon reports them.
const (
	StateRunning  = "running"  // unit active, network attached, onion added and DNS published as wanted
	StateStarting = "starting" // on its way: some step not done yet
	StateStopped  = "stopped"  // stopped by the user
	StateFailed   = "failed"   // a step failed; LastError says which and why (RetryAt: when it is tried again)
	// StateDamaged: the app's record is damaged (kept aside for the user). The app is held:
	// its pod, onion service and DNS records stay as they are, nothing is changed or removed,
	// until `onionpod run` gives it a new record or `onionpod rm` removes all of it.
	StateDamaged = "damaged"
	// StateUnreadable: the app's record cannot be read now (a newer schema, an I/O error). The
	// app is held as for StateDamaged.
	StateUnreadable = "unreadable"
)

// AppStatus is one app as the daemon sees it: the desired record and what was observed.
type AppStatus struct {
	App   store.App `json:"app"`
	State string    `json:"state"`
	// ObservedGeneration is the generation of the record (App.Generation) that the state, steps
	// and error are of: the last pass applied it. It is below App.Generation until a pass has
	// applied the latest change.
	ObservedGeneration int64 `json:"observed_generation"`
	// RetryAt: a failed app is tried again then (per-app backoff; a change of the app retries at once).
	RetryAt   time.Time   `json:"retry_at,omitzero"`
	Unit      UnitStatus  `json:"unit"`
	Network   NetStatus   `json:"network"`
	Onion     OnionStatus `json:"onion"`
	DNS       DNSRecord   `json:"dns"`
	TLS       *TLSStatus  `json:"tls,omitempty"` // tls.mode = "acme" only
	LastError string      `json:"last_error,omitempty"`
	Steps     []Step      `json:"steps,omitempty"` // the last reconcile pass, step by step
	// Damaged are the quarantined copies of the app's damaged records (kept for the user).
	Damaged []string `json:"damaged,omitempty"`
	// Health sums up the last probes of a running app: healthy, unreachable or unknown.
	Health string `json:"health,omitempty"`
	// Probes are the last reachability probe of each path (onion, ipv6, ipv4).
	Probes  []probe.Result `json:"probes,omitempty"`
	Updated time.Time      `json:"updated"`
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
	Mode    string `json:"mode"` // builtin or rfc2136
	Zone    string `json:"zone"`
	Server  string `json:"server"` // where the zone is served or updated
	Serial  uint32 `json:"serial,omitempty"`
	Pending bool   `json:"pending,omitempty"`
	Error   string `json:"error,omitempty"`
	// Damaged tells of a damaged state file (zone or ledger) found at start, kept aside, and
	// what was done instead.
	Damaged string      `json:"damaged,omitempty"`
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

// ImageInfo is what an image archive sent to the daemon (POST /v1/images) loaded as: its ID
// ("sha256:..."), which an app's record then names as its image, and the reference the archive
// gave it.
type ImageInfo struct {
	ID  string `json:"id"`
	Ref string `json:"ref,omitempty"`
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
