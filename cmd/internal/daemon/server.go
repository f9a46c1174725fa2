package daemon

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/pprof"
	"strconv"
	"time"

	"github.com/onionpod/onionpod/cmd/internal/api"
	"github.com/onionpod/onionpod/cmd/internal/store"
	"github.com/onionpod/onionpod/internal/errkind"
)

// handler serves the LocalAPI (see package api for the wire types). Every request body is
// bounded; waits and log followers are bounded per client uid; profiles are for root only.
func (d *Daemon) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", d.handleStatus)
	mux.HandleFunc("GET /v1/apps", d.handleListApps)
	mux.HandleFunc("GET /v1/apps/{name}", d.handleGetApp)
	mux.HandleFunc("PUT /v1/apps/{name}", d.handlePutApp)
	mux.HandleFunc("POST /v1/apps/{name}/start", d.handleStart)
	mux.HandleFunc("POST /v1/apps/{name}/stop", d.handleStop)
	// An update or rollback lasts until the app is healthy (or rolled back): bounded like waits.
	mux.HandleFunc("POST /v1/apps/{name}/update", d.waits.limited(d.handleUpdate))
	mux.HandleFunc("POST /v1/apps/{name}/rollback", d.waits.limited(d.handleRollback))
	// Whole-app backups hold the apps' onion keys and data: root only.
	mux.HandleFunc("POST /v1/backup", rootOnly(d.serveBackup))
	mux.HandleFunc("POST /v1/restore", rootOnly(d.handleRestore))
	mux.HandleFunc("DELETE /v1/apps/{name}", d.handleRemove)
	mux.HandleFunc("GET /v1/apps/{name}/wait", d.waits.limited(d.handleWait))
	mux.HandleFunc("GET /v1/apps/{name}/logs", d.handleLogs)
	mux.HandleFunc("POST /v1/apps/{name}/tls/renew", d.handleRenewTLS)
	mux.HandleFunc("GET /v1/dns", d.handleDNS)
	// Profiles of the running daemon, for root only (by the connection's peer credentials):
	// curl --unix-socket.
	mux.HandleFunc("GET /debug/pprof/", rootOnly(pprof.Index))
	mux.HandleFunc("GET /debug/pprof/profile", rootOnly(pprof.Profile))
	mux.HandleFunc("GET /debug/pprof/trace", rootOnly(pprof.Trace))
	mux.HandleFunc("POST /v1/images", d.uploads.limited(d.handleLoadImage))
	mux.HandleFunc("GET /v1/images/{id}", d.handleImageInfo)
	if d.obs != nil {
		mux.Handle("/v1/dashboard", d.obs.api.Handler())
		mux.Handle("/v1/dashboard/", d.obs.api.Handler())
	}
	mux.HandleFunc("GET /v1/images", d.handleListImages)
	mux.HandleFunc("POST /v1/images/prune", d.handlePruneImages)
	mux.HandleFunc("POST /v1/sync", d.handleSync)
	return d.handlers.wrap(bodyLimit(mux))
}

func (d *Daemon) handleStatus(w http.ResponseWriter, r *http.Request) {
	reply(w, d.daemonStatus())
}

// handleListApps answers every app's status; ?view=list only what ls prints of each
// (api.ListEntry).
func (d *Daemon) handleListApps(w http.ResponseWriter, r *http.Request) {
	apps, err := d.appStatuses()
	if err != nil {
		fail(w, err)
		return
	}
	if r.URL.Query().Get("view") == "list" {
		replyEach(w, apps, api.AppStatus.ListEntry)
		return
	}
	replyEach(w, apps, func(s api.AppStatus) api.AppStatus { return s })
}

func (d *Daemon) handleGetApp(w http.ResponseWriter, r *http.Request) {
	st, err := d.appDetail(r.Context(), r.PathValue("name"))
	if err != nil {
		fail(w, err)
		return
	}
	reply(w, st)
}

// handlePutApp creates or changes an app from its record; ?dry_run=true answers the plan only.
func (d *Daemon) handlePutApp(w http.ResponseWriter, r *http.Request) {
	var app store.App
	if err := json.NewDecoder(r.Body).Decode(&app); err != nil {
		fail(w, errkind.BadInputf("api: the app record: %w", err))
		return
	}
	if app.Name != r.PathValue("name") {
		fail(w, errkind.BadInputf("api: the record names app %q", app.Name))
		return
	}
	if r.URL.Query().Get("dry_run") == "true" {
		planned, err := d.planChange(r.Context(), app, peerOf(r))
		replyStatus(w, planned, err)
		return
	}
	st, err := d.putApp(r.Context(), app, peerOf(r))
	if err != nil {
		fail(w, err)
		return
	}
	reply(w, st)
}

func (d *Daemon) handleStart(w http.ResponseWriter, r *http.Request) {
	st, err := d.setStopped(r.Context(), r.PathValue("name"), false)
	replyStatus(w, st, err)
}

func (d *Daemon) handleStop(w http.ResponseWriter, r *http.Request) {
	st, err := d.setStopped(r.Context(), r.PathValue("name"), true)
	replyStatus(w, st, err)
}

func (d *Daemon) handleUpdate(w http.ResponseWriter, r *http.Request) {
	var req api.UpdateRequest
	if err := decodeBody(r, &req); err != nil {
		fail(w, err)
		return
	}
	res, err := d.updateApp(r.Context(), r.PathValue("name"), req)
	replyStatus(w, res, err)
}

func (d *Daemon) handleRollback(w http.ResponseWriter, r *http.Request) {
	var req api.RollbackRequest
	if err := decodeBody(r, &req); err != nil {
		fail(w, err)
		return
	}
	res, err := d.rollbackApp(r.Context(), r.PathValue("name"), req)
	replyStatus(w, res, err)
}

