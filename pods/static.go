package pods

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/onionpod/onionpod/internal/errkind"
)

// Paths inside a static-site pod's otherwise empty root.
const (
	StaticBinary = "/onionpod" // the onionpod binary, bind-mounted read-only
	StaticSite   = "/site"     // the site directory, bind-mounted read-only
)

// ServeStatic serves the files of dir over HTTP on listenAddr until ctx is done. A directory is
// served as its index.html; directory listings are never shown. Every file is opened beneath dir
// (openBeneath): a symlink leading out of the site (to /proc/self/environ, to /etc) is not
// followed, and only regular files and directories are served (a FIFO is never waited on). It is what a static-site pod runs (`onionpod serve-static --dir /site --listen
// [::]:PORT`), as the pod's dynamic user.
func ServeStatic(ctx context.Context, dir, listenAddr string) error {
	site, err := openSite(dir)
	if err != nil {
		return err
	}
	defer site.Close()
	ln, err := net.Listen("tcp", listenAddr)
	if err != nil {
		return fmt.Errorf("pods: serve-static: %w", err)
	}
	srv := &http.Server{
		Handler:           staticHandler(site),
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

// openSite opens the site directory that every file is then opened beneath.
func openSite(dir string) (beneath, error) {
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return beneath{}, errkind.BadInputf("pods: serve-static: %q: not a directory: %w", dir, err)
	}
	return beneath{fd: fd}, nil
}

// staticHandler serves files, and index.html for directories, without listings.
func staticHandler(site beneath) http.Handler {
	files := http.FileServer(indexOnly{site})
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

// beneath is an http.FileSystem of the files beneath one directory (an O_PATH descriptor): see
// openBeneath.
type beneath struct{ fd int }

func (b beneath) Close() error { return unix.Close(b.fd) }

func (b beneath) Open(name string) (http.File, error) {
	f, err := openBeneath(b.fd, strings.TrimPrefix(path.Clean("/"+name), "/"))
	if err != nil {
		return nil, fs.ErrNotExist // outside, missing, unreadable or special: the same answer
	}
	return f, nil
}

// openBeneath opens rel (a clean relative path; "" is the directory itself) beneath the
// directory root and never outside it: it walks one component at a time without following
// symlinks, follows a symlink only when its target is relative and stays inside (an absolute
// one, or one climbing out, e.g. to /proc/self/environ or /etc, is refused), and opens only a
// regular file or a directory, without blocking. (openat2's RESOLVE_BENEATH would do this in one
// call, but the seccomp filter of systemd's RestrictSUIDSGID= answers openat2 with ENOSYS.)
func openBeneath(root int, rel string) (*os.File, error) {
	cur, err := unix.Openat(root, ".", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer func() { unix.Close(cur) }()
	comps := splitPath(rel)
	var logical []string
	hops := 0
	for len(comps) > 0 {
		c := comps[0]
		comps = comps[1:]
		var st unix.Stat_t
		if err := unix.Fstatat(cur, c, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return nil, err
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			next, err := unix.Openat(cur, c, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if err != nil {
				return nil, err
			}
			unix.Close(cur)
			cur = next
			logical = append(logical, c)
		case unix.S_IFLNK:
			if hops++; hops > maxSymlinkHops {
				return nil, unix.ELOOP
			}
			target, err := readlinkat(cur, c)
			if err != nil {
				return nil, err
			}
			joined := path.Clean(path.Join(append(append(slices.Clone(logical), target), comps...)...))
			if path.IsAbs(target) || joined == ".." || strings.HasPrefix(joined, "../") {
				return nil, unix.EXDEV
			}
			next, err := unix.Openat(root, ".", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
			if err != nil {
				return nil, err
			}
			unix.Close(cur)
			cur, comps, logical = next, splitPath(joined), nil
		case unix.S_IFREG:
			if len(comps) > 0 {
				return nil, unix.ENOTDIR
			}
			fd, err := unix.Openat(cur, c, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
			if err != nil {
				return nil, err
			}
			var opened unix.Stat_t
			if err := unix.Fstat(fd, &opened); err != nil || opened.Dev != st.Dev || opened.Ino != st.Ino {
				unix.Close(fd)
				return nil, unix.ESTALE // replaced meanwhile
			}
			return os.NewFile(uintptr(fd), path.Join(append(logical, c)...)), nil
		default:
			return nil, unix.EACCES // FIFOs, sockets and devices are never served
		}
	}
	fd, err := unix.Openat(cur, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), "/"+path.Join(logical...)), nil
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
	if err := mountPoint(root, StaticBinary); err != nil {
		return "", fmt.Errorf("pods: empty root: %w", err)
	}
	return root, nil
}

// StaticSpec is the spec of a static-site pod: binary (the onionpod executable) serves siteDir
// on port, both bind-mounted read-only into the store's empty root, as the pod's dynamic user
// (it reads only what that user may read, and nothing outside the site). A dynamically linked
// binary (a plain `go build`, cgo on) gets its dynamic loader and shared libraries, found from its
// own ELF headers, read-only at the same paths in the root, and is started through the loader. A
// port below 1024 adds CAP_NET_BIND_SERVICE. siteDir must pass CheckStaticDir (with the store's
// directory refused too). Netns, NetUp and NetDown are left for the caller to set, as for image
// pods.
func (s *ImageStore) StaticSpec(app, siteDir, binary string, port uint16) (Spec, error) {
	if err := ValidApp(app); err != nil {
		return Spec{}, err
	}
	fail := func(err error) (Spec, error) { return Spec{}, fmt.Errorf("pods: app %q: %w", app, err) }
	if err := CheckStaticDir(siteDir, []string{s.Dir}); err != nil {
		return fail(err)
	}
	site, err := filepath.EvalSymlinks(siteDir)
	if err != nil {
		return fail(errkind.BadInputf("static site %q: %w", siteDir, err))
	}
	if port == 0 {
		return fail(errkind.BadInputf("port 0"))
	}
	if !filepath.IsAbs(binary) {
		return fail(errkind.BadInputf("binary %q: not an absolute path", binary))
	}
	deps, err := binaryDeps(binary)
	if err != nil {
		return fail(err)
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
			{Source: site, Target: StaticSite},
		},
	}
	if deps.Interp != "" {
		// The loader, started by name, loads the binary with exactly these libraries: nothing
		// depends on the loader's built-in paths or a cache the empty root does not have.
		spec.Command = append([]string{deps.Interp, "--library-path", strings.Join(deps.Dirs, ":")}, spec.Command...)
		for _, f := range append([]string{deps.Interp}, deps.Libs...) {
			if err := mountPoint(root, f); err != nil {
				return Spec{}, fmt.Errorf("pods: app %q: empty root: %w", app, err)
			}
			spec.BindReadOnly = append(spec.BindReadOnly, Bind{Source: f, Target: f})
		}
	}
	if port < 1024 {
		spec.Capabilities = []string{"CAP_NET_BIND_SERVICE"}
	}
	return spec, nil
}

// mountPoint creates an empty file at p inside root (and its directories), the target of a bind
// mount, so systemd need not create it at each start. The empty root is onionpod's own: no
// symlink in it.
func mountPoint(root, p string) error {
	target := filepath.Join(root, filepath.FromSlash(strings.TrimPrefix(p, "/")))
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o444)
	if err != nil {
		return err
	}
	return f.Close()
}
