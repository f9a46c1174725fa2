package dashboard

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/onionpod/onionpod/onion"
)

// client is a browser-like client: cookies kept, redirects not followed (the tests check them).
type client struct {
	t    *testing.T
	base string
	http *http.Client
}

func newClient(t *testing.T, srv *httptest.Server) *client {
	jar, _ := cookiejar.New(nil)
	return &client{t: t, base: srv.URL, http: &http.Client{Jar: jar,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

func (c *client) get(path string) (int, string) {
	c.t.Helper()
	resp, err := c.http.Get(c.base + path)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusSeeOther {
		return resp.StatusCode, resp.Header.Get("Location")
	}
	return resp.StatusCode, string(b)
}

func (c *client) post(path string, form url.Values, header ...string) (int, string, http.Header) {
	c.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, c.base+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := c.http.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusSeeOther {
		return resp.StatusCode, resp.Header.Get("Location"), resp.Header
	}
	return resp.StatusCode, string(b), resp.Header
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func csrfOf(t *testing.T, html string) string {
	t.Helper()
	m := csrfRE.FindStringSubmatch(html)
	if m == nil {
		t.Fatalf("no CSRF token in the page:\n%.500s", html)
	}
	return m[1]
}

func newServer(t *testing.T, box *testBox, cfg Config) *Server {
	t.Helper()
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	cfg.Box = "testbox"
	s, err := New(cfg, box.deps())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestLANLoginAndActions: the LAN side asks for the login key; with it, the apps are listed and
// an action changes the app. Bad input is refused with the right status and changes nothing: a
// forged or missing CSRF token (403), a request from another site (403), an unknown app or
// action (404), a wrong key (401), a session of the onion side or of an old key.
func TestLANLoginAndActions(t *testing.T) {
	box := newTestBox(t, 3)
	s := newServer(t, box, Config{})
	srv := httptest.NewServer(s.Handler(RealmLAN))
	defer srv.Close()
	c := newClient(t, srv)

	if code, loc := c.get("/"); code != http.StatusSeeOther || loc != "/login" {
		t.Fatalf("GET / without a session: %d %s, want a redirect to /login", code, loc)
	}
	if code, _ := c.get("/apps/blog"); code != http.StatusSeeOther {
		t.Errorf("GET /apps/blog without a session: %d", code)
	}
	if code, _, _ := c.post("/apps/blog/stop", url.Values{"csrf": {"x"}}); code != http.StatusForbidden {
		t.Errorf("POST without a session: %d, want 403", code)
	}
	if code, _, _ := c.post("/login", url.Values{"key": {"AAAA-BBBB-CCCC-DDDD-EEEE-FFFF-GGGG-HHHH"}}); code != http.StatusUnauthorized {
		t.Errorf("a wrong key: %d, want 401", code)
	}
	key := s.LoginKey()
	if code, loc, _ := c.post("/login", url.Values{"key": {strings.ToLower(strings.ReplaceAll(key, "-", " "))}}); code != http.StatusSeeOther || loc != "/" {
		t.Fatalf("login: %d %s", code, loc)
	}
	code, html := c.get("/")
	if code != http.StatusOK || !strings.Contains(html, `id="app-blog"`) || !strings.Contains(html, "app02") {
		t.Fatalf("GET / after login: %d\n%.800s", code, html)
	}
	token := csrfOf(t, html)

	for _, bad := range []struct {
		name   string
		path   string
		form   url.Values
		header []string
		want   int
	}{
		{"forged token", "/apps/blog/stop", url.Values{"csrf": {strings.Repeat("A", len(token))}}, nil, http.StatusForbidden},
		{"no token", "/apps/blog/stop", url.Values{}, nil, http.StatusForbidden},
		{"another site", "/apps/blog/stop", url.Values{"csrf": {token}}, []string{"Origin", "http://evil.example"}, http.StatusForbidden},
		{"another site (fetch metadata)", "/apps/blog/stop", url.Values{"csrf": {token}}, []string{"Sec-Fetch-Site", "cross-site"}, http.StatusForbidden},
		{"unknown app", "/apps/nosuch/stop", url.Values{"csrf": {token}}, nil, http.StatusNotFound},
		{"not an app name", "/apps/..%2Fetc/stop", url.Values{"csrf": {token}}, nil, http.StatusNotFound},
		{"unknown action", "/apps/blog/explode", url.Values{"csrf": {token}}, nil, http.StatusNotFound},
		{"update with a forged token", "/apps/blog/update", url.Values{"csrf": {strings.Repeat("A", len(token))}}, nil, http.StatusForbidden},
		{"rollback of an unknown app", "/apps/nosuch/rollback", url.Values{"csrf": {token}}, nil, http.StatusNotFound},
	} {
		if code, body, _ := c.post(bad.path, bad.form, bad.header...); code != bad.want {
			t.Errorf("%s: %d, want %d\n%.300s", bad.name, code, bad.want, body)
		}
	}
	if got := box.recorded(); len(got) != 0 {
		t.Fatalf("refused requests changed something: %v", got)
	}
	if code, _ := c.get("/apps/nosuch"); code != http.StatusNotFound {
		t.Errorf("GET /apps/nosuch: %d, want 404", code)
	}

	code, loc, _ := c.post("/apps/blog/stop", url.Values{"csrf": {token}, "back": {"/"}}, "Origin", srv.URL[len("http://"):])
	if code != http.StatusSeeOther || loc != "/" {
		t.Fatalf("stop: %d %s", code, loc)
	}
	_, html = c.get("/")
	if !strings.Contains(html, "blog is stopping") || !strings.Contains(html, `data-action="blog-start"`) {
		t.Errorf("after stop, the page shows no flash or no start button:\n%.1500s", html)
	}
	if code, loc, _ := c.post("/apps/blog/start", url.Values{"csrf": {token}, "back": {"//evil.example/"}}); code != http.StatusSeeOther || loc != "/apps/blog" {
		t.Errorf("start with a foreign back: %d %s, want /apps/blog", code, loc)
	}
	_, html = c.get("/apps/blog")
	for _, want := range []string{`id="container-db"`, "registry.example/postgres:15", `<span class="health h-healthy">healthy</span>`,
		"/healthz every 10s", "no check", `id="cert" class="error">expires `, "the CA refused the order"} {
		if !strings.Contains(html, want) {
			t.Errorf("the app's page does not show %q (containers, their health, the certificate)", want)
		}
	}
	if !strings.Contains(html, `data-action="blog-update"`) || !strings.Contains(html, `data-action="blog-rollback"`) {
		t.Errorf("the app's page has no update or roll back button:\n%.1500s", html)
	}
	if code, loc, _ := c.post("/apps/blog/update", url.Values{"csrf": {token}}); code != http.StatusSeeOther || loc != "/apps/blog" {
		t.Errorf("update: %d %s", code, loc)
	}
	if _, html = c.get("/apps/blog"); !strings.Contains(html, "blog: updated") {
		t.Errorf("after update, the page does not say what happened:\n%.1500s", html)
	}
	if got := box.recorded(); !slices.Equal(got, []string{"stop blog", "start blog", "update blog"}) {
		t.Errorf("actions = %v", got)
	}

	// A session of the onion side is not one of the LAN side; a new login key ends sessions.
	onionSrv := httptest.NewServer(s.Handler(RealmOnion))
	defer onionSrv.Close()
	resp, err := http.Get(onionSrv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	onionCookie := resp.Cookies()[0]
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/", nil)
	req.AddCookie(onionCookie)
	if resp, err := http.DefaultTransport.RoundTrip(req); err != nil || resp.StatusCode != http.StatusSeeOther {
		t.Errorf("an onion session on the LAN side: %v %v", resp.StatusCode, err)
	}
	if err := s.RotateLoginKey(); err != nil {
		t.Fatal(err)
	}
	if code, _ := c.get("/"); code != http.StatusSeeOther {
		t.Errorf("after a new login key, the old session still works: %d", code)
	}
}

// TestOnionSideNeedsNoLogin: on the onion side (client authorization already admitted the
// device) a page makes a session; an action still needs its token.
func TestOnionSideNeedsNoLogin(t *testing.T) {
	box := newTestBox(t, 2)
	s := newServer(t, box, Config{})
	srv := httptest.NewServer(s.Handler(RealmOnion))
	defer srv.Close()
	c := newClient(t, srv)
	if code, _, _ := c.post("/apps/blog/stop", url.Values{"csrf": {"forged"}}); code != http.StatusForbidden {
		t.Errorf("an action before any page: %d, want 403", code)
	}
	code, html := c.get("/")
	if code != http.StatusOK || !strings.Contains(html, `id="app-blog"`) {
		t.Fatalf("GET /: %d", code)
	}
	if code, _, _ := c.post("/apps/blog/restart", url.Values{"csrf": {csrfOf(t, html)}}); code != http.StatusSeeOther {
		t.Errorf("restart: %d", code)
	}
	if got := box.recorded(); !slices.Equal(got, []string{"restart blog"}) {
		t.Errorf("actions = %v", got)
	}
	// With onion_login the onion side asks for the login too.
	s2 := newServer(t, box, Config{OnionLogin: true})
	srv2 := httptest.NewServer(s2.Handler(RealmOnion))
	defer srv2.Close()
	if code, loc := newClient(t, srv2).get("/"); code != http.StatusSeeOther || loc != "/login" {
		t.Errorf("onion_login: GET / = %d %s", code, loc)
	}
}

// TestBackupDownload: the backup form's POST answers an age file that the passphrase
// decrypts, holding the app's key (restored into an empty key store, it is the same .onion);
// the passphrase never appears in a URL; bad passphrases are refused with 400.
func TestBackupDownload(t *testing.T) {
	box := newTestBox(t, 2)
	s := newServer(t, box, Config{})
	srv := httptest.NewServer(s.Handler(RealmOnion))
	defer srv.Close()
	c := newClient(t, srv)
	code, html := c.get("/backup")
	if code != http.StatusOK || !strings.Contains(html, `value="blog"`) {
		t.Fatalf("GET /backup: %d", code)
	}
	token := csrfOf(t, html)
	pass := "correct horse battery staple"
	for _, bad := range []url.Values{
		{"csrf": {token}, "passphrase": {"short"}, "again": {"short"}},
		{"csrf": {token}, "passphrase": {pass}, "again": {pass + "!"}},
	} {
		if code, _, _ := c.post("/backup", bad); code != http.StatusBadRequest {
			t.Errorf("bad passphrase: %d, want 400", code)
		}
	}
	if code, _, _ := c.post("/backup", url.Values{"csrf": {token}, "passphrase": {pass}, "again": {pass}, "app": {"nosuch"}}); code != http.StatusNotFound {
		t.Errorf("backup of an unknown app: %d, want 404", code)
	}
	code, body, h := c.post("/backup", url.Values{"csrf": {token}, "passphrase": {pass}, "again": {pass}, "app": {"blog"}})
	if code != http.StatusOK || !strings.HasPrefix(h.Get("Content-Disposition"), `attachment; filename="onionpod-blog-`) {
		t.Fatalf("backup: %d %v", code, h)
	}
	id, err := age.NewScryptIdentity(pass)
	if err != nil {
		t.Fatal(err)
	}
	restored := &onion.KeyStore{Dir: t.TempDir()}
	if _, err := onion.Restore(bytes.NewReader([]byte(body)), restored, []age.Identity{id}, false); err != nil {
		t.Fatalf("the backup does not restore: %v", err)
	}
	k, err := restored.Load("blog")
	if err != nil || k.Address() != box.apps["blog"].Onion.Address {
		t.Errorf("restored %v (%v), want %s", k, err, box.apps["blog"].Onion.Address)
	}
	if _, err := restored.Load("app01"); err == nil {
		t.Error("a backup of blog holds app01's key too")
	}
}

// TestPagesHoldNoSecretInURLs: no link, form action or image source holds the session's
// token or the login key (they travel in cookies and POST bodies only), and every page sets
// the headers that keep it to itself.
func TestPagesHoldNoSecretInURLs(t *testing.T) {
	box := newTestBox(t, 3)
	s := newServer(t, box, Config{})
	srv := httptest.NewServer(s.Handler(RealmOnion))
	defer srv.Close()
	c := newClient(t, srv)
	urlAttr := regexp.MustCompile(`(?:href|action|src)="([^"]*)"`)
	for _, path := range []string{"/", "/apps/blog", "/backup"} {
		resp, err := c.http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		html := string(b)
		token := csrfOf(t, html)
		for _, m := range urlAttr.FindAllStringSubmatch(html, -1) {
			if strings.Contains(m[1], token) || strings.Contains(strings.ToUpper(m[1]), strings.ReplaceAll(s.LoginKey(), "-", "")) {
				t.Errorf("%s: a URL holds a secret: %.80s", path, m[1])
			}
			if strings.HasPrefix(m[1], "http") && !strings.Contains(m[1], ".onion/") && !strings.Contains(m[1], ".box.example/") && !strings.Contains(m[1], "age-encryption.org") {
				t.Errorf("%s: an external URL: %s", path, m[1])
			}
		}
		csp := resp.Header.Get("Content-Security-Policy")
		if !strings.Contains(csp, "default-src 'none'") || resp.Header.Get("Cache-Control") != "no-store" || resp.Header.Get("Referrer-Policy") != "no-referrer" {
			t.Errorf("%s: headers %v", path, resp.Header)
		}
	}
}

// TestOnionSet: the dashboard's service joins the apps' only when enabled and with a client,
// always with client authorization; an app of the same name keeps the name.
func TestOnionSet(t *testing.T) {
	o := &Onion{Dir: t.TempDir(), Target: "unix:/run/onionpod/tor/dashboard.sock"}
	next := &recordSet{}
	set := &OnionSet{Next: next, Dashboard: o}
	ctx := context.Background()
	apps := []onion.Service{{App: "blog"}}
	check := func(what string, want int) {
		t.Helper()
		if err := set.Set(ctx, apps); err != nil {
			t.Fatal(err)
		}
		if len(next.last) != want {
			t.Errorf("%s: %d services set, want %d", what, len(next.last), want)
		}
	}
	check("never enabled", 1)
	if err := o.Enable(); err != nil {
		t.Fatal(err)
	}
	check("enabled without a client", 1)
	cred, err := o.AddClient("phone")
	if err != nil {
		t.Fatal(err)
	}
	check("enabled with a client", 2)
	svc := next.last[1]
	if svc.App != ServiceName || len(svc.Clients) != 1 || svc.Key.Address() != cred.Address || svc.Ports[0].Target != o.Target {
		t.Errorf("the dashboard's service: %+v", svc)
	}
	if !strings.HasPrefix(cred.AuthPrivate(), strings.TrimSuffix(cred.Address, ".onion")+":descriptor:x25519:") {
		t.Errorf("auth line %q", cred.AuthPrivate())
	}
	apps = append(apps, onion.Service{App: ServiceName})
	check("an app named like it", 2)
	if set.Err() == nil {
		t.Error("no error for the name clash")
	}
	apps = apps[:1]
	if err := o.Disable(); err != nil {
		t.Fatal(err)
	}
	check("disabled", 1)
	if err := o.Enable(); err != nil {
		t.Fatal(err)
	}
	if o.Address() != cred.Address {
		t.Errorf("enable again: %s, want the same .onion %s", o.Address(), cred.Address)
	}
}

type recordSet struct{ last []onion.Service }

func (r *recordSet) Set(_ context.Context, s []onion.Service) error {
	r.last = s
	return nil
}
func (r *recordSet) Status() map[string]onion.ServiceStatus { return nil }

// BenchmarkIndex100Apps renders the apps page for 100 apps (with a probe history each),
// server side, as the daemon serves it. Target: under 50 ms.
func BenchmarkIndex100Apps(b *testing.B) {
	box := newTestBox(b, 100)
	s, err := New(Config{Dir: b.TempDir()}, box.deps())
	if err != nil {
		b.Fatal(err)
	}
	h := s.Handler(RealmOnion)
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	start := time.Now()
	for b.Loop() {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != http.StatusOK {
			b.Fatal(w.Code)
		}
	}
	per := time.Since(start) / time.Duration(b.N)
	b.ReportMetric(float64(per.Microseconds())/1000, "ms/page")
	b.ReportMetric(float64(per)/float64(50*time.Millisecond), "x_target")
}
