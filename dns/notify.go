package dns

import (
	"context"
	"fmt"
	"sync"
	"time"

	mdns "github.com/miekg/dns"
)

// notifier sends NOTIFY (RFC 1996) to the secondaries after each change,
// signed with their key, retrying a few times until they acknowledge.
type notifier struct {
	zone        string
	secondaries []secondary
	wake        chan struct{}

	mu    sync.Mutex
	state []SecondaryStatus
}

const (
	notifyTimeout  = 2 * time.Second
	notifyAttempts = 5
	notifyFirstGap = 2 * time.Second
)

func newNotifier(setup *serverSetup) *notifier {
	n := &notifier{zone: setup.zone.zone, secondaries: setup.secondaries, wake: make(chan struct{}, 1)}
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
