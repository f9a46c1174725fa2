// Package udpbatch serves UDP in batches, the way the fast authoritative
// servers do. Listen binds a group of sockets to one address with
// SO_REUSEPORT, by default one per CPU the process may run on, and a
// classic BPF program makes the kernel hand each datagram to the socket of
// the CPU that processed it. Each socket is served by its own thread, bound
// to that CPU, blocked in recvmmsg(2): one system call takes up to Batch
// datagrams, a Handler answers each into a buffer of its own, and one
// sendmmsg(2) sends every answer back to where its request came from. A
// datagram is received, answered and sent on one CPU, with no allocation,
// no lock and no hand-off between threads.
//
// A group bound to a wildcard address ("[::]:53", "0.0.0.0:53") answers
// each datagram from the address it was sent to, as BIND, Knot and NSD do:
// on a host with several addresses (a static and a SLAAC one, a secondary
// IPv4) the kernel's choice of source may be another one, and the client
// (a connected socket, dig, a stub resolver) drops that answer. The
// sockets ask for the destination of each datagram (IPV6_RECVPKTINFO, which
// on a dual-stack socket covers IPv4 too as a mapped address; IP_PKTINFO on
// an IPv4 socket), recvmmsg writes it into a control buffer of the
// datagram's slot, and sendmmsg hands the same buffer back as the answer's
// source. A group bound to one address needs none of it and does none.
//
// golang.org/x/net's ipv4/ipv6 ReadBatch and WriteBatch make the same
// system calls but allocate a net.UDPAddr for every datagram and go
// through Go's network poller (a wake-up of the poller's thread, then of
// the reader's, per batch); here the kernel's socket addresses are handed
// back as they are and the reading thread is woken directly.
package udpbatch

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	// Batch is the most datagrams one system call receives or sends.
	Batch = 64
	// MaxRequest is the largest datagram read; a larger one is dropped.
	MaxRequest = 4096
	// MaxResponse is the size of the buffer each answer may be written to.
	MaxResponse = 4096
	// MaxSockets bounds the sockets of a group.
	MaxSockets = 256
	// ctrlSize is the room for the control messages of one datagram: one
	// IPV6_PKTINFO (40 bytes on 64-bit systems) or IP_PKTINFO (32), with
	// room to spare.
	ctrlSize = 64
)

// Handler answers datagrams. Answer returns the response to req: written
// into out (MaxResponse bytes), or req itself changed in place, or a buffer
// of the handler's own that stays untouched until the next call. nil sends
// nothing. req and out are the loop's, reused for the next batch. Each
// socket has its own Handler: Answer is never called concurrently.
type Handler interface {
	Answer(req, out []byte) []byte
}

// Group is a set of UDP sockets bound to one address.
type Group struct {
	addr    *net.UDPAddr
	fds     []int
	cpus    []int // the CPU each socket's thread is bound to; -1: none
	pktinfo bool  // bound to a wildcard address: answer from each datagram's destination
	closing atomic.Bool
	wg      sync.WaitGroup
	mu      sync.Mutex
	closed  bool
}

// Listen binds n sockets to addr ("host:port"; port 0 lets the kernel
// choose one for the whole group). n == 0 binds one per CPU of the
// process's affinity mask, steers each datagram to the socket of the CPU
// that processed it and binds each socket's thread to its CPU; any other n
// leaves the choice of socket to the kernel's hash of the sender.
func Listen(addr string, n int) (*Group, error) {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, err
	}
	ap := ua.AddrPort()
	ip := ap.Addr()
	if !ip.IsValid() { // ":53": every address, both families
		ip = netip.IPv6Unspecified()
	}
	ap = netip.AddrPortFrom(ip.Unmap(), ap.Port())
	cpus, steer := []int(nil), n == 0
	if steer {
		cpus = affinity()
		n = len(cpus)
	}
	if n < 1 || n > MaxSockets {
		return nil, fmt.Errorf("udpbatch: %d sockets: want 1 to %d", n, MaxSockets)
	}
	g := &Group{pktinfo: ap.Addr().IsUnspecified()}
	for i := 0; i < n; i++ {
		fd, err := bind(ap)
		if err != nil {
			g.closeFDs()
			return nil, err
		}
		g.fds = append(g.fds, fd)
		if i == 0 {
			sa, err := unix.Getsockname(fd)
			if err != nil {
				g.closeFDs()
				return nil, fmt.Errorf("udpbatch: %w", err)
			}
			g.addr = udpAddr(sa)
			ap = netip.AddrPortFrom(ap.Addr(), uint16(g.addr.Port))
		}
	}
	g.cpus = make([]int, n)
	for i := range g.cpus {
		g.cpus[i] = -1
	}
	if steer && n > 1 {
		if err := steerByCPU(g.fds[0], cpus); err == nil {
			copy(g.cpus, cpus)
		}
		// Without the program (an old kernel) the kernel's hash spreads
		// the datagrams and the threads float.
	}
	return g, nil
}

