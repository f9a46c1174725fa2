package netnsfile

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/onionpod/onionpod/internal/peercred"
)

// A holder (Hold) makes and undoes its mounts itself, asked over a socket beside its link
// (LINK.sock, root only): one request per connection, "bind NAME" with the namespace's file
// descriptor attached, or "unbind NAME"; the answer is "ok" or "error: ...". Running `nsenter
// --mount -- mount` for each cost two processes, 16-17 ms per attach and 22-27 ms per detach on
// the box with 1000 pods (util-linux reads the holder's 1000-line mount table); a request costs
// a few system calls. A holder without the socket (one an older onionpod started) is still
// reached through nsenter.

// requestTimeout bounds one request to the holder.
const requestTimeout = 10 * time.Second

// errNoSocket: the holder has no socket this process may use; nsenter does the work.
var errNoSocket = errors.New("the holder has no socket")

// socketOf is the socket of the holder a held directory link points into.
func socketOf(link string) string { return link + ".sock" }

// serve answers requests on the socket at path until ctx is done. A path too long for a socket
// is left without one (the holder is then reached through nsenter).
func serve(ctx context.Context, path, inner string) error {
	if len(path) >= len(unix.RawSockaddrUnix{}.Path) {
		return nil
	}
	os.Remove(path)
	l, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		return err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return err
	}
	l.SetUnlinkOnClose(false)
	go func() {
		<-ctx.Done()
		l.Close()
	}()
	go func() {
		for {
			c, err := l.AcceptUnix()
			if err != nil {
				return
			}
			go answer(c, inner)
		}
	}()
	return nil
}

// answer carries out one request from a root peer.
func answer(c *net.UnixConn, inner string) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(requestTimeout))
	reply := func(err error) {
		msg := "ok"
		if err != nil {
			msg = "error: " + err.Error()
		}
		c.Write([]byte(msg))
	}
	if cred, err := peercred.Of(c); err != nil || cred.Uid != 0 {
		reply(errors.New("only root may name namespaces"))
		return
	}
	buf, oob := make([]byte, 512), make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
	if err != nil {
		return
	}
	fds := receivedFDs(oob[:oobn])
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	verb, name, _ := strings.Cut(string(buf[:n]), " ")
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		reply(fmt.Errorf("bad name %q", name))
		return
	}
	target := filepath.Join(inner, name)
	switch verb {
	case "bind":
		if len(fds) != 1 {
			reply(errors.New("bind needs one namespace file"))
			return
		}
		reply(bindFD(fds[0], target))
	case "unbind":
		err := unix.Unmount(target, unix.MNT_DETACH)
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			err = nil // not mounted, or gone
		}
		reply(err)
	default:
		reply(fmt.Errorf("unknown request %q", verb))
	}
}

// bindFD bind-mounts the network namespace open at fd onto target, an existing file.
func bindFD(fd int, target string) error {
	var fs unix.Statfs_t
	if err := unix.Fstatfs(fd, &fs); err != nil {
		return err
	}
	if fs.Type != unix.NSFS_MAGIC {
		return errors.New("not a namespace file")
	}
	if kind, err := unix.IoctlRetInt(fd, unix.NS_GET_NSTYPE); err != nil || kind != unix.CLONE_NEWNET {
		return errors.New("not a network namespace")
	}
	if st, err := os.Lstat(target); err != nil || !st.Mode().IsRegular() {
		return fmt.Errorf("%s is not a file made for the name", target)
	}
	return unix.Mount(fmt.Sprintf("/proc/self/fd/%d", fd), target, "", unix.MS_BIND, "")
}

func receivedFDs(oob []byte) []int {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	var fds []int
	for _, m := range msgs {
		if got, err := unix.ParseUnixRights(&m); err == nil {
			fds = append(fds, got...)
		}
	}
	return fds
}

// ask sends one request to holder h through the socket of link; source, if not empty, is the
// namespace file to bind. errNoSocket when the holder has no socket (or another process has its
// name): the caller falls back to nsenter.
func (h holder) ask(link, verb, name, source string) error {
	d := net.Dialer{Timeout: requestTimeout}
	conn, err := d.Dial("unixpacket", socketOf(link))
	if err != nil {
		return errNoSocket
	}
	c := conn.(*net.UnixConn)
	defer c.Close()
	if cred, err := peercred.Of(c); err != nil || int(cred.Pid) != h.pid {
		return errNoSocket
	}
	c.SetDeadline(time.Now().Add(requestTimeout))
	var oob []byte
	if source != "" {
		f, err := os.Open(source)
		if err != nil {
			return err
		}
		defer f.Close()
		oob = unix.UnixRights(int(f.Fd()))
	}
	if _, _, err := c.WriteMsgUnix([]byte(verb+" "+name), oob, nil); err != nil {
		return fmt.Errorf("the namespace holder (pid %d): %w", h.pid, err)
	}
	buf := make([]byte, 1024)
	n, err := c.Read(buf)
	if err != nil {
		return fmt.Errorf("the namespace holder (pid %d): %w", h.pid, err)
	}
	if answer := string(buf[:n]); answer != "ok" {
		return fmt.Errorf("the namespace holder (pid %d): %s %s: %s", h.pid, verb, name, strings.TrimPrefix(answer, "error: "))
	}
	return nil
}
