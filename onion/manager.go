package onion

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cretz/bine/control"
)

// Manager keeps tor's detached onion services equal to a desired set. One goroutine (Run)
// owns the control connection: it connects with backoff, adds what is missing with
// ADD_ONION Flags=Detach, removes what is no longer wanted with DEL_ONION, follows HS_DESC
// events to report uploads, and after a tor restart reconnects and re-adds everything.
// There is no goroutine per service.
//
// Services are detached: they outlive the control connection and the Manager. Stopping Run
// leaves them in tor; a new Manager with the same desired set takes them over.
type Manager struct {
	cfg     ControlConfig
	running atomic.Bool

	mu       sync.Mutex
	services map[string]*svcState // desired, by app
	byID     map[string]string    // service ID -> app, for the desired set
	owned    map[string]string    // service ID -> signature, for services tor has from us
	gen      uint64               // generation of the desired set
	applied  uint64               // generation last applied on a live connection
	applyErr error                // per-service errors of that apply
	conn     ConnStatus
	tried    bool          // Run made its first connection attempt (Set waits for it)
	changed  chan struct{} // closed and replaced on every change (wakes Set)
	notify   chan struct{} // capacity 1, for Changes
	wake     chan struct{} // capacity 1, desired set changed
}

// svcState is one desired service and what tor has of it.
type svcState struct {
	svc        Service
	sig        string
	address    string // of svc.Key, derived once
	added      bool
	uploadedAt time.Time
	err        string
}

// ServiceStatus is what the Manager knows of one desired service.
type ServiceStatus struct {
	Address string `json:"address"`
	// Added: tor has the service (ADD_ONION succeeded on the current connection or it was
	// found in GETINFO onions/detached with the same ports and clients).
	Added bool `json:"added"`
	// Uploaded: tor reported HS_DESC UPLOADED for it since it was added.
	Uploaded   bool      `json:"uploaded"`
	UploadedAt time.Time `json:"uploaded_at,omitzero"`
	Err        string    `json:"error,omitempty"`
}

// ConnStatus describes the control connection.
type ConnStatus struct {
	Connected bool      `json:"connected"`
	Since     time.Time `json:"since,omitzero"` // when it connected or went down
	// Reconnects counts connections after the first.
	Reconnects int `json:"reconnects"`
	// LastSync is the time from the control port accepting the last connection to every
	// desired service being applied.
	LastSync  time.Duration `json:"last_sync"`
	LastError string        `json:"last_error,omitempty"`
	// Bootstrap is tor's bootstrap progress in percent (100: it has a consensus and circuits),
	// as GETINFO status/bootstrap-phase and STATUS_CLIENT BOOTSTRAP events report it; -1 until
	// known (no connection yet).
	Bootstrap int `json:"bootstrap"`
}

// NewManager returns a Manager for the control port in cfg. Nothing happens until Run.
func NewManager(cfg ControlConfig) *Manager {
	return &Manager{
		cfg:      cfg,
		services: map[string]*svcState{},
		byID:     map[string]string{},
		owned:    map[string]string{},
		changed:  make(chan struct{}),
		conn:     ConnStatus{Bootstrap: -1},
		notify:   make(chan struct{}, 1),
		wake:     make(chan struct{}, 1),
	}
}

// Set makes services the desired set (the zero value removes every service this Manager
// added) and waits until it is applied on the live connection. While tor is unreachable it
// returns an error wrapping ErrTorUnavailable (at once, or, before Run's first connection
// attempt, once it is made); the set is kept and applied when tor
// comes back. Per-service failures (say, an address another controller holds) are joined
// in the error and reported in Status; the other services are applied. Changing the ports
// or clients of a live service removes and re-adds it.
func (m *Manager) Set(ctx context.Context, services []Service) error {
	states := make(map[string]*svcState, len(services))
	byID := make(map[string]string, len(services))
	for _, s := range services {
		sig, err := s.validate()
		if err != nil {
			return err
		}
		if _, dup := states[s.App]; dup {
			return fmt.Errorf("onion: service %q listed twice: %w", s.App, ErrBadInput)
		}
		id := s.Key.ServiceID()
		if other, dup := byID[id]; dup {
			return fmt.Errorf("onion: services %q and %q have the same key: %w", other, s.App, ErrBadInput)
		}
		byID[id] = s.App
		s.Ports = append([]Port(nil), s.Ports...)
		s.Clients = append([]AuthorizedClient(nil), s.Clients...)
		states[s.App] = &svcState{svc: s, sig: sig, address: s.Key.Address()}
	}
	m.mu.Lock()
	for app, st := range states {
		// Keep what is known of services that did not change.
		if old, ok := m.services[app]; ok && old.sig == st.sig && old.svc.Key.Equal(st.svc.Key) {
			st.added, st.uploadedAt, st.err = old.added, old.uploadedAt, old.err
		}
	}
	m.services, m.byID = states, byID
	m.gen++
	gen := m.gen
	m.mu.Unlock()
	select {
	case m.wake <- struct{}{}:
	default:
	}
	return m.waitApplied(ctx, gen)
}

