package dashboard

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/onionpod/onionpod/internal/atomicfile"
	"github.com/onionpod/onionpod/onion"
)

// ServiceName is the dashboard's onion service in the onion Manager's set. It is a valid app
// name, so an app could take it: then that app wins and the dashboard's service is left out
// (OnionSet reports it).
const ServiceName = "onionpod-dashboard"

// keyApp is the dashboard's key in its own key store (apart from the apps' keys).
const keyApp = "dashboard"

const enabledFile = "onion-enabled"

// Onion is the dashboard's own onion service: its key and authorized clients in tor's layout
// under Dir/onion (an onion.KeyStore of its own, apart from the apps' keys), and whether it is
// on. It is published only with client authorization: never without a client.
type Onion struct {
	// Dir is the dashboard's state directory (state_dir/dashboard).
	Dir string
	// Target is where tor forwards it: "unix:/run/onionpod/tor/dashboard.sock".
	Target string
}

func (o *Onion) keys() *onion.KeyStore { return &onion.KeyStore{Dir: filepath.Join(o.Dir, "onion")} }

// Enabled reports whether the owner turned the onion service on.
func (o *Onion) Enabled() bool {
	_, err := os.Stat(filepath.Join(o.Dir, enabledFile))
	return err == nil
}

// Address is the dashboard's .onion ("" before the first enable).
func (o *Onion) Address() string {
	k, err := o.keys().Load(keyApp)
	if err != nil {
		return ""
	}
	return k.Address()
}

// Enable makes the key (the first time) and turns the service on. Callers hold the state lock.
func (o *Onion) Enable() error {
	if _, _, err := o.keys().Ensure(keyApp); err != nil {
		return fmt.Errorf("dashboard: onion key: %w", err)
	}
	if _, err := atomicfile.WriteFile(filepath.Join(o.Dir, enabledFile), []byte("on\n"), 0o600); err != nil {
		return fmt.Errorf("dashboard: %w", err)
	}
	return nil
}

// Disable turns the service off; the key and clients stay (enable brings the same .onion back).
func (o *Onion) Disable() error {
	err := os.Remove(filepath.Join(o.Dir, enabledFile))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("dashboard: %w", err)
	}
	return nil
}

// Clients lists the devices allowed to reach the .onion.
func (o *Onion) Clients() ([]onion.AuthorizedClient, error) {
	c, err := o.keys().Clients(keyApp)
	if errors.Is(err, onion.ErrNotFound) {
		return nil, nil
	}
	return c, err
}

// AddClient allows a device; the credential is returned once.
func (o *Onion) AddClient(name string) (onion.ClientCredential, error) {
	if _, _, err := o.keys().Ensure(keyApp); err != nil {
		return onion.ClientCredential{}, fmt.Errorf("dashboard: onion key: %w", err)
	}
	return o.keys().AddClient(keyApp, name)
}

// RemoveClient revokes a device.
func (o *Onion) RemoveClient(name string) error {
	return o.keys().RemoveClient(keyApp, name)
}

// Service is the onion service to keep in tor: nil when off or without any client (the
// dashboard is never published open to everyone).
func (o *Onion) Service() (*onion.Service, error) {
	if !o.Enabled() {
		return nil, nil
	}
	clients, err := o.Clients()
	if err != nil || len(clients) == 0 {
		return nil, err
	}
	k, err := o.keys().Load(keyApp)
	if err != nil {
		return nil, err
	}
	return &onion.Service{App: ServiceName, Key: k, Ports: []onion.Port{{Virtual: 80, Target: o.Target}}, Clients: clients}, nil
}

// onionSetter is the onion Manager as the reconciler drives it.
type onionSetter interface {
	Set(ctx context.Context, services []onion.Service) error
	Status() map[string]onion.ServiceStatus
}

// OnionSet puts the dashboard's service beside the apps' in every set the reconciler asks for
// (the Manager keeps exactly the last set: a service outside it would be removed).
type OnionSet struct {
	Next      onionSetter
	Dashboard *Onion

	mu  sync.Mutex
	err error
}

// Set adds the dashboard's service to services and sets them all.
func (s *OnionSet) Set(ctx context.Context, services []onion.Service) error {
	svc, err := s.Dashboard.Service()
	if err == nil && svc != nil && slices.ContainsFunc(services, func(x onion.Service) bool { return x.App == ServiceName }) {
		err = fmt.Errorf("dashboard: an app is named %s: the dashboard's onion service is left out", ServiceName)
		svc = nil
	}
	s.mu.Lock()
	s.err = err
	s.mu.Unlock()
	if svc != nil {
		services = append(slices.Clip(services), *svc)
	}
	return s.Next.Set(ctx, services)
}

// Status is the Manager's.
func (s *OnionSet) Status() map[string]onion.ServiceStatus { return s.Next.Status() }

// Err is why the dashboard's service was left out of the last set (nil when it was not).
func (s *OnionSet) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}
