package dns

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/onionpod/onionpod/internal/errkind"
)

// RFC2136Config configures the dynamic-update publisher.
type RFC2136Config struct {
	// Server is the primary that takes updates: "host:port" or "host" (53).
	Server string
	// Zone to update, e.g. "box.example".
	Zone string
	// TSIG signs every update (required).
	TSIG TSIGKey
	// LedgerPath is the file of what onionpod published (0600, its
	// directory 0700, written atomically).
	LedgerPath string
	// TTL of the published records (default 60s).
	TTL time.Duration
	// Timeout of one update exchange (default 5s).
	Timeout time.Duration
	// RetryMax is the longest pause between retries of a pending update
	// (default 1m; the first retry comes after at most 1s).
	RetryMax time.Duration
	// OnError, when set, hears of failures of Run's background retries:
	// once when updates start failing, and once when the server rejects
	// them for good. Set reports its own failures by its return value.
	OnError func(error)
}

// RFC2136 publishes records to an existing primary by dynamic update
// (RFC 2136) signed with TSIG. Set records the wish in the ledger and tries
// at once; Run retries what could not be applied.
type RFC2136 struct {
	server, zone, ledgerPath string
	key                      tsigKey
	ttl                      uint32
	timeout                  time.Duration
	retryMin, retryMax       time.Duration
	onError                  func(error)

	lock chan struct{} // held while the ledger is changed or an update runs
	wake chan struct{}

	damaged error // a damaged ledger found by NewRFC2136

	updatesOK, updatesFailed atomic.Uint64 // exchanges answered with success, or not

	mu       sync.Mutex // guards the fields below
	led      ledger
	lastErr  error
	rejected bool // the server refused led.Desired for good
}

// NewRFC2136 validates the configuration and loads the ledger. A ledger of
// another zone is refused (its records could not be removed from here):
// give each zone its own LedgerPath. A damaged ledger does not stop it: the
// file is moved aside, Damaged and Status report it, and the publisher
// recovers from the ledger's copy (LEDGER.copy, one save behind at most):
// the next update replaces the address records of every name the copy
// holds, so nothing published before stays behind. With no usable copy it
// replaces the names still readable in the damaged files and the names of
// the next Set; records published before under other names then stay
// until removed by hand (Status.Damaged says so).
func NewRFC2136(cfg RFC2136Config) (*RFC2136, error) {
	zone, err := canonicalZone(cfg.Zone)
	if err != nil {
		return nil, err
	}
	if cfg.Server == "" {
		return nil, errkind.BadInputf("dns: rfc2136: no server")
	}
	server, err := withDefaultPort(cfg.Server)
	if err != nil {
		return nil, err
	}
	key, err := cfg.TSIG.resolve()
	if err != nil {
		return nil, fmt.Errorf("dns: rfc2136: %w", err)
	}
	if cfg.LedgerPath == "" {
		return nil, errkind.BadInputf("dns: rfc2136: no ledger path")
	}
	ttl := cfg.TTL
	if ttl == 0 {
		ttl = defaultTTL
	}
	if ttl < time.Second || ttl > 7*24*time.Hour {
		return nil, errkind.BadInputf("dns: rfc2136: TTL %s: want 1s to 168h", ttl)
	}
	p := &RFC2136{
		server: server, zone: zone, ledgerPath: cfg.LedgerPath, key: key,
		ttl: uint32(ttl / time.Second), timeout: cfg.Timeout,
		retryMax: cfg.RetryMax, onError: cfg.OnError,
		lock: make(chan struct{}, 1), wake: make(chan struct{}, 1),
	}
	if p.timeout <= 0 {
		p.timeout = 5 * time.Second
	}
	if p.retryMax <= 0 {
		p.retryMax = time.Minute
	}
	p.retryMin = min(time.Second, p.retryMax)
	l, damaged, err := loadLedger(cfg.LedgerPath, zone, time.Now())
	if err != nil {
		return nil, err
	}
	if l != nil {
		if l.Zone != zone {
			return nil, errkind.BadInputf("dns: rfc2136: ledger %s belongs to zone %s, not %s", cfg.LedgerPath, l.Zone, zone)
		}
		p.led = *l
	}
	p.damaged = damaged
	p.led.Zone, p.led.Server = zone, server
	return p, nil
}

