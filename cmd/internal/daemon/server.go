package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/onionpod/onionpod/cmd/internal/api"
	"github.com/onionpod/onionpod/cmd/internal/store"
)

// handler serves the LocalAPI (see package api for the wire types).
func (d *Daemon) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		reply(w, d.daemonStatus())
	})
	mux.HandleFunc("GET /v1/apps", func(w http.ResponseWriter, r *http.Request) {
		apps, err := d.appStatuses()
		if err != nil {
			fail(w, err)
			return
		}
		reply(w, apps)
	})
	mux.HandleFunc("GET /v1/apps/{name}", func(w http.ResponseWriter, r *http.Request) {
		st, err := d.appDetail(r.Context(), r.PathValue("name"))
		if err != nil {
			fail(w, err)
			return
		}
		reply(w, st)
	})
	mux.HandleFunc("PUT /v1/apps/{name}", func(w http.ResponseWriter, r *http.Request) {
		var app store.App
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&app); err != nil {
			fail(w, fmt.Errorf("%w: %w", store.ErrInvalid, err))
			return
		}
		if app.Name != r.PathValue("name") {
			fail(w, fmt.Errorf("%w: the record names app %q", store.ErrInvalid, app.Name))
			return
		}
		st, err := d.putApp(r.Context(), app)
		if err != nil {
			fail(w, err)
			return
		}
		reply(w, st)
	})
	mux.HandleFunc("POST /v1/apps/{name}/start", func(w http.ResponseWriter, r *http.Request) {
		replyErr(w, d.setStopped(r.Context(), r.PathValue("name"), false))
	})
	mux.HandleFunc("POST /v1/apps/{name}/stop", func(w http.ResponseWriter, r *http.Request) {
		replyErr(w, d.setStopped(r.Context(), r.PathValue("name"), true))
	})
	mux.HandleFunc("DELETE /v1/apps/{name}", func(w http.ResponseWriter, r *http.Request) {
		replyErr(w, d.removeApp(r.Context(), r.PathValue("name"), r.URL.Query().Get("purge_key") == "true"))
	})
	mux.HandleFunc("GET /v1/apps/{name}/wait", func(w http.ResponseWriter, r *http.Request) {
		timeout, err := time.ParseDuration(r.URL.Query().Get("timeout"))
		if err != nil || timeout <= 0 {
			timeout = time.Minute
		}
		st, err := d.wait(r.Context(), r.PathValue("name"), r.URL.Query().Get("for"), timeout)
		if err != nil {
			fail(w, err)
			return
		}
		reply(w, st)
	})
	mux.HandleFunc("GET /v1/apps/{name}/logs", func(w http.ResponseWriter, r *http.Request) {
		follow := r.URL.Query().Get("follow") == "true"
		if err := d.logs(r.Context(), r.PathValue("name"), follow, flushWriter{w}); err != nil && r.Context().Err() == nil {
			fail(w, err)
		}
	})
	mux.HandleFunc("POST /v1/apps/{name}/tls/renew", func(w http.ResponseWriter, r *http.Request) {
		st, err := d.renewTLS(r.Context(), r.PathValue("name"))
		if err != nil {
			fail(w, err)
			return
		}
		reply(w, st)
	})
	mux.HandleFunc("GET /v1/dns", func(w http.ResponseWriter, r *http.Request) {
		reply(w, d.dnsStatus())
	})
	// Profiles of the running daemon, for whoever may use the socket (root): curl --unix-socket.
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("POST /v1/sync", func(w http.ResponseWriter, r *http.Request) {
		d.trigger("sync requested")
		reply(w, struct{}{})
	})
	return mux
}

func reply(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

func replyErr(w http.ResponseWriter, err error) {
	if err != nil {
		fail(w, err)
		return
	}
	reply(w, struct{}{})
}

func fail(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	switch {
	case errors.Is(err, store.ErrNotFound), errors.Is(err, api.ErrNotFound):
		code = http.StatusNotFound
	case isBadInput(err):
		code = http.StatusBadRequest
	case errors.Is(err, context.DeadlineExceeded):
		code = http.StatusGatewayTimeout
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
}

// flushWriter pushes each write to the client at once (for logs -f).
type flushWriter struct{ w http.ResponseWriter }

func (f flushWriter) Write(p []byte) (int, error) {
	n, err := f.w.Write(p)
	if fl, ok := f.w.(http.Flusher); ok {
		fl.Flush()
	}
	return n, err
}