func (m *Manager) waitApplied(ctx context.Context, gen uint64) error {
	for {
		m.mu.Lock()
		if m.applied >= gen {
			err := m.applyErr
			m.mu.Unlock()
			return err
		}
		if !m.conn.Connected && m.tried {
			err := m.unavailableLocked()
			m.mu.Unlock()
			return err
		}
		ch := m.changed
		m.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (m *Manager) unavailableLocked() error {
	if m.conn.LastError != "" {
		return fmt.Errorf("onion: %w: %s", ErrTorUnavailable, m.conn.LastError)
	}
	return fmt.Errorf("onion: %w", ErrTorUnavailable)
}

// Status reports every desired service by app.
func (m *Manager) Status() map[string]ServiceStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]ServiceStatus, len(m.services))
	for app, st := range m.services {
		out[app] = ServiceStatus{
			Address:    st.address,
			Added:      st.added,
			Uploaded:   !st.uploadedAt.IsZero(),
			UploadedAt: st.uploadedAt,
			Err:        st.err,
		}
	}
	return out
}

// Conn reports the control connection.
func (m *Manager) Conn() ConnStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.conn
}

// Changes receives a value (coalesced) after the connection comes up or goes down, after the
// desired set is applied, and when a descriptor is uploaded: read Status and Conn then.
func (m *Manager) Changes() <-chan struct{} { return m.notify }

// changedLocked wakes Set waiters and Changes readers.
func (m *Manager) changedLocked() {
	m.appliedLocked()
	select {
	case m.notify <- struct{}{}:
	default:
	}
}

// appliedLocked wakes Set waiters only: an apply that changed nothing anyone could see (every
// service already in tor as wanted) is no news for Changes readers, who would only recompute
// what they have (a box of 1000 apps: every reconcile pass's Set).
func (m *Manager) appliedLocked() {
	close(m.changed)
	m.changed = make(chan struct{})
}

// Backoff between connection attempts: fast at first, so services are back right after a
// tor restart, then slower during a long outage.
const (
	backoffMin       = 50 * time.Millisecond
	backoffFast      = 500 * time.Millisecond
	backoffSlow      = 2 * time.Second
	fastRetryOutage  = 30 * time.Second
	reconcileTimeout = 2 * time.Minute
)

// Run owns the control connection until ctx ends, and returns ctx's error. It never closes
// tor nor removes services when it stops. Only one Run may be active per Manager.
func (m *Manager) Run(ctx context.Context) error {
	if err := m.cfg.validate(); err != nil {
		return err
	}
	if !m.running.CompareAndSwap(false, true) {
		return errors.New("onion: manager already running")
	}
	defer m.running.Store(false)
	delay := backoffMin
	down := time.Now()
	first := true
	for {
		c, err := dialControl(ctx, m.cfg)
		if err == nil {
			delay = backoffMin
			err = m.session(ctx, c, !first)
			first = false
			c.close()
			down = time.Now()
		}
		if ctx.Err() != nil {
			m.setDown(nil)
			return ctx.Err()
		}
		m.setDown(err)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			m.setDown(nil)
			return ctx.Err()
		case <-t.C:
		}
		switch {
		case time.Since(down) > fastRetryOutage:
			delay = backoffSlow
		case delay*2 > backoffFast:
			delay = backoffFast
		default:
			delay *= 2
		}
	}
}

