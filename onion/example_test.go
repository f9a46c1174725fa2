package onion_test

import (
	"context"
	"fmt"
	"log"

	"github.com/onionpod/onionpod/onion"
)

// The daemon's wiring: keys from the store, one Manager for the control port, a declarative
// Set on every reconcile pass, and Status/Changes for app status.
func Example() {
	ks := &onion.KeyStore{Dir: "/var/lib/onionpod/onion"}
	key, _, err := ks.Ensure("blog") // the same .onion forever
	if err != nil {
		log.Fatal(err)
	}
	clients, err := ks.Clients("blog") // empty: open to everyone
	if err != nil {
		log.Fatal(err)
	}
	m := onion.NewManager(onion.ControlConfig{Network: "unix", Address: "/run/onionpod/tor/control.sock", Auth: "cookie", Exclusive: true})
	ctx := context.Background()
	go m.Run(ctx) // reconnects and re-adds everything after a tor restart
	err = m.Set(ctx, []onion.Service{{
		App: "blog", Key: key, Clients: clients,
		Ports: []onion.Port{{Virtual: 80, Target: "[fd6f:6e69:6f6e:1::6]:8080"}},
	}})
	if err != nil {
		log.Print(err) // errors.Is(err, onion.ErrTorUnavailable): kept, applied on reconnect
	}
	for range m.Changes() {
		st := m.Status()["blog"]
		fmt.Println(st.Address, st.Added, st.Uploaded)
	}
}
