// Package dashboard is onionpod's web dashboard: server-rendered HTML from embedded templates
// and CSS, no external assets and no JavaScript needed (Tor Browser's safest level), a small
// script that refreshes the page in place when scripts run. It shows every app (state, health,
// addresses with a QR code of the .onion, probe history, recent log lines) and acts on them
// (start, stop, restart, expose, unexpose, an age-encrypted backup of the onion keys).
//
// It is served on two sides. The LAN side (loopback and the host's ULA) asks for a login: the
// key `onionpod dashboard login` prints, which only root and the LocalAPI's group can get. The
// onion side is the dashboard's own v3 onion service with client authorization: only devices
// the owner added can even fetch its descriptor, so it needs no login (dashboard.onion_login
// asks for it anyway). Every action is a POST with a CSRF token bound to the session, and
// same-origin checked; nothing secret is ever in a URL.
package dashboard

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/onionpod/onionpod/cmd/internal/api"
	"github.com/onionpod/onionpod/cmd/internal/probe"
	"github.com/onionpod/onionpod/internal/errkind"
	"github.com/onionpod/onionpod/internal/names"
)

// Apps reports the apps as the daemon sees them.
type Apps interface {
	Apps(ctx context.Context) ([]api.AppStatus, error)
	// App returns one app; an unknown app is an error matching errkind.NotFound.
	App(ctx context.Context, name string) (api.AppStatus, error)
}

// Actions change an app's desired state (an unknown app: errkind.NotFound).
type Actions interface {
	Start(ctx context.Context, app string) error
	Stop(ctx context.Context, app string) error
	Restart(ctx context.Context, app string) error
	// SetOnion exposes (on) or unexposes the app's onion service; its key is kept.
	SetOnion(ctx context.Context, app string, on bool) error
}

// Backups write an age-encrypted backup of onion keys (every app's when apps is empty), as
// `onionpod onion backup` does, for a passphrase.
type Backups interface {
	Backup(ctx context.Context, w io.Writer, apps []string, passphrase string) error
}

// Logs gives an app's recent journal lines.
type Logs interface {
	Tail(ctx context.Context, app string, lines int) ([]string, error)
}

// Probes gives an app's recent probe results.
type Probes interface {
	History(app string) map[probe.Path][]probe.Result
}

// Updates update an app's images and roll them back, as `onionpod update` and `rollback` do:
// each returns once the app is healthy on its new (or old) images, saying what happened in a
// line for the owner ("updated", "rolled back: why", "up to date"). nil: the buttons are not
// shown.
type Updates interface {
	Update(ctx context.Context, app string) (string, error)
	Rollback(ctx context.Context, app string) (string, error)
}

// Deps are what the dashboard reads and drives. Apps and Actions are required.
type Deps struct {
	Apps    Apps
	Actions Actions
	Backups Backups
	Logs    Logs
	Probes  Probes
	Updates Updates
}