// affinity lists the CPUs the process may run on.
func affinity() []int {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return make([]int, runtime.NumCPU())
	}
	var cpus []int
	for c := 0; c < len(set)*64 && len(cpus) < MaxSockets; c++ {
		if set.IsSet(c) {
			cpus = append(cpus, c)
		}
	}
	if len(cpus) == 0 {
		cpus = []int{-1}
	}
	return cpus
}

// bind makes one blocking UDP socket of the group.
func bind(ap netip.AddrPort) (int, error) {
	family, sa := unix.AF_INET6, unix.Sockaddr(&unix.SockaddrInet6{Addr: ap.Addr().As16(), Port: int(ap.Port())})
	if ap.Addr().Is4() {
		family, sa = unix.AF_INET, &unix.SockaddrInet4{Addr: ap.Addr().As4(), Port: int(ap.Port())}
	}
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return -1, fmt.Errorf("udpbatch: socket: %w", err)
	}
	err = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	if err == nil && family == unix.AF_INET6 && ap.Addr().IsUnspecified() {
		err = unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 0)
	}
	if err == nil && ap.Addr().IsUnspecified() {
		// The destination of each datagram, to answer from it (see the
		// package doc); for IPv4 on this dual-stack socket, as a mapped
		// IPv6 address.
		if family == unix.AF_INET6 {
			err = unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1)
		} else {
			err = unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_PKTINFO, 1)
		}
	}
	if err == nil {
		err = unix.Bind(fd, sa)
	}
	if err != nil {
		_ = unix.Close(fd)
		return -1, fmt.Errorf("udpbatch: bind %s: %w", ap, err)
	}
	return fd, nil
}

func udpAddr(sa unix.Sockaddr) *net.UDPAddr {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port)))
	case *unix.SockaddrInet6:
		return net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.AddrFrom16(a.Addr), uint16(a.Port)))
	}
	return &net.UDPAddr{}
}

// steerByCPU attaches to the group (through its first socket) a program
// that picks, for a datagram processed on CPU cpus[i], socket i; on any
// other CPU, socket CPU mod n.
func steerByCPU(fd int, cpus []int) error {
	const (
		ld  = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS
		jeq = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
		ret = unix.BPF_RET | unix.BPF_K
		cpu = 0xfffff000 + 36 // SKF_AD_OFF + SKF_AD_CPU: the current CPU
	)
	prog := []unix.SockFilter{{Code: ld, K: cpu}}
	for i, c := range cpus {
		if c < 0 {
			return errors.New("udpbatch: unknown CPU")
		}
		// if A == c: return i (else fall through to the next test)
		prog = append(prog, unix.SockFilter{Code: jeq, K: uint32(c), Jt: 0, Jf: 1}, unix.SockFilter{Code: ret, K: uint32(i)})
	}
	prog = append(prog,
		unix.SockFilter{Code: unix.BPF_ALU | unix.BPF_MOD | unix.BPF_K, K: uint32(len(cpus))},
		unix.SockFilter{Code: unix.BPF_RET | unix.BPF_A},
	)
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	return unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_CBPF, &fprog)
}