func (d *Daemon) handleRestore(w http.ResponseWriter, r *http.Request) {
	reps, err := d.serveRestore(r)
	replyStatus(w, reps, err)
}

// handleRemove removes an app; ?purge_key=true forgets its onion key too.
func (d *Daemon) handleRemove(w http.ResponseWriter, r *http.Request) {
	replyErr(w, d.removeApp(r.Context(), r.PathValue("name"), r.URL.Query().Get("purge_key") == "true"))
}

// handleWait waits until an app reaches the state ?for= names (at ?generation= or later), for
// ?timeout= (a minute by default, at most d.maxWait).
func (d *Daemon) handleWait(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	timeout, err := time.ParseDuration(q.Get("timeout"))
	if err != nil || timeout <= 0 {
		timeout = time.Minute
	}
	timeout = min(timeout, d.maxWait)
	var gen int64
	if g := q.Get("generation"); g != "" {
		if gen, err = strconv.ParseInt(g, 10, 64); err != nil || gen < 0 {
			fail(w, errkind.BadInputf("api: wait: generation %q is not a number", g))
			return
		}
	}
	st, err := d.wait(r.Context(), r.PathValue("name"), q.Get("for"), gen, timeout)
	if err != nil {
		fail(w, err)
		return
	}
	reply(w, st)
}

// handleLogs streams an app's logs; with ?follow=true it counts against the client's
// bound on log followers.
func (d *Daemon) handleLogs(w http.ResponseWriter, r *http.Request) {
	if r.URL.Query().Get("follow") == "true" {
		d.followers.limited(d.writeLogs)(w, r)
		return
	}
	d.writeLogs(w, r)
}

// writeLogs copies an app's logs to the client, flushing each write; an error after the
// client went away is not reported.
func (d *Daemon) writeLogs(w http.ResponseWriter, r *http.Request) {
	follow := r.URL.Query().Get("follow") == "true"
	if err := d.logs(r.Context(), r.PathValue("name"), r.URL.Query().Get("container"), follow, flushWriter{w}); err != nil && r.Context().Err() == nil {
		fail(w, err)
	}
}

func (d *Daemon) handleRenewTLS(w http.ResponseWriter, r *http.Request) {
	st, err := d.renewTLS(r.Context(), r.PathValue("name"))
	if err != nil {
		fail(w, err)
		return
	}
	reply(w, st)
}

func (d *Daemon) handleDNS(w http.ResponseWriter, r *http.Request) {
	reply(w, d.dnsStatus())
}

func (d *Daemon) handleLoadImage(w http.ResponseWriter, r *http.Request) {
	info, err := d.loadImage(r.Context(), r.Body)
	replyStatus(w, info, err)
}

func (d *Daemon) handleImageInfo(w http.ResponseWriter, r *http.Request) {
	info, err := d.imageInfo(r.PathValue("id"))
	replyStatus(w, info, err)
}

func (d *Daemon) handleListImages(w http.ResponseWriter, r *http.Request) {
	images, err := d.images()
	replyStatus(w, images, err)
}

func (d *Daemon) handlePruneImages(w http.ResponseWriter, r *http.Request) {
	report, err := d.pruneImages(r.Context(), pruneWait)
	replyStatus(w, report, err)
}

// handleSync asks the control loop for a pass now.
func (d *Daemon) handleSync(w http.ResponseWriter, r *http.Request) {
	d.trigger("sync requested")
	reply(w, struct{}{})
}

// decodeBody reads a JSON request body strictly (an empty body is the zero value).
func decodeBody(r *http.Request, v any) error {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		return errkind.BadInputf("api: the request: %w", err)
	}
	return nil
}

func reply(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

// replyEach answers a JSON array of view(item) for each item, encoded one at a time: a list of
// 1000 apps is never a whole buffer of JSON (1.6 MB, and as much again while that grew) in the
// daemon's heap.
func replyEach[T, V any](w http.ResponseWriter, items []T, view func(T) V) {
	w.Header().Set("Content-Type", "application/json")
	bw := bufio.NewWriterSize(w, 32<<10)
	enc := json.NewEncoder(bw)
	bw.WriteByte('[')
	for i, item := range items {
		if i > 0 {
			bw.WriteByte(',')
		}
		if err := enc.Encode(view(item)); err != nil {
			return // the client went away: the rest would not reach it either
		}
	}
	bw.WriteString("]\n")
	bw.Flush()
}

func replyErr(w http.ResponseWriter, err error) {
	if err != nil {
		fail(w, err)
		return
	}
	reply(w, struct{}{})
}

func replyStatus[T any](w http.ResponseWriter, v T, err error) {
	if err != nil {
		fail(w, err)
		return
	}
	reply(w, v)
}

// fail answers an error with the status its kind calls for: 400 bad input, 404 not found, 409
// conflict, 413 a body over the bound, 504 a wait that ran out; 500 otherwise.
func fail(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		code = http.StatusRequestEntityTooLarge
		err = fmt.Errorf("api: the request body is larger than %d bytes", tooLarge.Limit)
	case errors.Is(err, errkind.BadInput):
		code = http.StatusBadRequest
	case errors.Is(err, errkind.NotFound):
		code = http.StatusNotFound
	case errors.Is(err, errkind.Conflict):
		code = http.StatusConflict
	case errors.Is(err, context.DeadlineExceeded):
		code = http.StatusGatewayTimeout
	}
	failCode(w, code, err)
}

func failCode(w http.ResponseWriter, code int, err error) {
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
