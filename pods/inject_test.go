package pods

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
)

// injection is what a hostile value tries to add to a unit: a command run as root before the pod.
const injection = "\rExecStartPre=+/x"

// A carriage return (or any control character) in a value that reaches a unit file is refused,
// wherever the value comes from: it would end the line for systemd's parser and add a directive.
func TestUnitInjectionRefused(t *testing.T) {
	cases := map[string]func(*Spec){
		"working dir":    func(s *Spec) { s.WorkingDir = "/" + injection },
		"volume path":    func(s *Spec) { s.Volumes = []Volume{{Name: "d", Path: "/d" + injection}} },
		"static dir":     func(s *Spec) { s.BindReadOnly = []Bind{{Source: "/srv/site" + injection, Target: "/site"}} },
		"bind target":    func(s *Spec) { s.BindReadOnly = []Bind{{Source: "/srv/site", Target: "/site" + injection}} },
		"root":           func(s *Spec) { s.Root = "/roots/x" + injection },
		"netns":          func(s *Spec) { s.Netns = "/run/netns/x" + injection },
		"command":        func(s *Spec) { s.Command = []string{"/bin/busybox", "httpd" + injection} },
		"argv0":          func(s *Spec) { s.Command = []string{"/bin/busybox" + injection} },
		"env value":      func(s *Spec) { s.Env = []string{"A=b" + injection} },
		"env value nl":   func(s *Spec) { s.Env = []string{"A=b\nExecStartPre=+/x"} },
		"net up":         func(s *Spec) { s.NetUp = []string{"/usr/bin/onionpod", "net-up" + injection} },
		"net down":       func(s *Spec) { s.NetDown = []string{"/usr/bin/onionpod", "net-down" + injection} },
		"unicode sep":    func(s *Spec) { s.WorkingDir = "/www\u2028ExecStartPre=+/x" },
		"NUL":            func(s *Spec) { s.WorkingDir = "/www\x00" },
		"specifier":      func(s *Spec) { s.WorkingDir = "/www/%h" },
		"trailing slash": func(s *Spec) { s.Volumes = []Volume{{Name: "d", Path: "/d\\"}} },
	}
	for what, mutate := range cases {
		s := blogSpec()
		mutate(&s)
		units, err := PodUnits(s)
		if !errors.Is(err, ErrBadInput) {
			t.Errorf("%s: PodUnits = %v, want ErrBadInput", what, err)
			for _, u := range units {
				t.Logf("%s:\n%s", u.Name, u.Content)
			}
		}
	}

	services := map[string]HostService{
		"description": {Name: "tor", Description: "tor" + injection, ExecStart: []string{"/usr/bin/tor"}},
		"exec":        {Name: "tor", ExecStart: []string{"/usr/bin/tor", "-f" + injection}},
		"env":         {Name: "tor", ExecStart: []string{"/usr/bin/tor"}, Environment: []string{"HOME=/x" + injection}},
		"after":       {Name: "tor", ExecStart: []string{"/usr/bin/tor"}, After: []string{"network.target" + injection}},
		"wants":       {Name: "tor", ExecStart: []string{"/usr/bin/tor"}, Wants: []string{"x.service" + injection}},
		"type":        {Name: "tor", ExecStart: []string{"/usr/bin/tor"}, Type: "exec" + injection},
		"restart":     {Name: "tor", ExecStart: []string{"/usr/bin/tor"}, Restart: "always" + injection},
		"user":        {Name: "tor", ExecStart: []string{"/usr/bin/tor"}, User: "debian-tor" + injection},
	}
	for what, h := range services {
		if u, err := h.Unit(); !errors.Is(err, ErrBadInput) {
			t.Errorf("host service %s: Unit = %v, want ErrBadInput\n%s", what, err, u.Content)
		}
	}
}

// An image whose config holds a control character in a field that would reach a unit file is
// refused at load, with an error naming the field, and leaves nothing in the store.
func TestHostileImageConfigRefused(t *testing.T) {
	ctx := context.Background()
	cases := map[string]func(*v1.Config){
		"WorkingDir": func(c *v1.Config) { c.WorkingDir = "/" + injection },
		"Env":        func(c *v1.Config) { c.Env = append(c.Env, "A=b"+injection) },
		"Entrypoint": func(c *v1.Config) { c.Entrypoint = append(c.Entrypoint, "x"+injection) },
		"Cmd":        func(c *v1.Config) { c.Cmd = []string{"x" + injection} },
		"User":       func(c *v1.Config) { c.User = "app" + injection },
	}
	for field, change := range cases {
		t.Run(field, func(t *testing.T) {
			base := busyboxImage(t)
			cf, err := base.ConfigFile()
			if err != nil {
				t.Fatal(err)
			}
			cfg := cf.Config
			change(&cfg)
			img, err := mutate.Config(base, cfg)
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			archive := filepath.Join(dir, "img.tar")
			writeDockerArchive(t, archive, "example.com/hostile:1", img)
			store := &ImageStore{Dir: filepath.Join(dir, "store")}
			_, err = store.LoadArchive(ctx, archive, nil)
			if !errors.Is(err, ErrBadInput) || !strings.Contains(err.Error(), "image config "+field) {
				t.Fatalf("LoadArchive = %v, want bad input naming image config %s", err, field)
			}
			for _, d := range []string{"roots", "images", "refs", "layers"} {
				if n := dirNames(t, filepath.Join(store.Dir, d)); len(n) != 0 {
					t.Errorf("%s holds %v after a refused image", d, n)
				}
			}
		})
	}
}