func (m *Manager) setDown(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	wasUp := m.conn.Connected
	m.tried = true
	if wasUp {
		m.conn.Connected = false
		m.conn.Since = time.Now()
	}
	if err != nil {
		m.conn.LastError = err.Error()
	}
	for _, st := range m.services {
		st.added = false
		st.uploadedAt = time.Time{}
	}
	if wasUp || err != nil {
		m.changedLocked()
	}
}

// session serves one connection until it fails or ctx ends.
func (m *Manager) session(ctx context.Context, c *ctlConn, reconnect bool) error {
	start := time.Now()
	onEvent := m.handleEvent
	replies, err := c.roundTrip(ctx, onEvent, "SETEVENTS HS_DESC STATUS_CLIENT", "GETINFO status/bootstrap-phase")
	if err != nil {
		return err
	}
	if err := replyError(replies[0]); err != nil {
		return err
	}
	progress := -1
	if replyError(replies[1]) == nil {
		progress = bootstrapProgress(strings.Join(append([]string{replies[1].Reply}, replies[1].Data...), " "))
	}
	m.mu.Lock()
	m.tried = true
	m.conn.Connected = true
	m.conn.Since = time.Now()
	m.conn.LastError = ""
	m.conn.Bootstrap = progress
	if reconnect {
		m.conn.Reconnects++
	}
	m.mu.Unlock()
	if err := m.reconcile(ctx, c); err != nil {
		return err
	}
	m.mu.Lock()
	m.conn.LastSync = time.Since(start)
	m.changedLocked()
	m.mu.Unlock()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-m.wake:
			if err := m.reconcile(ctx, c); err != nil {
				return err
			}
		case <-c.avail:
			// Events while idle. A sync reply here would be a protocol error.
			for {
				c.mu.Lock()
				if len(c.queue) == 0 {
					err := c.err
					c.mu.Unlock()
					if err != nil {
						return err
					}
					break
				}
				r := c.queue[0]
				c.queue = c.queue[1:]
				c.mu.Unlock()
				if !r.IsAsync() {
					return fmt.Errorf("tor: unexpected reply %d %s", r.Err.Code, r.Reply)
				}
				m.handleEvent(r)
			}
		}
	}
}

