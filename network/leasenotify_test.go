package network

import (
	"encoding/binary"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

// inotifyEvent encodes one event as the kernel does: the header, then the name padded with NULs.
func inotifyEvent(mask uint32, name string) []byte {
	padded := 0
	if name != "" {
		padded = (len(name) + 1 + 15) &^ 15
	}
	b := make([]byte, unix.SizeofInotifyEvent+padded)
	binary.NativeEndian.PutUint32(b[0:], 1) // wd
	binary.NativeEndian.PutUint32(b[4:], mask)
	binary.NativeEndian.PutUint32(b[12:], uint32(padded))
	copy(b[unix.SizeofInotifyEvent:], name)
	return b
}

func TestParseLeaseEvents(t *testing.T) {
	var buf []byte
	for _, ev := range []struct {
		mask uint32
		name string
	}{
		{unix.IN_CLOSE_WRITE, ".blog.json.tmp123"}, // a write in progress: not a lease
		{unix.IN_MOVED_TO, "blog.json"},
		{unix.IN_ATTRIB, "blog.json"},
		{unix.IN_DELETE, "wiki.json"},
		{unix.IN_MOVED_TO, "README"},
	} {
		buf = append(buf, inotifyEvent(ev.mask, ev.name)...)
	}
	apps, overflow := parseLeaseEvents(buf)
	if !slices.Equal(apps, []string{"blog", "wiki"}) || overflow {
		t.Fatalf("parseLeaseEvents = %v, %v; want [blog wiki], no overflow", apps, overflow)
	}
	_, overflow = parseLeaseEvents(append(buf, inotifyEvent(unix.IN_Q_OVERFLOW, "")...))
	if !overflow {
		t.Fatal("overflow not reported")
	}
}
