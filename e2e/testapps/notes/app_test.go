package main

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// memStore is a store in memory: the handlers' logic is tested here; the real database in
// e2e/testapps (PostgreSQL from Debian, under systemd).
type memStore struct {
	mu    sync.Mutex
	notes []Note
	down  bool
}

func (m *memStore) List(context.Context) ([]Note, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.down {
		return nil, errors.New("down")
	}
	out := make([]Note, 0, len(m.notes))
	for i := len(m.notes) - 1; i >= 0; i-- {
		out = append(out, m.notes[i])
	}
	return out, nil
}

func (m *memStore) Add(_ context.Context, text string) (Note, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.down {
		return Note{}, errors.New("down")
	}
	n := Note{ID: int64(len(m.notes) + 1), Text: text, Created: time.Unix(0, 0).UTC()}
	m.notes = append(m.notes, n)
	return n, nil
}

func (m *memStore) Ping(context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.down {
		return errors.New("down")
	}
	return nil
}

func do(t *testing.T, h http.Handler, method, target string, form url.Values, accept string) *httptest.ResponseRecorder {
	t.Helper()
	var body *strings.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	} else {
		body = strings.NewReader("")
	}
	req := httptest.NewRequest(method, target, body)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func TestNotesHandlers(t *testing.T) {
	st := &memStore{}
	a := &app{version: "7", store: st}
	h := a.handler()

	// Not ready: 503 everywhere, the version still shown.
	if rec := do(t, h, "GET", "/healthz", nil, ""); rec.Code != 503 || rec.Header().Get("X-Notes-Version") != "7" {
		t.Errorf("healthz before ready = %d %q", rec.Code, rec.Header().Get("X-Notes-Version"))
	}
	if rec := do(t, h, "GET", "/", nil, ""); rec.Code != 503 || !strings.Contains(rec.Body.String(), "notes 7") {
		t.Errorf("GET / before ready = %d %q", rec.Code, rec.Body.String())
	}
	a.ready.Store(true)

	if rec := do(t, h, "GET", "/healthz", nil, ""); rec.Code != 200 || rec.Body.String() != "ok 7\n" {
		t.Errorf("healthz = %d %q", rec.Code, rec.Body.String())
	}
	rec := do(t, h, "POST", "/notes", url.Values{"text": {"<b>first</b>"}}, "")
	if rec.Code != http.StatusSeeOther || rec.Header().Get("Location") != "/" {
		t.Errorf("POST /notes = %d %q", rec.Code, rec.Header().Get("Location"))
	}
	rec = do(t, h, "POST", "/notes", url.Values{"text": {"second"}}, "application/json")
	var n Note
	if rec.Code != 201 || json.Unmarshal(rec.Body.Bytes(), &n) != nil || n.ID != 2 || n.Text != "second" {
		t.Errorf("POST /notes (JSON) = %d %q", rec.Code, rec.Body.String())
	}
	rec = do(t, h, "GET", "/", nil, "")
	body := rec.Body.String()
	if rec.Code != 200 || !strings.Contains(body, "&lt;b&gt;first&lt;/b&gt;") || strings.Contains(body, "<b>first") ||
		strings.Index(body, "second") > strings.Index(body, "first") || !strings.Contains(body, "notes 7") {
		t.Errorf("GET / = %d:\n%s", rec.Code, body)
	}
	var list []Note
	rec = do(t, h, "GET", "/notes", nil, "")
	if rec.Code != 200 || json.Unmarshal(rec.Body.Bytes(), &list) != nil || len(list) != 2 || list[0].Text != "second" {
		t.Errorf("GET /notes = %d %q", rec.Code, rec.Body.String())
	}

	// Bad input: 400 with the field named; nothing stored.
	for _, text := range []string{"", "   ", strings.Repeat("x", maxText+1), "a\x00b", "\xff"} {
		rec := do(t, h, "POST", "/notes", url.Values{"text": {text}}, "")
		if rec.Code != 400 || !strings.HasPrefix(rec.Body.String(), "text:") {
			t.Errorf("POST text %q = %d %q, want 400 naming text", text, rec.Code, rec.Body.String())
		}
	}
	if len(st.notes) != 2 {
		t.Errorf("bad input stored something: %d notes", len(st.notes))
	}

	// The database goes away: health fails, pages say so.
	st.mu.Lock()
	st.down = true
	st.mu.Unlock()
	if rec := do(t, h, "GET", "/healthz", nil, ""); rec.Code != 503 {
		t.Errorf("healthz with the database down = %d", rec.Code)
	}
	if rec := do(t, h, "GET", "/", nil, ""); rec.Code != 503 {
		t.Errorf("GET / with the database down = %d", rec.Code)
	}
}

func TestBrokenRelease(t *testing.T) {
	h := brokenHandler("3-broken")
	for _, p := range []string{"/healthz", "/", "/notes"} {
		rec := do(t, h, "GET", p, nil, "")
		if rec.Code != 500 || rec.Header().Get("X-Notes-Version") != "3-broken" {
			t.Errorf("broken GET %s = %d %q", p, rec.Code, rec.Header().Get("X-Notes-Version"))
		}
	}
}
