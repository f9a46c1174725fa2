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
	// ErrBusy: the daemon refused the request for now (429: this user has as many uploads,
	// waits or log followers open as it may); the same request may succeed once one ends.
	ErrBusy = errors.New("busy")
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
	RetryAt time.Time `json:"retry_at,omitzero"`
	// Unit is the unit of the app's first container (see Containers for each).
	Unit UnitStatus `json:"unit"`
	// Containers are the app's containers, in the record's order.
	Containers []ContainerStatus `json:"containers,omitempty"`
	Network    NetStatus         `json:"network"`
	Onion      OnionStatus       `json:"onion"`
	DNS        DNSRecord         `json:"dns"`
	TLS        *TLSStatus        `json:"tls,omitempty"` // tls.mode = "acme" only
	LastError  string            `json:"last_error,omitempty"`
	Steps      []Step            `json:"steps,omitempty"` // the last reconcile pass, step by step
	// Damaged are the quarantined copies of the app's damaged records (kept for the user).
	Damaged []string `json:"damaged,omitempty"`
	// Health sums up the last probes of a running app: healthy, unreachable or unknown.
	Health string `json:"health,omitempty"`
	// Probes are the last reachability probe of each path (onion, ipv6, ipv4).
	Probes  []probe.Result `json:"probes,omitempty"`
	Updated time.Time      `json:"updated"`
}

// ListEntry is what `onionpod ls` shows of an app, as GET /v1/apps?view=list sends it: only the
// fields its table prints, each left out when empty. The full status is about 1.6 kB per app, and
// the status merely trimmed to these fields still about 1 kB (its zero times, flags and counts):
// at 1000 apps, encoding and decoding that was much of ls's time and of the daemon's memory
// growth per ls. Status turns an entry back into the status it was taken from, trimmed.
type ListEntry struct {
	Name    string       `json:"name"`
	State   string       `json:"state"`
	LAN     string       `json:"lan,omitempty"`
	Onion   string       `json:"onion,omitempty"`   // the onion address
	Sources []ListSource `json:"sources,omitempty"` // the record's containers, in its order
	Units   []ListUnit   `json:"units,omitempty"`   // the containers' units, as Containers
	Probes  []ListProbe  `json:"probes,omitempty"`
}

// ListSource is where one container of a listed app comes from.
type ListSource struct {
	Name   string `json:"name"`
	Image  string `json:"image,omitempty"`
	Source string `json:"source,omitempty"`
	Static string `json:"static,omitempty"`
}

// ListUnit is how one container of a listed app is.
type ListUnit struct {
	Name        string `json:"name"`
	ActiveState string `json:"active_state,omitempty"`
	SubState    string `json:"sub_state,omitempty"`
	Health      string `json:"health,omitempty"` // its health check's state
}

// ListProbe is the last probe of one path of a listed app.
type ListProbe struct {
	Path probe.Path `json:"path"`
	OK   bool       `json:"ok,omitempty"`
	Hop  string     `json:"hop,omitempty"` // where it failed
}

// ListEntry is what ls shows of s.
func (s AppStatus) ListEntry() ListEntry {
	e := ListEntry{Name: s.App.Name, State: s.State, LAN: s.Network.LAN, Onion: s.Onion.Address}
	for _, c := range s.App.Containers {
		e.Sources = append(e.Sources, ListSource{Name: c.Name, Image: c.Image, Source: c.Source, Static: c.Static})
	}
	for _, c := range s.Containers {
		u := ListUnit{Name: c.Name, ActiveState: c.Unit.ActiveState, SubState: c.Unit.SubState}
		if c.Health != nil {
			u.Health = c.Health.State
		}
		e.Units = append(e.Units, u)
	}
	for _, p := range s.Probes {
		e.Probes = append(e.Probes, ListProbe{Path: p.Path, OK: p.OK, Hop: p.Hop})
	}
	return e
}

