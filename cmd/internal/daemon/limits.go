package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/onionpod/onionpod/internal/peercred"
)

// Bounds of the LocalAPI: what one client (a uid) may hold open at once, how long a wait may
// last, and how large a request body may be.
const (
	maxWaitsPerUID     = 16
	maxFollowersPerUID = 4
	maxUploadsPerUID   = 2
	maxWaitTimeout     = 10 * time.Minute
	maxBodyBytes       = 1 << 20
	// maxRestoreBytes bounds a backup sent to be restored (root only; staged on disk, verified
	// to its last byte before anything is committed).
	maxRestoreBytes = 1 << 50
)

// peer is who is at the other end of an API connection, from the socket's SO_PEERCRED.
type peer struct {
	known    bool
	uid, gid uint32
	pid      int32
}

type peerKey struct{}

// withPeer is the server's ConnContext: it reads the connection's peer credentials once.
func withPeer(ctx context.Context, c net.Conn) context.Context {
	var p peer
	if uc, ok := c.(*net.UnixConn); ok {
		if cred, err := peercred.Of(uc); err == nil {
			p = peer{known: true, uid: cred.Uid, gid: cred.Gid, pid: cred.Pid}
		}
	}
	return context.WithValue(ctx, peerKey{}, p)
}

// peerOf is the peer of a request's connection (known false when the credentials were not read).
func peerOf(r *http.Request) peer {
	p, _ := r.Context().Value(peerKey{}).(peer)
	return p
}

// rootOnly serves h only to root (by the connection's peer credentials), 403 to anyone else.
func rootOnly(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if p := peerOf(r); !p.known || p.uid != 0 {
			failCode(w, http.StatusForbidden, fmt.Errorf("api: %s is for root only", r.URL.Path))
			return
		}
		h(w, r)
	}
}

// perUID bounds how many of one kind of long request (waits, log followers) each uid holds at once.
type perUID struct {
	what string
	max  int

	mu sync.Mutex
	n  map[uint32]int
}

func newPerUID(what string, max int) *perUID {
	return &perUID{what: what, max: max, n: map[uint32]int{}}
}

// acquire takes a slot for the request's uid (connections of unknown peers share one, uid
// 2^32-1); false when the uid holds max already.
func (l *perUID) acquire(r *http.Request) (release func(), ok bool) {
	uid := ^uint32(0)
	if p := peerOf(r); p.known {
		uid = p.uid
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n[uid] >= l.max {
		return nil, false
	}
	l.n[uid]++
	return func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.n[uid]--; l.n[uid] == 0 {
			delete(l.n, uid)
		}
	}, true
}

// limited serves h when the uid has a slot in l, 429 otherwise.
func (l *perUID) limited(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		release, ok := l.acquire(r)
		if !ok {
			failCode(w, http.StatusTooManyRequests, fmt.Errorf("api: this user has %d %s open already: end one first", l.max, l.what))
			return
		}
		defer release()
		h(w, r)
	}
}

// bodyLimit bounds every request body (http.MaxBytesReader: reading past it fails, and the
// answer is 413): an image archive to maxUploadBytes, anything else to maxBodyBytes.
func bodyLimit(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := int64(maxBodyBytes)
		switch r.URL.Path {
		case "/v1/images":
			n = maxUploadBytes
		case "/v1/restore":
			n = maxRestoreBytes
		}
		r.Body = http.MaxBytesReader(w, r.Body, n)
		h.ServeHTTP(w, r)
	})
}

// gate tracks the API's running handlers, so the daemon can wait for them before closing its
// parts; once closed, new requests are refused (503).
type gate struct {
	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup
}

func (g *gate) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.mu.Lock()
		if g.closed {
			g.mu.Unlock()
			failCode(w, http.StatusServiceUnavailable, errors.New("api: the daemon is stopping"))
			return
		}
		g.wg.Add(1)
		g.mu.Unlock()
		defer g.wg.Done()
		h.ServeHTTP(w, r)
	})
}

// closeAndWait refuses new requests and waits for the running ones to end.
func (g *gate) closeAndWait() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
	g.wg.Wait()
}
