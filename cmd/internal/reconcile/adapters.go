package reconcile

import (
	"context"

	"github.com/onionpod/onionpod/cmd/internal/store"
	"github.com/onionpod/onionpod/dns"
	"github.com/onionpod/onionpod/network"
	"github.com/onionpod/onionpod/onion"
	"github.com/onionpod/onionpod/pods"
)

// The adapters the reconciler drives, declared here where they are used. The domain packages'
// types satisfy them (KeyStore, Network, Onions, Publisher) or the daemon wraps them (Pods, Units).

// KeyStore holds the apps' onion keys.
type KeyStore interface {
	// EnsureIn loads the app's key, or makes one when it has none; ctx may be a look settled
	// once for many apps (see Runner.Settle).
	EnsureIn(ctx context.Context, app string) (key *onion.Key, created bool, err error)
	// ClientsIn is the app's authorized clients, looked at in ctx's view (see EnsureIn).
	ClientsIn(ctx context.Context, app string) ([]onion.AuthorizedClient, error)
	Apps() ([]string, error)
}

// Network attaches pods' network namespaces.
type Network interface {
	Attach(ctx context.Context, a network.Attachment) (network.Result, error)
	Detach(ctx context.Context, app string) error
	Attached(ctx context.Context) ([]string, error)
	Addresses(ctx context.Context, app string) (network.Result, error)
	// PodNetns is where an attach from nothing names the app's pod namespace.
	PodNetns(app string) string
}

// Pods turns an app into its unit files (from its containers' cached images) and fetches images.
type Pods interface {
	// Units renders the app's units for a pod in netns: its network unit, then one per
	// container; ErrImageMissing when an image is not cached yet (Fetch it first).
	Units(ctx context.Context, app store.App, netns string) ([]pods.Unit, error)
	// Fetch makes sure the images of the app's containers are in the store (nothing for a
	// static site). A fetch that takes time runs in the background: Fetch returns ErrFetching
	// until it has ended, then its outcome.
	Fetch(ctx context.Context, app store.App) error
	// Fetching reports whether an image of the app is being fetched in the background.
	Fetching(app store.App) bool
}

// Units runs unit files through systemd.
type Units interface {
	// ApplyApp writes an app's units (when changed), enables and starts them (restarting
	// changed ones), and removes the units of containers the app no longer has.
	ApplyApp(ctx context.Context, app string, units []pods.Unit) error
	// WriteApp writes an app's changed units without starting any; ApplyApp then starts them
	// and restarts the changed ones that run (a pass writes them all first: one reload).
	WriteApp(app string, units []pods.Unit) error
	// LoadApp writes an app's units and has systemd load them, without starting any: ApplyApp
	// then finds them loaded (a new app's converge does it while its network is attached).
	LoadApp(ctx context.Context, app string, units []pods.Unit) error
	// Stop stops an app's containers (its network stays).
	Stop(ctx context.Context, app string) error
	// Remove stops, disables and deletes an app's units; idempotent.
	Remove(ctx context.Context, app string) error
}

// UnitObserver tells what systemd has: unit files, their states, whether they are current.
type UnitObserver interface {
	// PodUnits lists the container unit files present.
	PodUnits(ctx context.Context) ([]pods.PodRef, error)
	// NetUnitApps lists the apps with a network unit file.
	NetUnitApps(ctx context.Context) ([]string, error)
	// PodStates gives the state of every loaded container unit in one call.
	PodStates(ctx context.Context) (map[pods.PodRef]pods.Status, error)
	// PodStatesOf gives the states of these containers' units (those that exist) in one call.
	PodStatesOf(ctx context.Context, refs []pods.PodRef) (map[pods.PodRef]pods.Status, error)
	// Current reports whether the unit files on disk are exactly these.
	Current(ctx context.Context, units []pods.Unit) bool
}

// Onions keeps the wanted onion services in tor (declarative: the set replaces the last one).
type Onions interface {
	Set(ctx context.Context, services []onion.Service) error
	Status() map[string]onion.ServiceStatus
}

// Publisher keeps the zone holding exactly the given records (declarative).
type Publisher interface {
	Set(ctx context.Context, records []dns.Record) error
	// Status's record slices are the caller's own copies (the daemon filters them in place).
	Status() dns.Status
}