// Zone is the canonical zone name.
func (p *RFC2136) Zone() string { return p.zone }

func (p *RFC2136) acquire(ctx context.Context) error {
	select {
	case p.lock <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (p *RFC2136) release() { <-p.lock }

func (p *RFC2136) kick() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// Set makes the zone hold exactly these onionpod records: it writes them to
// the ledger as the desired set, then sends one update (delete what was
// published and is no longer wanted, add what is wanted). It returns nil
// once the server applied it; an error wrapping ErrPending when the server
// could not be reached or failed (Run retries, nothing is lost); an error
// wrapping ErrRejected when the server refused the update for good (TSIG or
// permission): that is not retried until Set gets a different set.
func (p *RFC2136) Set(ctx context.Context, records []Record) error {
	recs, err := normalizeRecords(p.zone, records)
	if err != nil {
		return err
	}
	if err := p.acquire(ctx); err != nil {
		return err
	}
	defer p.release()
	p.mu.Lock()
	same := p.led.DesiredSet && recordsEqual(p.led.Desired, recs)
	if same && p.rejected {
		err := p.lastErr
		p.mu.Unlock()
		return err
	}
	if !same {
		old := p.led
		p.led.Desired, p.led.DesiredSet = recs, true
		if err := p.led.save(p.ledgerPath); err != nil {
			p.led = old
			p.mu.Unlock()
			return err
		}
		p.rejected = false
	}
	p.mu.Unlock()
	err = p.apply(ctx)
	if errors.Is(err, ErrPending) {
		p.kick()
	}
	return err
}

// Run retries pending updates with growing pauses (up to RetryMax) until
// ctx ends, and applies at once what an earlier run left pending in the
// ledger. Run one per publisher.
func (p *RFC2136) Run(ctx context.Context) error {
	delay := time.Duration(0)
	failing := false
	for {
		if !p.retryable() {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-p.wake:
				delay = max(delay, p.retryMin)
				continue
			}
		}
		if delay > 0 {
			t := time.NewTimer(jitter(delay))
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-t.C:
			}
		}
		err := p.acquire(ctx)
		if err == nil {
			if !p.retryable() { // Set got there first
				p.release()
				continue
			}
			err = p.apply(ctx)
			p.release()
		}
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case err == nil:
			delay, failing = 0, false
		case errors.Is(err, ErrRejected):
			delay, failing = 0, false
			p.report(err)
		default:
			if !failing {
				p.report(err)
				failing = true
			}
			delay = min(max(2*delay, p.retryMin), p.retryMax)
		}
	}
}

func (p *RFC2136) report(err error) {
	if p.onError != nil {
		p.onError(err)
	}
}

func jitter(d time.Duration) time.Duration {
	return d - time.Duration(rand.Int64N(int64(d)/5+1))
}

func (p *RFC2136) retryable() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.led.pending(p.ttl) && !p.rejected
}

// apply sends the update that takes the zone from Published to Desired.
// The caller holds p.lock.
func (p *RFC2136) apply(ctx context.Context) error {
	p.mu.Lock()
	if !p.led.pending(p.ttl) || p.rejected {
		err := p.lastErr
		if !p.rejected {
			err = nil
		}
		p.mu.Unlock()
		return err
	}
	desired := cloneRecords(p.led.Desired)
	deletes := minus(p.led.Published, desired)
	replace := p.led.replaceNames()
	p.mu.Unlock()

	err := p.exchange(ctx, replace, deletes, desired)

	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil {
		p.lastErr = err
		p.rejected = errors.Is(err, ErrRejected)
		return err
	}
	unknown, replaceWas := p.led.Unknown, p.led.Replace
	p.led.Published, p.led.TTL = desired, p.ttl
	p.led.Unknown, p.led.Replace = false, nil
	if err := p.led.save(p.ledgerPath); err != nil {
		// Applied but not recorded: the next attempt repeats the
		// (idempotent) update.
		p.led.Published = nil
		p.led.Unknown, p.led.Replace = unknown, replaceWas
		p.lastErr = err
		return err
	}
	p.lastErr = nil
	return nil
}