// Config configures a Server.
type Config struct {
	// Dir is the dashboard's state directory (login key, onion key): state_dir/dashboard.
	Dir string
	// Session is how long a login lasts (default 12 h).
	Session time.Duration
	// OnionLogin asks for the login on the onion side too.
	OnionLogin bool
	// Box names the box in page titles.
	Box string
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Server renders the dashboard.
type Server struct {
	cfg   Config
	deps  Deps
	keys  *loginKeys
	pages map[string]*template.Template
}

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// New loads (or makes) the login key under cfg.Dir and parses the templates.
func New(cfg Config, deps Deps) (*Server, error) {
	if deps.Apps == nil || deps.Actions == nil {
		return nil, errors.New("dashboard: Apps and Actions are required")
	}
	if cfg.Session <= 0 {
		cfg.Session = 12 * time.Hour
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	keys, err := loadLoginKey(cfg.Dir)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, deps: deps, keys: keys, pages: map[string]*template.Template{}}
	for _, page := range []string{"index", "app", "login", "backup", "error"} {
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/"+page+".html")
		if err != nil {
			return nil, fmt.Errorf("dashboard: template %s: %w", page, err)
		}
		s.pages[page] = t
	}
	return s, nil
}

// LoginKey is the LAN login key as the owner types it.
func (s *Server) LoginKey() string { return s.keys.printed() }

// RotateLoginKey makes a new login key: every session (LAN and onion) ends.
func (s *Server) RotateLoginKey() error { return s.keys.rotate() }

// Handler serves the dashboard for one side.
func (s *Server) Handler(realm Realm) http.Handler {
	needLogin := realm == RealmLAN || s.cfg.OnionLogin
	mux := http.NewServeMux()
	static, _ := fs.Sub(staticFS, "static")
	mux.Handle("GET /static/", http.StripPrefix("/static/", cacheStatic(http.FileServerFS(static))))
	mux.HandleFunc("GET /login", func(w http.ResponseWriter, r *http.Request) {
		if !needLogin {
			http.Redirect(w, r, "/", http.StatusSeeOther)
			return
		}
		s.render(w, r, http.StatusOK, "login", page{Title: "Log in", Realm: realm})
	})
	mux.HandleFunc("POST /login", func(w http.ResponseWriter, r *http.Request) { s.login(w, r, realm) })
	mux.HandleFunc("POST /logout", s.withSession(realm, needLogin, true, func(w http.ResponseWriter, r *http.Request, _ session) {
		setSessionCookie(w, "", time.Unix(1, 0))
		http.Redirect(w, r, "/login", http.StatusSeeOther)
	}))
	mux.HandleFunc("GET /{$}", s.withSession(realm, needLogin, false, s.index))
	mux.HandleFunc("GET /apps/{name}", s.withSession(realm, needLogin, false, s.app))
	mux.HandleFunc("POST /apps/{name}/{action}", s.withSession(realm, needLogin, true, s.act))
	mux.HandleFunc("GET /backup", s.withSession(realm, needLogin, false, s.backupForm))
	mux.HandleFunc("POST /backup", s.withSession(realm, needLogin, true, s.backup))
	return secureHeaders(mux)
}

// withSession admits a request with a valid session of realm. Without one: with needLogin, a
// page redirects to the login and an action is refused (403); without needLogin (the onion
// side), a session is made on the spot for a page (an action without one cannot carry its
// token: 403). An action must carry the session's CSRF token and come from the same origin.
func (s *Server) withSession(realm Realm, needLogin, action bool, next func(http.ResponseWriter, *http.Request, session)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		now := s.cfg.Now()
		var sess session
		ok := false
		if c, err := r.Cookie(sessionCookie); err == nil {
			sess, ok = s.keys.parse(c.Value, realm, now)
		}
		switch {
		case !ok && action:
			s.fail(w, r, http.StatusForbidden, errors.New("no session: reload the page (or log in) and try again"))
			return
		case !ok && needLogin:
			http.Redirect(w, r, "/login", http.StatusSeeOther)
			return
		case !ok:
			var v string
			sess, v = s.keys.newSession(realm, s.cfg.Session, now)
			setSessionCookie(w, v, sess.expiry)
		}
		if action {
			if !sameOrigin(r) {
				s.fail(w, r, http.StatusForbidden, errors.New("a request from another site was refused"))
				return
			}
			r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
			if err := r.ParseForm(); err != nil {
				s.fail(w, r, http.StatusBadRequest, errors.New("the form could not be read"))
				return
			}
			if !s.keys.csrfOK(sess, r.PostFormValue("csrf")) {
				s.fail(w, r, http.StatusForbidden, errors.New("the form's token is not this session's: reload the page and try again"))
				return
			}
		}
		r = r.WithContext(context.WithValue(r.Context(), sessionKey{}, sess))
		next(w, r, sess)
	}
}

type sessionKey struct{}

