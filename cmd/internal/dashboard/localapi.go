package dashboard

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/onionpod/onionpod/cmd/internal/api"
	"github.com/onionpod/onionpod/onion"
)

// API serves the LocalAPI's /v1/dashboard endpoints, behind the daemon's unix socket (root and
// the api.group): `onionpod dashboard enable|disable|status|login|client add|rm`.
type API struct {
	Server *Server
	Onion  *Onion
	Set    *OnionSet
	// Lock runs fn holding the state dir's lock (key changes).
	Lock func(ctx context.Context, fn func() error) error
	// Changed asks for a reconcile pass (the onion services are set again).
	Changed func()
	// Listen are the LAN side's addresses.
	Listen []string
}

// DefaultClient names the first device `dashboard enable` adds.
const DefaultClient = "owner"

// Handler serves GET /v1/dashboard, POST /v1/dashboard/{enable,disable,login},
// POST and DELETE /v1/dashboard/clients/{name}.
func (a *API) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/dashboard", func(w http.ResponseWriter, r *http.Request) {
		st, err := a.status()
		reply(w, st, err)
	})
	mux.HandleFunc("POST /v1/dashboard/enable", func(w http.ResponseWriter, r *http.Request) {
		client := r.URL.Query().Get("client")
		if client == "" {
			client = DefaultClient
		}
		var cred api.DashboardClient
		err := a.Lock(r.Context(), func() error {
			if err := a.Onion.Enable(); err != nil {
				return err
			}
			clients, err := a.Onion.Clients()
			if err != nil || len(clients) > 0 {
				return err
			}
			c, err := a.Onion.AddClient(client)
			cred = credential(c)
			return err
		})
		if err != nil {
			reply(w, nil, err)
			return
		}
		a.Changed()
		st, err := a.status()
		reply(w, struct {
			Status api.DashboardStatus `json:"status"`
			Client api.DashboardClient `json:"client"`
		}{st, cred}, err)
	})
	mux.HandleFunc("POST /v1/dashboard/disable", func(w http.ResponseWriter, r *http.Request) {
		err := a.Lock(r.Context(), a.Onion.Disable)
		if err == nil {
			a.Changed()
		}
		reply(w, struct{}{}, err)
	})
	mux.HandleFunc("POST /v1/dashboard/clients/{name}", func(w http.ResponseWriter, r *http.Request) {
		var cred api.DashboardClient
		err := a.Lock(r.Context(), func() error {
			c, err := a.Onion.AddClient(r.PathValue("name"))
			cred = credential(c)
			return err
		})
		if err == nil {
			a.Changed()
		}
		reply(w, cred, err)
	})
	mux.HandleFunc("DELETE /v1/dashboard/clients/{name}", func(w http.ResponseWriter, r *http.Request) {
		err := a.Lock(r.Context(), func() error { return a.Onion.RemoveClient(r.PathValue("name")) })
		if err == nil {
			a.Changed()
		}
		reply(w, struct{}{}, err)
	})
	mux.HandleFunc("POST /v1/dashboard/login", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("rotate") == "true" {
			if err := a.Lock(r.Context(), a.Server.RotateLoginKey); err != nil {
				reply(w, nil, err)
				return
			}
		}
		reply(w, api.DashboardLogin{Key: a.Server.LoginKey(), Listen: a.Listen}, nil)
	})
	return mux
}

func credential(c onion.ClientCredential) api.DashboardClient {
	if c.Address == "" {
		return api.DashboardClient{}
	}
	return api.DashboardClient{Name: c.Client, Address: c.Address, AuthPrivate: c.AuthPrivate(), PrivateKey: c.PrivateKey()}
}

func (a *API) status() (api.DashboardStatus, error) {
	st := api.DashboardStatus{Listen: a.Listen}
	o := &st.Onion
	o.Enabled, o.Address, o.Clients = a.Onion.Enabled(), a.Onion.Address(), []string{}
	clients, err := a.Onion.Clients()
	if err != nil {
		return st, err
	}
	for _, c := range clients {
		o.Clients = append(o.Clients, c.Name)
	}
	if a.Set != nil {
		if s, ok := a.Set.Status()[ServiceName]; ok {
			o.Added, o.Published, o.Since, o.Error = s.Added, s.Uploaded, s.UploadedAt, s.Err
		}
		if err := a.Set.Err(); err != nil {
			o.Error = err.Error()
		}
	}
	if o.Enabled && len(clients) == 0 {
		o.Error = "no client: the .onion is not published (onionpod dashboard client add NAME)"
	}
	return st, nil
}

func reply(w http.ResponseWriter, v any, err error) {
	w.Header().Set("Content-Type", "application/json")
	if err != nil {
		code := statusOf(err)
		if errors.Is(err, onion.ErrClientExists) {
			code = http.StatusConflict
		}
		if errors.Is(err, onion.ErrBadInput) {
			code = http.StatusBadRequest
		}
		w.WriteHeader(code)
		json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
		return
	}
	json.NewEncoder(w).Encode(v)
}