// exchange sends one signed UPDATE: delete the A and AAAA records of the
// names to replace, delete the given records, add (or refresh) every
// desired one. All are idempotent, so a repeat after a lost answer does no
// harm; the server applies them in this order (RFC 2136 3.4.2). Each
// exchange counts in UpdateCounts.
func (p *RFC2136) exchange(ctx context.Context, replace []string, deletes, adds []Record) (err error) {
	defer func() {
		if err == nil {
			p.updatesOK.Add(1)
		} else {
			p.updatesFailed.Add(1)
		}
	}()
	m := new(mdns.Msg)
	m.SetUpdate(p.zone)
	var rrsets, del, add []mdns.RR
	for _, n := range replace {
		for _, t := range []uint16{mdns.TypeA, mdns.TypeAAAA} {
			rrsets = append(rrsets, &mdns.ANY{Hdr: mdns.RR_Header{Name: n, Rrtype: t}})
		}
	}
	if len(rrsets) > 0 {
		m.RemoveRRset(rrsets)
	}
	for _, r := range deletes {
		del = append(del, recordRR(r, 0))
	}
	for _, r := range adds {
		add = append(add, recordRR(r, p.ttl))
	}
	if len(del) > 0 {
		m.Remove(del)
	}
	if len(add) > 0 {
		m.Insert(add)
	}
	m.SetTsig(p.key.name, p.key.algorithm, 300, time.Now().Unix())
	c := &mdns.Client{Net: "tcp", Timeout: p.timeout, TsigSecret: map[string]string{p.key.name: p.key.secret}}
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	var r *mdns.Msg
	r, _, err = c.ExchangeContext(ctx, m, p.server)
	what := fmt.Sprintf("dns: rfc2136 update of %s at %s", p.zone, p.server)
	if r != nil {
		if t := r.IsTsig(); t != nil && t.Error != 0 {
			return fmt.Errorf("%s: %w: %s: check the %s and the server's key", what, ErrRejected, rcodeName(r), TSIGKey{Name: p.key.name, Algorithm: p.key.algorithm})
		}
		switch r.Rcode {
		case mdns.RcodeSuccess:
			if err != nil {
				return fmt.Errorf("%s: %w: answer's signature does not verify: %w", what, ErrRejected, err)
			}
			return nil
		case mdns.RcodeServerFailure:
			return fmt.Errorf("%s: %w: server answered %s", what, ErrPending, rcodeName(r))
		case mdns.RcodeNotAuth, mdns.RcodeRefused:
			return fmt.Errorf("%s: %w: %s: the server does not let %s update this zone", what, ErrRejected, rcodeName(r), TSIGKey{Name: p.key.name, Algorithm: p.key.algorithm})
		default:
			return fmt.Errorf("%s: %w: %s", what, ErrRejected, rcodeName(r))
		}
	}
	if err == nil {
		err = errors.New("no answer")
	}
	return fmt.Errorf("%s: %w: %w", what, ErrPending, err)
}

// UpdateCounts are the UPDATE messages sent since the publisher was made:
// ok, those the server applied (NOERROR, with a valid signature); failed,
// the others (refused, a TSIG error, a server failure, no answer).
func (p *RFC2136) UpdateCounts() (ok, failed uint64) {
	return p.updatesOK.Load(), p.updatesFailed.Load()
}

// Damaged is the error that describes a damaged ledger found by
// NewRFC2136 (wrapping ErrDamaged), for the log; nil when there was none.
func (p *RFC2136) Damaged() error { return p.damaged }

// Published returns the records the server acknowledged.
func (p *RFC2136) Published() []Record {
	p.mu.Lock()
	defer p.mu.Unlock()
	return cloneRecords(p.led.Published)
}

// Status tells what is published where, and whether an update is pending
// or was rejected.
func (p *RFC2136) Status() Status {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := Status{
		Mode:      ModeRFC2136,
		Zone:      p.zone,
		Servers:   []string{p.server},
		Published: cloneRecords(p.led.Published),
		Desired:   cloneRecords(p.led.Desired),
		Pending:   p.led.pending(p.ttl) && !p.rejected,
		Rejected:  p.rejected,
	}
	if !p.led.DesiredSet {
		st.Desired = cloneRecords(p.led.Published)
	}
	if p.lastErr != nil {
		st.LastError = p.lastErr.Error()
	}
	if p.damaged != nil {
		st.Damaged = p.damaged.Error()
	}
	return st
}
