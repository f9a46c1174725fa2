// Command notes is a small web app of onionpod's own, for its tests: it keeps notes in PostgreSQL.
//
//	GET  /          the notes, newest first, and a form to add one (HTML)
//	GET  /notes     the notes as JSON: [{"id":1,"text":"...","created":"..."}]
//	POST /notes     adds one (form field "text", 1-10000 bytes of UTF-8); 303 to / (or 201 with
//	                the note as JSON when the request accepts application/json)
//	GET  /healthz   200 "ok VERSION" only when the database answers; 503 otherwise
//
// Every answer carries the header X-Notes-Version, and every page shows the version, so a test
// tells v1 from v2.
//
// Environment:
//
//	DATABASE_URL   PostgreSQL address, e.g. postgres://notes:secret@127.0.0.1:5432/notes?sslmode=disable
//	LISTEN         address to listen on (default :8080)
//	NOTES_VERSION  the version shown (default: the one linked in with -ldflags "-X main.version=...")
//	NOTES_BROKEN   "1": a broken release, whose health check always fails (it serves nothing else);
//	               "exit": exits with status 3 at once. For rollback tests.
//
// At start it serves /healthz at once (503 while the database is away) and retries the database
// until it answers, then creates its table if missing. It stops cleanly on SIGTERM.
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// version is set at link time (-ldflags "-X main.version=2"); NOTES_VERSION overrides it.
var version = "dev"

func main() {
	log.SetFlags(0)
	if err := run(); err != nil {
		log.Printf("notes: %v", err)
		os.Exit(1)
	}
}

func run() error {
	v := version
	if e := os.Getenv("NOTES_VERSION"); e != "" {
		v = e
	}
	switch os.Getenv("NOTES_BROKEN") {
	case "exit":
		log.Printf("notes %s: broken release (NOTES_BROKEN=exit): exiting", v)
		os.Exit(3)
	case "1", "true", "yes":
		log.Printf("notes %s: broken release (NOTES_BROKEN=1): the health check will fail", v)
		return serve(v, brokenHandler(v))
	}
	dsn := os.Getenv("DATABASE_URL")
	if dsn == "" {
		return errors.New("DATABASE_URL is not set")
	}
	db, err := openStore(dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	app := &app{version: v, store: db}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	go app.prepare(ctx, db)
	return serveUntil(ctx, v, app.handler())
}

// prepare waits for the database (retrying with a growing pause, at most 2 s) and creates the
// table; until it is done, the app answers 503.
func (a *app) prepare(ctx context.Context, db *pgStore) {
	pause := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := db.migrate(ctx)
		if err == nil {
			a.ready.Store(true)
			log.Printf("notes %s: database ready (attempt %d)", a.version, attempt)
			return
		}
		if ctx.Err() != nil {
			return
		}
		if attempt == 1 || attempt%10 == 0 {
			log.Printf("notes %s: waiting for the database (attempt %d): %v", a.version, attempt, err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(pause):
		}
		pause = min(pause*2, 2*time.Second)
	}
}

func listenAddr() string {
	if a := os.Getenv("LISTEN"); a != "" {
		return a
	}
	return ":8080"
}

func serve(v string, h http.Handler) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	return serveUntil(ctx, v, h)
}

// serveUntil serves h until ctx ends, then shuts down within 5 s.
func serveUntil(ctx context.Context, v string, h http.Handler) error {
	srv := &http.Server{Addr: listenAddr(), Handler: h, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	log.Printf("notes %s: listening on %s", v, srv.Addr)
	select {
	case err := <-errc:
		return fmt.Errorf("listen on %s: %w", srv.Addr, err)
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdown); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	log.Printf("notes %s: stopped", v)
	return nil
}