// handleEvent records HS_DESC UPLOADED and tor's bootstrap progress.
func (m *Manager) handleEvent(r *control.Response) {
	code, raw, _ := strings.Cut(r.Reply, " ")
	if len(r.Data) == 0 && code == string(control.EventCodeStatusClient) && strings.Contains(raw, " BOOTSTRAP ") {
		if p := bootstrapProgress(raw); p >= 0 {
			m.mu.Lock()
			if m.conn.Bootstrap != p {
				m.conn.Bootstrap = p
				m.changedLocked()
			}
			m.mu.Unlock()
		}
		return
	}
	if len(r.Data) > 0 || code != string(control.EventCodeHSDesc) {
		return
	}
	ev := control.ParseHSDescEvent(raw)
	if ev.Action != "UPLOADED" {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	app, ok := m.byID[ev.Address]
	if !ok {
		return
	}
	st := m.services[app]
	if st.added && st.uploadedAt.IsZero() {
		st.uploadedAt = time.Now()
		m.changedLocked()
	}
}

// bootstrapProgress reads PROGRESS=N of a bootstrap status line; -1 when there is none.
func bootstrapProgress(line string) int {
	for _, f := range strings.Fields(line) {
		if v, ok := strings.CutPrefix(f, "PROGRESS="); ok {
			if n, err := strconv.Atoi(v); err == nil && n >= 0 && n <= 100 {
				return n
			}
		}
	}
	return -1
}

// op is one planned control command.
type op struct {
	del bool
	id  string
	app string // for adds and for deletes of a desired service
	sig string
	cmd string
}

// Format prints the op without its command (an ADD_ONION holds the secret key).
func (o op) Format(f fmt.State, _ rune) {
	fmt.Fprintf(f, "onion.op(del=%t, %s, app=%s)", o.del, o.id, o.app)
}

// reconcile makes tor's detached services match the desired set: one GETINFO, then every
// DEL_ONION and ADD_ONION pipelined.
func (m *Manager) reconcile(ctx context.Context, c *ctlConn) error {
	ctx, cancel := context.WithTimeout(ctx, reconcileTimeout)
	defer cancel()
	replies, err := c.roundTrip(ctx, m.handleEvent, "GETINFO onions/detached")
	if err != nil {
		return err
	}
	detached, err := parseDetached(replies[0])
	if err != nil {
		return err
	}
	m.mu.Lock()
	gen := m.gen
	ops, found := m.planLocked(detached)
	m.mu.Unlock()

	cmds := make([]string, len(ops))
	for i, o := range ops {
		cmds[i] = o.cmd
	}
	var results []*control.Response
	if len(cmds) > 0 {
		if results, err = c.roundTrip(ctx, m.handleEvent, cmds...); err != nil {
			return err
		}
	}
	clear(cmds) // they hold secret keys

	m.mu.Lock()
	defer m.mu.Unlock()
	var errs []error
	for i, o := range ops {
		if e := m.recordLocked(o, results[i]); e != nil {
			errs = append(errs, e)
		}
	}
	news := len(ops) > 0 || found
	if gen > m.applied {
		news = news || (m.applyErr != nil) != (len(errs) > 0)
		m.applied = gen
		m.applyErr = errors.Join(errs...)
	}
	if news {
		m.changedLocked()
	} else {
		m.appliedLocked()
	}
	return nil
}

// planLocked compares tor's detached services with the desired set; found reports desired
// services it found in tor as wanted that were not known to be added.
func (m *Manager) planLocked(detached map[string]bool) (ops []op, found bool) {
	for id := range m.owned {
		if !detached[id] {
			delete(m.owned, id) // tor restarted or someone removed it
		}
	}
	var dels, adds []op
	for id := range detached {
		sig, ours := m.owned[id]
		app, wanted := m.byID[id]
		switch {
		case !wanted && (ours || m.cfg.Exclusive):
			dels = append(dels, op{del: true, id: id, cmd: "DEL_ONION " + id})
		case wanted && sig != m.services[app].sig:
			// Unknown ports or clients (added by an earlier daemon), or changed: re-add.
			dels = append(dels, op{del: true, id: id, app: app, cmd: "DEL_ONION " + id})
		case wanted:
			found = found || !m.services[app].added
			m.services[app].added = true
		}
	}
	for app, st := range m.services {
		id := st.svc.Key.ServiceID()
		if detached[id] && m.owned[id] == st.sig {
			continue
		}
		adds = append(adds, op{id: id, app: app, sig: st.sig, cmd: st.svc.addOnionCommand()})
	}
	return append(dels, adds...), found
}

// recordLocked applies the reply to one op and returns its error, if any.
func (m *Manager) recordLocked(o op, r *control.Response) error {
	st := m.services[o.app]
	if st != nil && st.svc.Key.ServiceID() != o.id {
		st = nil // the desired set changed meanwhile; the next pass sees it
	}
	if o.del {
		err := replyError(r)
		if err != nil && r.Err.Code != 552 { // 552: unknown service, already gone
			if st != nil {
				st.err = "remove: " + err.Error()
			}
			return fmt.Errorf("onion: remove %s: %w", o.id, err)
		}
		delete(m.owned, o.id)
		if st != nil {
			st.added, st.uploadedAt = false, time.Time{}
		}
		return nil
	}
	err := redactKeys(replyError(r))
	if err == nil && !hasServiceID(r, o.id) {
		err = errors.New("tor: ADD_ONION replied with another service ID")
	}
	if err != nil {
		if st != nil {
			st.added, st.uploadedAt, st.err = false, time.Time{}, "add: "+err.Error()
		}
		return fmt.Errorf("onion: add %q: %w", o.app, err)
	}
	m.owned[o.id] = o.sig
	if st != nil {
		st.added, st.uploadedAt, st.err = true, time.Time{}, ""
	}
	return nil
}

// redactKeys rewrites an error of tor's reply to an ADD_ONION so that it holds no key, should
// tor ever quote the command's key argument: every word holding "ED25519-V3:" loses what
// follows the prefix.
func redactKeys(err error) error {
	if err == nil || !strings.Contains(err.Error(), addOnionPrefix) {
		return err
	}
	words := strings.Fields(err.Error())
	for i, w := range words {
		if j := strings.Index(w, addOnionPrefix); j >= 0 {
			words[i] = w[:j+len(addOnionPrefix)] + "[redacted]"
		}
	}
	return errors.New(strings.Join(words, " "))
}

func hasServiceID(r *control.Response, id string) bool {
	for _, d := range r.Data {
		if d == "ServiceID="+id {
			return true
		}
	}
	return false
}
