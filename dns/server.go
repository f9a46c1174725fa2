package dns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/onionpod/onionpod/dns/internal/udpbatch"
)

// Server is the built-in authoritative server for one zone.
type Server struct {
	setup *serverSetup
	snap  atomic.Pointer[snapshot]

	mu      sync.Mutex // serializes Set, Start and Close
	started bool
	closed  bool
	apex    string // fingerprint saved with the state

	udp     []*udpbatch.Group
	tcpLs   []net.Listener
	tcp     *tcpConns
	workers sync.Pool // *tcpWorker for TCP connections
	cancel  context.CancelFunc
	wg      sync.WaitGroup

	notify  *notifier
	damaged error // a damaged state file found by NewServer
	counts  queryCounts
}

// NewServer validates the configuration and loads the kept state (records
// and serial). It opens no socket: see Start. A damaged state file does not
// stop it: the file is moved aside, Damaged and Status report it, and the
// server starts with no records (the next Set publishes them again) and a
// serial past the one it served last.
func NewServer(cfg ServerConfig) (*Server, error) {
	setup, err := cfg.setup()
	if err != nil {
		return nil, err
	}
	s := &Server{setup: setup, apex: setup.zone.fingerprint(), tcp: newTCPConns(setup.secondaries)}
	s.workers.New = func() any { return new(tcpWorker) }
	init, err := s.initialState(time.Now())
	if err != nil {
		return nil, err
	}
	s.damaged = init.damaged
	snap, err := buildSnapshot(&setup.zone, init.serial, init.records, nil)
	if err != nil {
		return nil, err
	}
	if init.save {
		if err := s.saveState(snap); err != nil {
			return nil, err
		}
	}
	s.snap.Store(snap)
	s.notify = newNotifier(setup, s.raiseSerial)
	return s, nil
}

// Damaged is the error that describes a damaged state file found by
// NewServer (wrapping ErrDamaged), for the log; nil when there was none.
func (s *Server) Damaged() error { return s.damaged }

// raiseSerial moves the served serial past a secondary's when the
// secondary's is ahead (it holds a zone this server served before its state
// was lost or restored from an older copy) or, after a damaged state file,
// equal: otherwise the secondary would never take a transfer again. The
// records stay as they are.
func (s *Server) raiseSerial(theirs uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.snap.Load()
	if s.closed || serialGreater(cur.serial, theirs) || (cur.serial == theirs && s.damaged == nil) {
		return
	}
	snap, err := buildSnapshot(&s.setup.zone, nextSerial(theirs, time.Now()), cur.records, cur)
	if err != nil || s.saveState(snap) != nil {
		return // the next Set tries again with the next serial
	}
	s.snap.Store(snap)
}

// Zone is the canonical zone apex, e.g. "box.example.".
func (s *Server) Zone() string { return s.setup.zone.zone }

// Set makes the zone hold exactly these records (in addition to the SOA,
// the NS records and their glue). An unchanged set changes nothing; any
// change bumps the serial, is saved in StateDir before it is served, and
// sends a NOTIFY to the secondaries. Set with no records removes them all.
func (s *Server) Set(ctx context.Context, records []Record) error {
	recs, err := normalizeRecords(s.setup.zone.zone, records)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("dns: set: %w", ErrClosed)
	}
	cur := s.snap.Load()
	if recordsEqual(cur.records, recs) {
		return nil
	}
	snap, err := buildSnapshot(&s.setup.zone, nextSerial(cur.serial, time.Now()), recs, cur)
	if err != nil {
		return err
	}
	if err := s.saveState(snap); err != nil {
		return err
	}
	s.snap.Store(snap)
	if s.started {
		s.notify.kick()
	}
	return nil
}

// Records returns the onionpod records the zone holds, sorted.
func (s *Server) Records() []Record { return cloneRecords(s.snap.Load().records) }

// Serial is the SOA serial now served.
func (s *Server) Serial() uint32 { return s.snap.Load().serial }

// Start opens the UDP and TCP sockets and serves until Close. The context
// bounds only the start itself.
func (s *Server) Start(ctx context.Context) (err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("dns: start: %w", ErrClosed)
	}
	if s.started {
		return errors.New("dns: start: already started")
	}
	defer func() {
		if err != nil {
			s.closeSockets()
		}
	}()
	for _, addr := range s.setup.listen {
		if err := s.listen(ctx, addr); err != nil {
			return err
		}
	}
	runCtx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	for _, g := range s.udp {
		s.serveUDP(g)
	}
	for _, l := range s.tcpLs {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serveTCP(runCtx, l)
		}()
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.notify.run(runCtx, func() *snapshot { return s.snap.Load() })
	}()
	s.started = true
	s.notify.kick()
	return nil
}

// Addrs are the addresses actually bound: one UDP address per listen
// address (the first socket of its group) and one TCP address.
func (s *Server) Addrs() []net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []net.Addr
	seen := map[string]bool{}
	for _, g := range s.udp {
		a := g.Addr()
		if !seen[a.String()] {
			seen[a.String()] = true
			out = append(out, a)
		}
	}
	for _, l := range s.tcpLs {
		out = append(out, l.Addr())
	}
	return out
}

// Close stops serving and waits for the readers to end. It is idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	if s.cancel != nil {
		s.cancel()
	}
	s.closeSockets()
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

func (s *Server) closeSockets() {
	for _, g := range s.udp {
		_ = g.Close()
	}
	for _, l := range s.tcpLs {
		_ = l.Close()
	}
	s.tcp.closeAll()
}

// Status tells what is published and where.
func (s *Server) Status() Status {
	snap := s.snap.Load()
	st := Status{
		Mode:      ModeBuiltin,
		Zone:      s.setup.zone.zone,
		Serial:    snap.serial,
		Published: cloneRecords(snap.records),
		Desired:   cloneRecords(snap.records),
	}
	if s.damaged != nil {
		st.Damaged = s.damaged.Error()
	}
	for _, a := range s.Addrs() {
		st.Servers = append(st.Servers, a.Network()+"/"+a.String())
	}
	if len(st.Servers) == 0 {
		st.Servers = slices.Clone(s.setup.listen)
	}
	st.Secondaries = s.notify.status()
	return st
}