// Addr is the address the group is bound to.
func (g *Group) Addr() *net.UDPAddr { return g.addr }

// Sockets is the number of sockets (and serving threads) of the group.
func (g *Group) Sockets() int { return len(g.fds) }

// Serve starts one thread per socket, each answering with its own Handler
// from newHandler, until Close.
func (g *Group) Serve(newHandler func() Handler) {
	for i, fd := range g.fds {
		h := newHandler()
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			g.serve(fd, g.cpus[i], g.pktinfo, h)
		}()
	}
}

// Close stops the threads (a shutdown wakes each one from recvmmsg),
// waits for them and closes the sockets. It is idempotent.
func (g *Group) Close() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return nil
	}
	g.closed = true
	g.closing.Store(true)
	for _, fd := range g.fds {
		_ = unix.Shutdown(fd, unix.SHUT_RDWR)
	}
	g.wg.Wait()
	g.closeFDs()
	return nil
}

func (g *Group) closeFDs() {
	for _, fd := range g.fds {
		_ = unix.Close(fd)
	}
	g.fds = nil
}

// mmsghdr is struct mmsghdr of <sys/socket.h>.
type mmsghdr struct {
	hdr unix.Msghdr
	len uint32
}

// loop is the state of one socket's thread: the buffers and message
// headers the system calls read and write, made once.
type loop struct {
	fd    uintptr
	h     Handler
	recv  [Batch]mmsghdr
	send  [Batch]mmsghdr
	riov  [Batch]unix.Iovec
	siov  [Batch]unix.Iovec
	names [Batch]unix.RawSockaddrInet6 // large enough for IPv4 too
	// ctrl holds the control messages received with each datagram (its
	// destination address), handed back to sendmmsg with its answer;
	// uint64 words for the alignment of struct cmsghdr.
	ctrl    [Batch][ctrlSize / 8]uint64
	pktinfo bool          // the socket delivers each datagram's destination
	keep    [Batch][]byte // the answers being sent
	req     [Batch][MaxRequest]byte
	out     [Batch][MaxResponse]byte

	received, toSend int
}

// serve runs the loop of one socket on a thread of its own, bound to cpu.
// The thread ends with the goroutine (it is never unlocked), so its CPU
// binding never reaches other goroutines.
func (g *Group) serve(fd, cpu int, pktinfo bool, h Handler) {
	runtime.LockOSThread()
	if cpu >= 0 {
		var set unix.CPUSet
		set.Set(cpu)
		_ = unix.SchedSetaffinity(0, &set)
	}
	l := &loop{fd: uintptr(fd), h: h, pktinfo: pktinfo}
	l.init()
	for !g.closing.Load() {
		if err := l.recvmmsg(); err != nil {
			if !errors.Is(err, unix.EINTR) && !errors.Is(err, unix.ECONNREFUSED) {
				time.Sleep(time.Millisecond) // ENOMEM and the like: do not spin
			}
			continue
		}
		if l.received == 0 {
			continue // shut down: the loop condition ends it
		}
		l.answer()
		l.sendmmsg()
	}
}

func (l *loop) init() {
	for i := range l.recv {
		l.riov[i].Base = &l.req[i][0]
		l.riov[i].SetLen(MaxRequest)
		l.recv[i].hdr.Iov = &l.riov[i]
		l.recv[i].hdr.SetIovlen(1)
		l.recv[i].hdr.Name = (*byte)(unsafe.Pointer(&l.names[i]))
		if l.pktinfo {
			l.recv[i].hdr.Control = (*byte)(unsafe.Pointer(&l.ctrl[i]))
		}
		l.send[i].hdr.SetIovlen(1)
	}
}

