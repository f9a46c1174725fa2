package pods

import (
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Paths inside a static-site pod's otherwise empty root.
const (
	StaticBinary = "/onionpod" // the onionpod binary, bind-mounted read-only
	StaticSite   = "/site"     // the site directory, bind-mounted read-only
)

// ServeStatic serves the files of dir over HTTP on listenAddr until ctx is done. A directory is
// served as its index.html; directory listings are never shown. It is what a static-site pod
// runs (`onionpod serve-static --dir /site --listen [::]:PORT`).
func ServeStatic(ctx context.Context, dir, listenAddr string) error {
	st, err := os.Stat(dir)
	if err != nil || !st.IsDir() {
		return fmt.Errorf("pods: serve-static: %q: %w: not a directory", dir, ErrBadInput)
	}
	ln, err := net.Listen("tcp", listenAddr)
	if err != nil {
		return fmt.Errorf("pods: serve-static: %w", err)
	}
	srv := &http.Server{
		Handler:           staticHandler(dir),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      5 * time.Minute,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    16 << 10,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("pods: serve-static: %w", err)
	case <-ctx.Done():
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
		if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("pods: serve-static: %w", err)
		}
		return nil
	}
}

// staticHandler serves files, and index.html for directories, without listings.
func staticHandler(dir string) http.Handler {
	files := http.FileServer(indexOnly{http.Dir(dir)})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		w.Header().Set("X-Content-Type-Options", "nosniff")
		files.ServeHTTP(w, r)
	})
}

// indexOnly opens a directory only when its index.html can be opened too (by the pod's user), and
// never lists it: a directory without a readable index is "not found".
type indexOnly struct{ fs http.FileSystem }

func (o indexOnly) Open(name string) (http.File, error) {
	f, err := o.fs.Open(name)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil || !st.IsDir() {
		return f, err
	}
	index, err := o.fs.Open(path.Join(name, "index.html"))
	if err != nil {
		f.Close()
		return nil, os.ErrNotExist
	}
	index.Close()
	return unlistable{f}, nil
}

// unlistable is a directory whose entries are never read.
type unlistable struct{ http.File }

func (unlistable) Readdir(int) ([]os.FileInfo, error) { return nil, nil }

// EmptyRoot returns (creating it once) the store's empty root directory for static-site pods:
// nothing but the mount points systemd needs.
func (s *ImageStore) EmptyRoot() (string, error) {
	if err := s.makeDirs(); err != nil {
		return "", fmt.Errorf("pods: empty root: %w", err)
	}
	root := filepath.Join(s.Dir, "roots", "empty")
	for _, d := range []string{"", "dev", "proc", "sys", "run", "tmp", "etc", "usr", "root", "var/tmp", "var/lib", strings.TrimPrefix(StaticSite, "/")} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return "", fmt.Errorf("pods: empty root: %w", err)
		}
	}
	bin := filepath.Join(root, strings.TrimPrefix(StaticBinary, "/"))
	if _, err := os.Stat(bin); errors.Is(err, os.ErrNotExist) {
		if err := os.WriteFile(bin, nil, 0o555); err != nil { // the bind mount's target
			return "", fmt.Errorf("pods: empty root: %w", err)
		}
	}
	return root, nil
}

// StaticSpec is the spec of a static-site pod: binary (the onionpod executable, which must be
// statically linked: CGO_ENABLED=0) serves siteDir on port, both bind-mounted read-only into the
// store's empty root. A port below 1024 adds CAP_NET_BIND_SERVICE. Netns, NetUp and NetDown are
// left for the caller to set, as for image pods.
func (s *ImageStore) StaticSpec(app, siteDir, binary string, port uint16) (Spec, error) {
	if err := ValidApp(app); err != nil {
		return Spec{}, err
	}
	if st, err := os.Stat(siteDir); err != nil || !st.IsDir() {
		return Spec{}, fmt.Errorf("pods: %s: %w: static site %q is not a directory", app, ErrBadInput, siteDir)
	}
	if port == 0 {
		return Spec{}, fmt.Errorf("pods: %s: %w: port 0", app, ErrBadInput)
	}
	if err := checkStatic(binary); err != nil {
		return Spec{}, fmt.Errorf("pods: %s: %w", app, err)
	}
	root, err := s.EmptyRoot()
	if err != nil {
		return Spec{}, err
	}
	spec := Spec{
		App:     app,
		Root:    root,
		Command: []string{StaticBinary, "serve-static", "--dir", StaticSite, "--listen", net.JoinHostPort("::", strconv.Itoa(int(port)))},
		BindReadOnly: []Bind{
			{Source: filepath.Clean(binary), Target: StaticBinary},
			{Source: filepath.Clean(siteDir), Target: StaticSite},
		},
	}
	if port < 1024 {
		spec.Capabilities = []string{"CAP_NET_BIND_SERVICE"}
	}
	return spec, nil
}

// checkStatic refuses a binary that needs a dynamic loader: the static pod's root is empty.
func checkStatic(binary string) error {
	if !filepath.IsAbs(binary) {
		return fmt.Errorf("%w: binary %q: not an absolute path", ErrBadInput, binary)
	}
	f, err := elf.Open(binary)
	if err != nil {
		return fmt.Errorf("%w: binary %q: %w", ErrBadInput, binary, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%w: binary %q is dynamically linked (build it with CGO_ENABLED=0)", ErrBadInput, binary)
		}
	}
	return nil
}