func (s *Server) login(w http.ResponseWriter, r *http.Request, realm Realm) {
	if !sameOrigin(r) {
		s.fail(w, r, http.StatusForbidden, errors.New("a request from another site was refused"))
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 4<<10)
	if err := r.ParseForm(); err != nil || !s.keys.matches(r.PostFormValue("key")) {
		s.render(w, r, http.StatusUnauthorized, "login", page{Title: "Log in", Realm: realm,
			Flash: "That is not the login key. `onionpod dashboard login` prints it on the box."})
		return
	}
	sess, v := s.keys.newSession(realm, s.cfg.Session, s.cfg.Now())
	setSessionCookie(w, v, sess.expiry)
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// page is what every template gets.
type page struct {
	Title   string
	Box     string
	Realm   Realm
	CSRF    string
	Flash   string
	Refresh bool // the live-update script may refresh this page
	Apps    []appView
	App     *appView
	Logs    []string
	LogErr  string
	Updates bool
	Select  string // the backup form's preselected app
	Err     string
	Code    int
}

func (s *Server) newPage(r *http.Request, title string) page {
	p := page{Title: title, Box: s.cfg.Box}
	if sess, ok := r.Context().Value(sessionKey{}).(session); ok {
		p.CSRF = s.keys.csrf(sess)
		p.Realm = sess.realm
	}
	return p
}

func (s *Server) index(w http.ResponseWriter, r *http.Request, _ session) {
	p := s.newPage(r, "Apps")
	apps, err := s.deps.Apps.Apps(r.Context())
	if err != nil {
		s.fail(w, r, http.StatusInternalServerError, err)
		return
	}
	sort.Slice(apps, func(i, j int) bool { return apps[i].App.Name < apps[j].App.Name })
	p.Apps = make([]appView, len(apps))
	for i, a := range apps {
		p.Apps[i] = s.view(a, false)
	}
	p.Flash, p.Refresh = takeFlash(w, r), true
	s.render(w, r, http.StatusOK, "index", p)
}

func (s *Server) app(w http.ResponseWriter, r *http.Request, _ session) {
	name := r.PathValue("name")
	st, err := s.lookup(r.Context(), name)
	if err != nil {
		s.fail(w, r, statusOf(err), err)
		return
	}
	p := s.newPage(r, name)
	v := s.view(st, true)
	p.App, p.Updates = &v, s.deps.Updates != nil
	if s.deps.Logs != nil {
		ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
		p.Logs, err = s.deps.Logs.Tail(ctx, name, 20)
		cancel()
		if err != nil {
			p.LogErr = err.Error()
		}
	}
	p.Flash, p.Refresh = takeFlash(w, r), true
	s.render(w, r, http.StatusOK, "app", p)
}

// lookup checks the name, then asks for the app.
func (s *Server) lookup(ctx context.Context, name string) (api.AppStatus, error) {
	if err := names.App(name); err != nil {
		return api.AppStatus{}, errkind.NotFoundf("dashboard: no app %q", name)
	}
	return s.deps.Apps.App(ctx, name)
}

// act runs one action on an app, then goes back to the page it came from.
func (s *Server) act(w http.ResponseWriter, r *http.Request, _ session) {
	name, action := r.PathValue("name"), r.PathValue("action")
	ctx := r.Context()
	if _, err := s.lookup(ctx, name); err != nil {
		s.fail(w, r, statusOf(err), err)
		return
	}
	var err error
	var done string
	a := s.deps.Actions
	switch action {
	case "start":
		err, done = a.Start(ctx, name), name+" is starting"
	case "stop":
		err, done = a.Stop(ctx, name), name+" is stopping"
	case "restart":
		err, done = a.Restart(ctx, name), name+" restarted"
	case "expose":
		err, done = a.SetOnion(ctx, name, true), name+": onion service on its way"
	case "unexpose":
		err, done = a.SetOnion(ctx, name, false), name+": onion service taken down (its key is kept)"
	case "update", "rollback":
		if s.deps.Updates == nil {
			s.fail(w, r, http.StatusNotFound, fmt.Errorf("dashboard: no action %q", action))
			return
		}
		var what string
		if action == "update" {
			what, err = s.deps.Updates.Update(ctx, name)
		} else {
			what, err = s.deps.Updates.Rollback(ctx, name)
		}
		done = name + ": " + what
	default:
		s.fail(w, r, http.StatusNotFound, fmt.Errorf("dashboard: no action %q", action))
		return
	}
	if err != nil {
		s.fail(w, r, statusOf(err), err)
		return
	}
	setFlash(w, done)
	http.Redirect(w, r, back(r.PostFormValue("back"), "/apps/"+name), http.StatusSeeOther)
}

func (s *Server) backupForm(w http.ResponseWriter, r *http.Request, _ session) {
	p := s.newPage(r, "Backup")
	apps, err := s.deps.Apps.Apps(r.Context())
	if err != nil {
		s.fail(w, r, http.StatusInternalServerError, err)
		return
	}
	for _, a := range apps {
		if a.Onion.Address != "" {
			p.Apps = append(p.Apps, s.view(a, false))
		}
	}
	p.Flash, p.Select = takeFlash(w, r), r.URL.Query().Get("app")
	s.render(w, r, http.StatusOK, "backup", p)
}

// backup sends the encrypted backup as a download. The passphrase comes in the POST body,
// never in a URL, and is not kept.
func (s *Server) backup(w http.ResponseWriter, r *http.Request, _ session) {
	if s.deps.Backups == nil {
		s.fail(w, r, http.StatusNotImplemented, errors.New("dashboard: backups are not available"))
		return
	}
	pass, again := r.PostFormValue("passphrase"), r.PostFormValue("again")
	switch {
	case len(pass) < 12:
		s.fail(w, r, http.StatusBadRequest, errors.New("the passphrase must have at least 12 characters"))
		return
	case pass != again:
		s.fail(w, r, http.StatusBadRequest, errors.New("the two passphrases differ"))
		return
	}
	var apps []string
	if app := r.PostFormValue("app"); app != "" {
		if _, err := s.lookup(r.Context(), app); err != nil {
			s.fail(w, r, statusOf(err), err)
			return
		}
		apps = []string{app}
	}
	var buf strings.Builder
	if err := s.deps.Backups.Backup(r.Context(), &buf, apps, pass); err != nil {
		s.fail(w, r, statusOf(err), err)
		return
	}
	name := "onionpod-keys-" + s.cfg.Now().UTC().Format("20060102-150405") + ".age"
	if len(apps) == 1 {
		name = "onionpod-" + apps[0] + "-" + s.cfg.Now().UTC().Format("20060102-150405") + ".age"
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", `attachment; filename="`+name+`"`)
	io.WriteString(w, buf.String())
}

func statusOf(err error) int {
	switch {
	case errors.Is(err, errkind.NotFound):
		return http.StatusNotFound
	case errors.Is(err, errkind.BadInput):
		return http.StatusBadRequest
	case errors.Is(err, errkind.Conflict):
		return http.StatusConflict
	}
	return http.StatusInternalServerError
}

func (s *Server) fail(w http.ResponseWriter, r *http.Request, code int, err error) {
	p := s.newPage(r, http.StatusText(code))
	p.Err, p.Code = err.Error(), code
	s.render(w, r, code, "error", p)
}

func (s *Server) render(w http.ResponseWriter, r *http.Request, code int, name string, p page) {
	if p.Box == "" {
		p.Box = s.cfg.Box
	}
	var b strings.Builder
	if err := s.pages[name].Execute(&b, p); err != nil {
		http.Error(w, "dashboard: rendering failed", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	io.WriteString(w, b.String())
}

// back is a local path to return to after an action ("/" or "/apps/NAME"), never another site.
func back(v, def string) string {
	if v == "/" || strings.HasPrefix(v, "/apps/") && names.IsApp(strings.TrimPrefix(v, "/apps/")) {
		return v
	}
	return def
}

func setFlash(w http.ResponseWriter, msg string) {
	http.SetCookie(w, &http.Cookie{Name: flashCookie, Value: url.QueryEscape(msg), Path: "/", HttpOnly: true,
		SameSite: http.SameSiteStrictMode, MaxAge: 60})
}

func takeFlash(w http.ResponseWriter, r *http.Request) string {
	c, err := r.Cookie(flashCookie)
	if err != nil {
		return ""
	}
	http.SetCookie(w, &http.Cookie{Name: flashCookie, Path: "/", MaxAge: -1})
	msg, _ := url.QueryUnescape(c.Value)
	return msg
}

// secureHeaders: no external anything, no framing, no referrer, no caching of pages.
func secureHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; img-src 'self' data:; script-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		if !strings.HasPrefix(r.URL.Path, "/static/") {
			h.Set("Cache-Control", "no-store")
		}
		next.ServeHTTP(w, r)
	})
}

func cacheStatic(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=3600")
		next.ServeHTTP(w, r)
	})
}
