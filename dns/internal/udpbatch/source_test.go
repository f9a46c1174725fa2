package udpbatch

import (
	"encoding/binary"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// cmsg builds one control message as the kernel writes it (padded).
func cmsg(level, typ int, data []byte) []byte {
	b := make([]byte, unix.CmsgSpace(len(data)))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level, h.Type = int32(level), int32(typ)
	h.SetLen(unix.CmsgLen(len(data)))
	copy(b[unix.CmsgLen(0):], data)
	return b
}

// received puts ctrl into slot 0 of a loop as recvmmsg would.
func received(ctrl []byte, flags int32) *loop {
	l := &loop{pktinfo: true}
	l.init()
	buf := (*[ctrlSize]byte)(unsafe.Pointer(&l.ctrl[0]))
	n := copy(buf[:], ctrl)
	l.recv[0].hdr.SetControllen(n)
	l.recv[0].hdr.Flags = flags
	return l
}

// TestSource: the destination message is found (after others too), handed
// back in place with its interface index cleared; a missing, short or
// truncated one gives none.
func TestSource(t *testing.T) {
	v6 := make([]byte, unix.SizeofInet6Pktinfo)
	copy(v6, []byte{0x20, 0x01, 0x0d, 0xb8, 15: 0x53})
	binary.NativeEndian.PutUint32(v6[16:], 7)
	v4 := make([]byte, unix.SizeofInet4Pktinfo)
	binary.NativeEndian.PutUint32(v4, 7)
	copy(v4[4:], []byte{192, 0, 2, 99, 192, 0, 2, 99})
	other := cmsg(unix.IPPROTO_IP, unix.IP_TTL, make([]byte, 4))
	for _, c := range []struct {
		name   string
		ctrl   []byte
		flags  int32
		offset int // of the message returned; -1: none
	}{
		{"IPv6", cmsg(unix.IPPROTO_IPV6, unix.IPV6_PKTINFO, v6), 0, 0},
		{"IPv4", cmsg(unix.IPPROTO_IP, unix.IP_PKTINFO, v4), 0, 0},
		{"after another", append(append([]byte(nil), other...), cmsg(unix.IPPROTO_IPV6, unix.IPV6_PKTINFO, v6)...), 0, len(other)},
		{"none", nil, 0, -1},
		{"another only", other, 0, -1},
		{"short", cmsg(unix.IPPROTO_IPV6, unix.IPV6_PKTINFO, v6[:8]), 0, -1},
		{"truncated", cmsg(unix.IPPROTO_IPV6, unix.IPV6_PKTINFO, v6), unix.MSG_CTRUNC, -1},
		{"cut", cmsg(unix.IPPROTO_IPV6, unix.IPV6_PKTINFO, v6)[:30], 0, -1},
	} {
		l := received(c.ctrl, c.flags)
		ctrl, n := l.source(0)
		buf := (*[ctrlSize]byte)(unsafe.Pointer(&l.ctrl[0]))
		if c.offset < 0 {
			if ctrl != nil || n != 0 {
				t.Errorf("%s: got a message of %d bytes, want none", c.name, n)
			}
			continue
		}
		want := unix.CmsgLen(unix.SizeofInet6Pktinfo)
		if c.name == "IPv4" {
			want = unix.CmsgLen(unix.SizeofInet4Pktinfo)
		}
		if ctrl != &buf[c.offset] || n != want {
			t.Errorf("%s: message at %p (%d bytes), want offset %d", c.name, ctrl, n, c.offset)
			continue
		}
		data := buf[c.offset+unix.CmsgLen(0):]
		if c.name == "IPv4" {
			if binary.NativeEndian.Uint32(data) != 0 || string(data[4:8]) != string(v4[4:8]) {
				t.Errorf("%s: % x", c.name, data[:12])
			}
		} else if binary.NativeEndian.Uint32(data[16:]) != 0 || string(data[:16]) != string(v6[:16]) {
			t.Errorf("%s: % x", c.name, data[:20])
		}
	}
}

// FuzzSource: whatever the control buffer holds, source never reads or
// points outside it.
func FuzzSource(f *testing.F) {
	f.Add(cmsg(unix.IPPROTO_IPV6, unix.IPV6_PKTINFO, make([]byte, unix.SizeofInet6Pktinfo)), ctrlSize)
	f.Add(cmsg(unix.IPPROTO_IP, unix.IP_PKTINFO, make([]byte, unix.SizeofInet4Pktinfo)), 100)
	f.Add(make([]byte, 64), 64)
	f.Fuzz(func(t *testing.T, ctrl []byte, n int) {
		l := received(ctrl, 0)
		l.recv[0].hdr.SetControllen(max(n, 0))
		p, size := l.source(0)
		if p == nil {
			return
		}
		start := uintptr(unsafe.Pointer(p)) - uintptr(unsafe.Pointer(&l.ctrl[0]))
		if start+uintptr(size) > ctrlSize || size < unix.CmsgLen(unix.SizeofInet4Pktinfo) {
			t.Fatalf("message at %d, %d bytes, in a buffer of %d", start, size, ctrlSize)
		}
	})
}
