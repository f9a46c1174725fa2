package dns

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	mdns "github.com/miekg/dns"
)

// notifier sends NOTIFY (RFC 1996) to the secondaries after each change,
// signed with their key, retrying a few times until they acknowledge.
// Before its first NOTIFY to a secondary it asks for the secondary's serial
// and lets the server move past it (raise): a secondary ignores a NOTIFY
// whose serial is not ahead of its own.
type notifier struct {
	zone        string
	secondaries []secondary
	wake        chan struct{}
	raise       func(theirs uint32)

	mu     sync.Mutex
	state  []SecondaryStatus
	probed []bool // the secondary's serial was asked for
}

const (
	notifyTimeout  = 2 * time.Second
	notifyAttempts = 5
	notifyFirstGap = 2 * time.Second
)

func newNotifier(setup *serverSetup, raise func(theirs uint32)) *notifier {
	n := &notifier{zone: setup.zone.zone, secondaries: setup.secondaries, wake: make(chan struct{}, 1),
		raise: raise, probed: make([]bool, len(setup.secondaries))}
	for _, sec := range setup.secondaries {
		n.state = append(n.state, SecondaryStatus{Addr: sec.addr, Key: sec.key.name})
	}
	return n
}

func (n *notifier) kick() {
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

func (n *notifier) status() []SecondaryStatus {
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.state) == 0 {
		return nil
	}
	return append([]SecondaryStatus(nil), n.state...)
}

func (n *notifier) run(ctx context.Context, current func() *snapshot) {
	if len(n.secondaries) == 0 {
		return
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-n.wake:
		}
		n.notifyAll(ctx, current)
	}
}

// notifyAll notifies every secondary that has not acknowledged the current
// serial, with growing pauses, until all did, the attempts run out, or a new
// change arrives (which starts over with the new serial).
func (n *notifier) notifyAll(ctx context.Context, current func() *snapshot) {
	gap := notifyFirstGap
	for attempt := 0; attempt < notifyAttempts; attempt++ {
		n.probe(ctx)
		snap := current()
		left := 0
		for i, sec := range n.secondaries {
			n.mu.Lock()
			done := n.state[i].Notified == snap.serial && n.state[i].LastError == ""
			n.mu.Unlock()
			if done {
				continue
			}
			err := sendNotify(ctx, n.zone, snap.soa, sec)
			n.mu.Lock()
			if err != nil {
				n.state[i].LastError = err.Error()
				left++
			} else {
				n.state[i].Notified, n.state[i].LastError = snap.serial, ""
			}
			n.mu.Unlock()
		}
		if left == 0 {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-n.wake:
			gap, attempt = notifyFirstGap, -1
		case <-time.After(gap):
			gap *= 2
		}
	}
}

// probe asks each secondary not asked yet for its serial and lets the
// server move past it. A secondary that does not answer is asked again on
// the next round; one that answers without the zone has nothing to hold us back.
func (n *notifier) probe(ctx context.Context) {
	for i, sec := range n.secondaries {
		n.mu.Lock()
		done := n.probed[i]
		n.mu.Unlock()
		if done {
			continue
		}
		theirs, has, err := querySerial(ctx, n.zone, sec)
		if err != nil {
			continue
		}
		if has && n.raise != nil {
			n.raise(theirs)
		}
		n.mu.Lock()
		n.probed[i] = true
		n.mu.Unlock()
	}
}

// querySerial asks a secondary for its SOA serial of the zone (signed with
// its key). has is false when it answers without the zone.
func querySerial(ctx context.Context, zone string, sec secondary) (serial uint32, has bool, err error) {
	m := new(mdns.Msg)
	m.SetQuestion(zone, mdns.TypeSOA)
	m.RecursionDesired = false
	m.SetTsig(sec.key.name, sec.key.algorithm, 300, time.Now().Unix())
	c := &mdns.Client{Net: "udp", Timeout: notifyTimeout, TsigSecret: map[string]string{sec.key.name: sec.key.secret}}
	ctx, cancel := context.WithTimeout(ctx, notifyTimeout)
	defer cancel()
	r, _, err := c.ExchangeContext(ctx, m, sec.addr)
	if err == nil && (r == nil || r.IsTsig() == nil) {
		err = errors.New("no signed answer") // a forged serial could stall the secondary
	}
	if err != nil {
		return 0, false, fmt.Errorf("dns: SOA of %s at %s: %w", zone, sec.addr, err)
	}
	for _, rr := range r.Answer {
		if soa, ok := rr.(*mdns.SOA); ok && r.Rcode == mdns.RcodeSuccess && mdns.CanonicalName(soa.Hdr.Name) == zone {
			return soa.Serial, true, nil
		}
	}
	return 0, false, nil
}

func sendNotify(ctx context.Context, zone string, soa *mdns.SOA, sec secondary) error {
	m := new(mdns.Msg)
	m.SetNotify(zone)
	m.Answer = []mdns.RR{soa}
	m.SetTsig(sec.key.name, sec.key.algorithm, 300, time.Now().Unix())
	c := &mdns.Client{Net: "udp", Timeout: notifyTimeout, TsigSecret: map[string]string{sec.key.name: sec.key.secret}}
	ctx, cancel := context.WithTimeout(ctx, notifyTimeout)
	defer cancel()
	r, _, err := c.ExchangeContext(ctx, m, sec.addr)
	if r != nil && r.Rcode != mdns.RcodeSuccess {
		return fmt.Errorf("dns: notify %s: %s", sec.addr, rcodeName(r))
	}
	if err != nil {
		return fmt.Errorf("dns: notify %s: %w", sec.addr, err)
	}
	return nil
}

// rcodeName names the response code, with the TSIG error if there is one.
func rcodeName(r *mdns.Msg) string {
	s := mdns.RcodeToString[r.Rcode]
	if s == "" {
		s = fmt.Sprintf("RCODE%d", r.Rcode)
	}
	if t := r.IsTsig(); t != nil && t.Error != 0 {
		e := mdns.RcodeToString[int(t.Error)]
		if e == "" {
			e = fmt.Sprintf("%d", t.Error)
		}
		s += " (TSIG error " + e + ")"
	}
	return s
}
