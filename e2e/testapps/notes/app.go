package main

import (
	"context"
	"encoding/json"
	"errors"
	"html/template"
	"log"
	"mime"
	"net/http"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// maxText bounds a note, in bytes.
const maxText = 10000

// Note is one stored note.
type Note struct {
	ID      int64     `json:"id"`
	Text    string    `json:"text"`
	Created time.Time `json:"created"`
}

// store is what the handlers need from the database.
type store interface {
	List(ctx context.Context) ([]Note, error)
	Add(ctx context.Context, text string) (Note, error)
	Ping(ctx context.Context) error
}

type app struct {
	version string
	store   store
	ready   atomic.Bool // the table exists
}

func (a *app) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", a.index)
	mux.HandleFunc("GET /notes", a.listJSON)
	mux.HandleFunc("POST /notes", a.add)
	mux.HandleFunc("GET /healthz", a.healthz)
	return withVersion(a.version, mux)
}

// withVersion sets X-Notes-Version on every answer.
func withVersion(v string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Notes-Version", v)
		h.ServeHTTP(w, r)
	})
}

var page = template.Must(template.New("page").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>notes {{.Version}}</title></head>
<body>
<h1>Notes</h1>
{{if .Error}}<p role="alert">{{.Error}}</p>{{end}}
<form method="post" action="/notes"><textarea name="text" required maxlength="10000"></textarea>
<button type="submit">Add</button></form>
<ul>
{{range .Notes}}<li id="note-{{.ID}}">{{.Text}} <small>{{.Created.Format "2006-01-02 15:04:05Z07:00"}}</small></li>
{{end}}</ul>
<footer>notes {{.Version}}</footer>
</body></html>
`))

type pageData struct {
	Version string
	Notes   []Note
	Error   string
}

func (a *app) index(w http.ResponseWriter, r *http.Request) {
	data := pageData{Version: a.version}
	status := http.StatusOK
	if !a.ready.Load() {
		status, data.Error = http.StatusServiceUnavailable, "the database is not ready yet"
	} else if notes, err := a.store.List(r.Context()); err != nil {
		log.Printf("notes %s: list: %v", a.version, err)
		status, data.Error = http.StatusServiceUnavailable, "the database does not answer"
	} else {
		data.Notes = notes
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	if err := page.Execute(w, data); err != nil {
		log.Printf("notes %s: render: %v", a.version, err)
	}
}

func (a *app) listJSON(w http.ResponseWriter, r *http.Request) {
	if !a.ready.Load() {
		httpError(w, http.StatusServiceUnavailable, "the database is not ready yet")
		return
	}
	notes, err := a.store.List(r.Context())
	if err != nil {
		log.Printf("notes %s: list: %v", a.version, err)
		httpError(w, http.StatusServiceUnavailable, "the database does not answer")
		return
	}
	if notes == nil {
		notes = []Note{}
	}
	writeJSON(w, http.StatusOK, notes)
}

func (a *app) add(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 4*maxText+4096)
	if err := r.ParseForm(); err != nil {
		httpError(w, http.StatusBadRequest, "text: a form with a field text is needed")
		return
	}
	text := r.PostForm.Get("text")
	if err := checkText(text); err != nil {
		httpError(w, http.StatusBadRequest, err.Error())
		return
	}
	if !a.ready.Load() {
		httpError(w, http.StatusServiceUnavailable, "the database is not ready yet")
		return
	}
	n, err := a.store.Add(r.Context(), text)
	if err != nil {
		log.Printf("notes %s: add: %v", a.version, err)
		httpError(w, http.StatusServiceUnavailable, "the database does not answer")
		return
	}
	if wantsJSON(r) {
		writeJSON(w, http.StatusCreated, n)
		return
	}
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// checkText refuses what is not a note: empty, too long, not UTF-8, or with NUL (PostgreSQL's
// text cannot hold it).
func checkText(text string) error {
	switch {
	case strings.TrimSpace(text) == "":
		return errors.New("text: empty")
	case len(text) > maxText:
		return errors.New("text: longer than 10000 bytes")
	case !utf8.ValidString(text):
		return errors.New("text: not UTF-8")
	case strings.ContainsRune(text, 0):
		return errors.New("text: contains NUL")
	}
	return nil
}

func (a *app) healthz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if !a.ready.Load() {
		httpError(w, http.StatusServiceUnavailable, "database not ready")
		return
	}
	if err := a.store.Ping(ctx); err != nil {
		httpError(w, http.StatusServiceUnavailable, "database does not answer")
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte("ok " + a.version + "\n"))
}

// brokenHandler is a broken release: every request fails, the health check included.
func brokenHandler(v string) http.Handler {
	return withVersion(v, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		httpError(w, http.StatusInternalServerError, "broken release "+v)
	}))
}

func wantsJSON(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept"), ",") {
		if t, _, err := mime.ParseMediaType(strings.TrimSpace(part)); err == nil && t == "application/json" {
			return true
		}
	}
	return false
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func httpError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(msg + "\n"))
}
