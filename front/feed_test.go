package front

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// TestFeedServesEachUnitItsOwn: a peer gets its own unit's latest message at once and every new
// one; a peer of another unit gets nothing of it, and a peer in no unit of ours nothing at all.
// Identities are faked here (a unit test of the feed's logic); TestFeedKnowsPeersByCgroup below
// has the kernel tell them.
func TestFeedServesEachUnitItsOwn(t *testing.T) {
	path := filepath.Join(t.TempDir(), "feed.sock")
	var mu sync.Mutex
	next := []string{FrontUnit("blog"), FrontUnit("wiki"), "sshd.service"}
	f, err := newFeed(path, nil, func(int32) (string, error) {
		mu.Lock()
		defer mu.Unlock()
		if len(next) == 0 {
			return "sshd.service", nil // the stranger, reconnecting
		}
		u := next[0]
		next = next[1:]
		return u, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.Publish(FrontUnit("blog"), []byte("blog v1"))
	f.Publish(FrontUnit("wiki"), []byte("wiki v1"))

	follow := func() chan string {
		ch := make(chan string, 10)
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		connected := make(chan struct{})
		go Follow(ctx, path, nil, func(b []byte) error { ch <- string(b); return nil })
		go func() {
			time.Sleep(100 * time.Millisecond)
			close(connected)
		}()
		<-connected
		return ch
	}
	blog := follow()
	wiki := follow()
	stranger := follow()
	expect := func(ch chan string, want string) {
		t.Helper()
		select {
		case got := <-ch:
			if got != want {
				t.Errorf("got %q, want %q", got, want)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("nothing received, want %q", want)
		}
	}
	expect(blog, "blog v1")
	expect(wiki, "wiki v1")
	f.Publish(FrontUnit("blog"), []byte("blog v2"))
	expect(blog, "blog v2")
	select {
	case got := <-wiki:
		t.Errorf("wiki's front received %q", got)
	case got := <-stranger:
		t.Errorf("a stranger received %q", got)
	case <-time.After(200 * time.Millisecond):
	}
}

// TestFeedKnowsPeersByCgroup: the feed learns who connects from the kernel (SO_PEERCRED, then the
// peer's cgroup): a process placed in onionpod-front-blog.service's cgroup gets blog's message.
func TestFeedKnowsPeersByCgroup(t *testing.T) {
	unified := "/sys/fs/cgroup/unified"
	if _, err := os.Stat(filepath.Join(unified, "cgroup.procs")); err != nil {
		unified = "/sys/fs/cgroup"
		if _, err := os.Stat(filepath.Join(unified, "cgroup.procs")); err != nil || os.Getuid() != 0 {
			t.Skip("needs root and a cgroup2 hierarchy")
		}
	}
	if _, err := exec.LookPath("socat"); err != nil {
		t.Skip("needs socat")
	}
	parent, err := os.MkdirTemp(unified, "onionpod-feedtest-")
	if err != nil {
		t.Skipf("cannot create a cgroup: %v", err)
	}
	group := filepath.Join(parent, FrontUnit("blog"))
	if err := os.Mkdir(group, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for range 50 {
			if os.Remove(group) == nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		os.Remove(parent)
	})
	path := filepath.Join(t.TempDir(), "feed.sock")
	f, err := NewFeed(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.Publish(FrontUnit("blog"), []byte("for blog"))
	f.Publish(FrontUnit("wiki"), []byte("for wiki"))

	peer := func(cgroup string) string {
		script := fmt.Sprintf("exec socat -u UNIX-CONNECT:%s -", path)
		if cgroup != "" {
			script = fmt.Sprintf("echo $$ > %s/cgroup.procs && %s", cgroup, script)
		}
		cmd := exec.Command("sh", "-c", script)
		out, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { cmd.Process.Kill(); cmd.Wait() }()
		got := make(chan string, 1)
		go func() {
			msg, err := readMessage(bufio.NewReader(out))
			if err != nil {
				got <- ""
				return
			}
			got <- string(msg)
		}()
		select {
		case m := <-got:
			return m
		case <-time.After(2 * time.Second):
			return ""
		}
	}
	if got := peer(group); got != "for blog" {
		t.Errorf("a peer in blog's front cgroup got %q, want %q", got, "for blog")
	}
	if got := peer(""); got != "" {
		t.Errorf("a peer in no unit of ours got %q", got)
	}
}

func TestUnitOfCgroup(t *testing.T) {
	for in, want := range map[string]string{
		"0::/system.slice/onionpod-front-blog.service\n":                          "onionpod-front-blog.service",
		"12:pids:/x\n1:name=systemd:/system.slice/onionpod-edge.service\n0::/\n":  "onionpod-edge.service",
		"0::/user.slice/user-1000.slice/session-2.scope\n":                        "",
		"0::/init.scope\n1:name=systemd:/system.slice/onionpod-front-x.service\n": "onionpod-front-x.service",
	} {
		got, _ := unitOfCgroup(in)
		if got != want {
			t.Errorf("unitOfCgroup(%q) = %q, want %q", in, got, want)
		}
	}
}