// Status is the app status e was taken from, with only e's fields.
func (e ListEntry) Status() AppStatus {
	s := AppStatus{App: store.App{Name: e.Name}, State: e.State, Network: NetStatus{LAN: e.LAN}, Onion: OnionStatus{Address: e.Onion}}
	for _, c := range e.Sources {
		s.App.Containers = append(s.App.Containers, store.Container{Name: c.Name, Image: c.Image, Source: c.Source, Static: c.Static})
	}
	for _, u := range e.Units {
		c := ContainerStatus{Name: u.Name, Unit: UnitStatus{ActiveState: u.ActiveState, SubState: u.SubState}}
		if u.Health != "" {
			c.Health = &HealthStatus{State: u.Health}
		}
		s.Containers = append(s.Containers, c)
	}
	for _, p := range e.Probes {
		s.Probes = append(s.Probes, probe.Result{Path: p.Path, OK: p.OK, Hop: p.Hop})
	}
	return s
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

// ContainerStatus is one container of an app.
type ContainerStatus struct {
	Name string     `json:"name"`
	Unit UnitStatus `json:"unit"`
	// Image is the container's reference (or "static DIR"); ImageID the image it runs, and
	// PreviousImageID the one it ran before (what a rollback returns to).
	Image           string `json:"image,omitempty"`
	ImageID         string `json:"image_id,omitempty"`
	PreviousImageID string `json:"previous_image_id,omitempty"`
	// Digest and PreviousDigest are the registry's digests of those images (what the registry
	// shows); Rejected is an image an update rolled back from.
	Digest         string `json:"digest,omitempty"`
	PreviousDigest string `json:"previous_digest,omitempty"`
	Rejected       string `json:"rejected,omitempty"`
	RejectedReason string `json:"rejected_reason,omitempty"` // why it was rolled back
	// Trial is the update under way: ImageID is on trial until Trial.Deadline, then kept if
	// the app is healthy on it, else Trial.Back runs again.
	Trial *store.Trial `json:"trial,omitempty"`
	// Ports are the public ports it serves (PUBLIC->TARGET).
	Ports  []string      `json:"ports,omitempty"`
	Health *HealthStatus `json:"health,omitempty"` // nil: no health check
}

// Health states of a container with a health check.
const (
	HealthStarting  = "starting"  // not healthy yet
	HealthHealthy   = "healthy"   // its last check passed
	HealthUnhealthy = "unhealthy" // its checks failed: being restarted
)

// HealthStatus is a container's health check and how it goes.
type HealthStatus struct {
	Check     string    `json:"check"`           // what is checked, e.g. "http GET [fd00::6]:8080/healthz every 10s"
	State     string    `json:"state,omitempty"` // HealthStarting, HealthHealthy, HealthUnhealthy; "" while the container is not running
	Since     time.Time `json:"since,omitzero"`  // when State last changed
	Failures  int       `json:"failures"`        // checks failed in a row
	LastError string    `json:"last_error,omitempty"`
	// Restarts counts the restarts the health check made (since the daemon started), the last
	// one at LastRestart, because of RestartReason.
	Restarts      int       `json:"restarts"`
	LastRestart   time.Time `json:"last_restart,omitzero"`
	RestartReason string    `json:"restart_reason,omitempty"`
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
	Front       bool      `json:"front"`            // the HTTPS front serves it
	Serves      string    `json:"serves,omitempty"` // what the front proxies to: CONTAINER:PORT in the pod
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
	// Pass is how the last reconcile pass went; LastChange is the last pass that changed
	// anything (zero until one has).
	Pass       PassTimes `json:"pass,omitzero"`
	LastChange PassTimes `json:"last_change,omitzero"`
}

// PassTimes is how long one reconcile pass took, in all and per phase.
type PassTimes struct {
	Ended   time.Time     `json:"ended"`
	Took    time.Duration `json:"took_ns"`
	Desired time.Duration `json:"desired_ns"` // reading the records
	Observe time.Duration `json:"observe_ns"` // asking the adapters what is there
	Apply   time.Duration `json:"apply_ns"`   // carrying out the plan
	Status  time.Duration `json:"status_ns"`  // the apps' statuses
	Apps    int           `json:"apps"`       // apps in the desired state
	Changed int           `json:"changed"`    // apps whose plan had steps
	Looked  int           `json:"looked_at"`  // apps whose own state was looked at afresh
}

// ImageInfo is what an image archive sent to the daemon (POST /v1/images) loaded as: its ID
// ("sha256:..."), which an app's record then names as its image, and the reference the archive
// gave it.
type ImageInfo struct {
	ID  string `json:"id"`
	Ref string `json:"ref,omitempty"`
}

// PlannedChange is what a change of an app would do (a Put with dry_run): nothing is stored.
type PlannedChange struct {
	// Plan is the steps the app would get, as the daemon's log shows a plan ("nothing to do"
	// when none).
	Plan string `json:"plan"`
}

// Image is an image in the daemon's image store (GET /v1/images).
type Image struct {
	ID       string    `json:"id"`             // "sha256:..."
	Refs     []string  `json:"refs,omitempty"` // the references it was pulled or loaded as
	Size     int64     `json:"size"`           // bytes on disk: its root and cached layers
	LastUsed time.Time `json:"last_used"`
	// Apps are the apps whose record names it (held apps by their last good record).
	Apps []string `json:"apps,omitempty"`
}

// PruneReport says what a prune of the image store removed (POST /v1/images/prune): every image
// no app's record names, except uploads the record naming them is on its way for.
type PruneReport struct {
	Images []string `json:"images"` // IDs of the images removed
	Layers int      `json:"layers"` // cached layers removed
	Bytes  int64    `json:"bytes"`  // disk space freed
}

// WaitFor names what `wait` waits for.
const (
	WaitRunning   = "running"   // the pod runs (its containers with a health check healthy), onion added, DNS published
	WaitPublished = "published" // and the onion descriptor is uploaded
)

// errorBody is the JSON of every error answer.
type errorBody struct {
	Error string `json:"error"`
}

// UpdateRequest asks the daemon to update an app (POST /v1/apps/NAME/update): its containers'
// registry references are resolved again, and a container whose reference names another image
// now runs it, once the app is healthy on it within the grace period; otherwise the image it ran
// is put back (rolled back).
type UpdateRequest struct {
	// Container limits the update to one container ("": every container with a registry image).
	Container string `json:"container,omitempty"`
	// Image is a new reference for the container (the app's only one when Container is "").
	Image string `json:"image,omitempty"`
	// Auto marks an automatic update (the onionpod-update timer): only an app with auto_update
	// is updated, and never to an image it was rolled back from.
	Auto bool `json:"auto,omitempty"`
	// Grace is how long the new version has to become healthy (0: DefaultGrace).
	Grace time.Duration `json:"grace_ns,omitempty"`
	// Check only says whether new images are there (UpdateAvailable), changing nothing.
	Check bool `json:"check,omitempty"`
}

// DefaultGrace is how long an updated app has to become healthy before it is rolled back.
const DefaultGrace = 2 * time.Minute

// Results of an update, of the app and of each container.
const (
	UpdateUpToDate   = "up to date"  // the registry names the image the container runs
	UpdateAvailable  = "available"   // a check found a new image (nothing changed)
	UpdateUpdated    = "updated"     // the new image runs, healthy
	UpdateRolledBack = "rolled back" // the new image failed: the previous one runs again
	UpdateSkipped    = "skipped"     // not updated (Reason says why)
)

// UpdateResult says what an update (or a rollback) did.
type UpdateResult struct {
	App    string `json:"app"`
	Result string `json:"result"`
	// Reason says why the app was rolled back or skipped.
	Reason     string            `json:"reason,omitempty"`
	Containers []ContainerUpdate `json:"containers,omitempty"`
	// Took is the time from the switch to the new images until the app was healthy on them (or
	// back on the old ones).
	Took time.Duration `json:"took_ns,omitempty"`
	// Status is the app's status after the update.
	Status AppStatus `json:"status"`
}

// ContainerUpdate is what an update did to one container.
type ContainerUpdate struct {
	Name   string `json:"name"`
	Image  string `json:"image"`            // its reference
	From   string `json:"from,omitempty"`   // the image ID it ran before
	To     string `json:"to,omitempty"`     // the image ID the update took (or tried)
	Digest string `json:"digest,omitempty"` // the registry's digest of To
	Result string `json:"result"`
	Reason string `json:"reason,omitempty"`
}

// RollbackRequest asks for an app's containers to run their previous images again (POST
// /v1/apps/NAME/rollback).
type RollbackRequest struct {
	Container string        `json:"container,omitempty"` // "": every container that has a previous image
	Grace     time.Duration `json:"grace_ns,omitempty"`  // how long to wait for it to be healthy (0: DefaultGrace)
}

// BackupRequest asks for a whole-app backup (POST /v1/backup, root only): the answer's body is
// the backup, an age-encrypted archive of the apps' records, onion keys and volumes (package
// appbackup), for the passphrase and the recipients given.
type BackupRequest struct {
	Apps       []string `json:"apps"`
	Passphrase string   `json:"passphrase,omitempty"`
	Recipients []string `json:"recipients,omitempty"` // age (age1...) or SSH public keys
}

// RestoreRequest is the first line of a restore's body (POST /v1/restore, root only), the backup
// follows it.
type RestoreRequest struct {
	Passphrase string `json:"passphrase,omitempty"`
	Identities string `json:"identities,omitempty"` // an age identity file or an SSH private key
	Force      bool   `json:"force,omitempty"`      // replace the apps the box has
}

// The trailers of a backup's answer: the daemon knows whether the backup succeeded only once it
// has sent it. A backup whose answer has an error trailer (or none) is incomplete: its age
// stream is unfinished, and a restore refuses it.
const (
	TrailerError  = "Onionpod-Error"
	TrailerReport = "Onionpod-Report" // JSON: []appbackup.AppReport
)
