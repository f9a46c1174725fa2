// Package udpbatch serves a UDP socket in batches: one recvmmsg(2) takes up
// to Batch datagrams, a Handler answers each one into a buffer of its own,
// and one sendmmsg(2) sends all the answers back to where their requests
// came from. Nothing is allocated per datagram and no lock is taken: each
// socket (one per core, bound with SO_REUSEPORT) has its own Serve loop.
//
// golang.org/x/net's ipv4/ipv6 ReadBatch and WriteBatch make the same
// system calls but allocate a net.UDPAddr for every datagram; this package
// keeps the kernel's socket addresses as they are and hands them back.
package udpbatch

import (
	"errors"
	"net"
	"syscall"
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
)

// Handler answers datagrams. Answer returns the response to req: written
// into out (MaxResponse bytes), or req itself changed in place, or a buffer
// of the handler's own that stays untouched until the next call. nil sends
// nothing. req and out are the loop's, reused for the next batch.
type Handler interface {
	Answer(req, out []byte) []byte
}

// mmsghdr is struct mmsghdr of <sys/socket.h>.
type mmsghdr struct {
	hdr unix.Msghdr
	len uint32
}

// loop is the state of one Serve: the buffers and message headers the
// system calls read and write, made once.
type loop struct {
	rc    syscall.RawConn
	h     Handler
	recv  [Batch]mmsghdr
	send  [Batch]mmsghdr
	riov  [Batch]unix.Iovec
	siov  [Batch]unix.Iovec
	names [Batch]unix.RawSockaddrInet6 // large enough for IPv4 too
	keep  [Batch][]byte                // the answers being sent
	req   [Batch][MaxRequest]byte
	out   [Batch][MaxResponse]byte

	received, toSend, sent int
	errno                  syscall.Errno
	readFn, writeFn        func(fd uintptr) bool
}

// Serve answers the datagrams that arrive on c until c is closed, which
// ends it with nil.
func Serve(c *net.UDPConn, h Handler) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	l := &loop{rc: rc, h: h}
	for i := range l.recv {
		l.riov[i].Base = &l.req[i][0]
		l.riov[i].SetLen(MaxRequest)
		l.recv[i].hdr.Iov = &l.riov[i]
		l.recv[i].hdr.SetIovlen(1)
		l.recv[i].hdr.Name = (*byte)(unsafe.Pointer(&l.names[i]))
		l.send[i].hdr.SetIovlen(1)
	}
	l.readFn, l.writeFn = l.recvmmsg, l.sendmmsg
	for {
		if err := l.rc.Read(l.readFn); err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		if l.errno != 0 {
			continue // e.g. ECONNREFUSED left by an ICMP error: read on
		}
		l.answer()
		for l.sent < l.toSend {
			if err := l.rc.Write(l.writeFn); err != nil {
				if errors.Is(err, net.ErrClosed) {
					return nil
				}
				return err
			}
		}
	}
}

// recvmmsg fills the batch; false asks the poller to wait for data.
func (l *loop) recvmmsg(fd uintptr) bool {
	for i := range l.recv {
		l.recv[i].hdr.Namelen = unix.SizeofSockaddrInet6
		l.recv[i].hdr.Flags = 0
	}
	n, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&l.recv[0])), Batch, 0, 0, 0)
	if e == unix.EAGAIN || e == unix.EINTR {
		return false
	}
	l.errno, l.received = e, int(n)
	if e != 0 {
		l.received = 0
	}
	return true
}

// answer runs the handler on each datagram received and lines up the
// answers to send.
func (l *loop) answer() {
	l.toSend, l.sent = 0, 0
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
		l.toSend++
	}
}

// sendmmsg sends what is left of the answers; false asks the poller to
// wait until the socket takes more.
func (l *loop) sendmmsg(fd uintptr) bool {
	n, _, e := unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&l.send[l.sent])), uintptr(l.toSend-l.sent), 0, 0, 0)
	switch {
	case e == unix.EAGAIN || e == unix.EINTR:
		return false
	case e != 0:
		l.sent++ // this answer cannot be sent (its address, an ICMP error): skip it
	default:
		l.sent += int(n)
	}
	return true
}