// recvmmsg blocks until at least one datagram arrives, then takes what
// has arrived, up to Batch.
func (l *loop) recvmmsg() error {
	for i := range l.recv {
		l.recv[i].hdr.Namelen = unix.SizeofSockaddrInet6
		l.recv[i].hdr.Flags = 0
		if l.pktinfo {
			l.recv[i].hdr.SetControllen(ctrlSize)
		}
	}
	n, _, e := unix.Syscall6(unix.SYS_RECVMMSG, l.fd, uintptr(unsafe.Pointer(&l.recv[0])), Batch, unix.MSG_WAITFORONE, 0, 0)
	l.received = 0
	if e != 0 {
		return e
	}
	l.received = int(n)
	return nil
}

// answer runs the handler on each datagram received and lines up the
// answers to send.
func (l *loop) answer() {
	l.toSend = 0
	for i := 0; i < l.received; i++ {
		m := &l.recv[i]
		if m.hdr.Flags&unix.MSG_TRUNC != 0 {
			continue
		}
		resp := l.h.Answer(l.req[i][:m.len], l.out[i][:])
		if len(resp) == 0 {
			continue
		}
		j := l.toSend
		l.keep[j] = resp
		l.siov[j].Base = &resp[0]
		l.siov[j].SetLen(len(resp))
		s := &l.send[j]
		s.hdr.Iov = &l.siov[j]
		s.hdr.Name = m.hdr.Name
		s.hdr.Namelen = m.hdr.Namelen
		s.hdr.Control, s.hdr.Controllen = nil, 0
		if l.pktinfo {
			ctrl, n := l.source(i)
			s.hdr.Control = ctrl
			s.hdr.SetControllen(n)
		}
		l.toSend++
	}
}

// source finds, among the control messages received with datagram i, the
// address the datagram was sent to (IPV6_PKTINFO, IP_PKTINFO) and returns
// that message (in place, n bytes) for sendmmsg: the answer then leaves
// from that address. The interface index in it is cleared: the kernel then
// routes the answer by its destination as usual (a link-local destination
// carries its interface as the scope of its address), and, for IPv4, takes
// the address as the source rather than the interface's primary address
// (ip(7)). Without such a message (none was received) it returns nil: the
// kernel picks the source.
func (l *loop) source(i int) (ctrl *byte, n int) {
	m := &l.recv[i].hdr
	if m.Flags&unix.MSG_CTRUNC != 0 {
		return nil, 0
	}
	buf := (*[ctrlSize]byte)(unsafe.Pointer(&l.ctrl[i]))
	end := min(int(m.Controllen), ctrlSize)
	for off := 0; off+unix.SizeofCmsghdr <= end; {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&buf[off]))
		hl := int(h.Len)
		if hl < unix.SizeofCmsghdr || off+hl > end {
			break
		}
		switch {
		case h.Level == unix.IPPROTO_IPV6 && h.Type == unix.IPV6_PKTINFO && hl >= unix.CmsgLen(unix.SizeofInet6Pktinfo):
			(*unix.Inet6Pktinfo)(unsafe.Pointer(&buf[off+unix.CmsgLen(0)])).Ifindex = 0
			return &buf[off], hl
		case h.Level == unix.IPPROTO_IP && h.Type == unix.IP_PKTINFO && hl >= unix.CmsgLen(unix.SizeofInet4Pktinfo):
			// Spec_dst, the source to use, is the local address the
			// datagram came to (for a broadcast one, the interface's).
			(*unix.Inet4Pktinfo)(unsafe.Pointer(&buf[off+unix.CmsgLen(0)])).Ifindex = 0
			return &buf[off], hl
		}
		off += unix.CmsgSpace(hl - unix.SizeofCmsghdr)
	}
	return nil, 0
}

// sendmmsg sends the answers, blocking while the socket's buffer is full.
// An answer that cannot be sent (its address, an ICMP error) is skipped.
func (l *loop) sendmmsg() {
	for sent := 0; sent < l.toSend; {
		n, _, e := unix.Syscall6(unix.SYS_SENDMMSG, l.fd, uintptr(unsafe.Pointer(&l.send[sent])), uintptr(l.toSend-sent), 0, 0, 0)
		switch {
		case e == unix.EINTR:
		case e == unix.EPIPE:
			return // shut down
		case e != 0:
			sent++
		default:
			sent += int(n)
		}
	}
}
