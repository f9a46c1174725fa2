package debimage

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/klauspost/compress/gzip"

	"github.com/onionpod/onionpod/internal/atomicfile"
)

// layerStats counts what a layer holds.
type layerStats struct {
	Entries  int   `json:"entries"`
	Bytes    int64 `json:"bytes"`    // uncompressed file content
	Excluded int   `json:"excluded"` // entries dropped by Exclude (and device nodes)
}

// runMmdebstrap runs mmdebstrap for d with apt's lists of state (no update of its own: the layer
// holds exactly what resolve saw), reusing and filling the .deb cache debs, and writes the
// filtered root as a gzip-compressed layer to w. mmdebstrap's messages also go to output, if set.
func runMmdebstrap(ctx context.Context, d Debian, state *aptState, debs, tmp string, w io.Writer, output io.Writer) (layerStats, error) {
	if err := os.MkdirAll(debs, 0o755); err != nil {
		return layerStats{}, err
	}
	lists, archives := `"$1/var/lib/apt/lists"`, `"$1/var/cache/apt/archives"`
	args := []string{
		"--mode=root", "--variant=" + d.variant(), "--format=tar", "--skip=update",
		// Our sources carry their signed-by already (no gpg needed to guess it).
		"--skip=check/signed-by",
		"--include=" + strings.Join(d.Packages, ","),
		// The temp dir is private to root: apt's _apt sandbox user could not write there.
		`--aptopt=APT::Sandbox::User "root"`,
		// Our lists, so the layer holds what resolve saw and mmdebstrap downloads no index.
		"--setup-hook=mkdir -p " + lists + " && cp -a " + shq(state.listsDir()) + "/. " + lists + "/",
		// .debs downloaded by earlier builds: hard links (the temp dir is in the cache's file system).
		"--setup-hook=mkdir -p " + archives + " && for f in " + shq(debs) + "/*.deb; do [ -e \"$f\" ] || continue; " +
			"ln \"$f\" " + archives + "/ 2>/dev/null || cp \"$f\" " + archives + "/; done",
		// Keep what this build downloaded (the extract hook runs while the .debs are still there).
		"--extract-hook=for f in " + archives + "/*.deb; do [ -e \"$f\" ] || continue; n=${f##*/}; " +
			"[ -e " + shq(debs) + "/\"$n\" ] && continue; cp \"$f\" " + shq(debs) + "/.\"$n\".tmp && mv " + shq(debs) + "/.\"$n\".tmp " + shq(debs) + "/\"$n\"; done",
		d.Suite, "-", state.sourcesFile(),
	}
	cmd := exec.CommandContext(ctx, "mmdebstrap", args...)
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp, "LC_ALL=C.UTF-8")
	// Cancelled, mmdebstrap gets SIGTERM first: it then unmounts what it mounted in its root
	// (/proc, /sys, /dev for variants that run maintainer scripts) and removes its temp dir.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 30 * time.Second
	var stderr lockedTail
	cmd.Stderr = &stderr
	if output != nil {
		cmd.Stderr = io.MultiWriter(&stderr, output)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return layerStats{}, err
	}
	if err := cmd.Start(); err != nil {
		return layerStats{}, fmt.Errorf("mmdebstrap: %w", err)
	}
	stats, ferr := filterLayer(out, w, d.Exclude)
	if ferr != nil {
		_, _ = io.Copy(io.Discard, out) // let mmdebstrap finish (or fail) instead of blocking
	}
	werr := cmd.Wait()
	if werr != nil {
		return stats, fmt.Errorf("mmdebstrap: %w: %s", werr, stderr.String())
	}
	if ferr != nil {
		return stats, fmt.Errorf("mmdebstrap output: %w", ferr)
	}
	return stats, nil
}

// filterLayer copies the root tar of mmdebstrap to w as a gzip-compressed layer: names made
// relative ("usr/bin/x"), the root entry, device nodes, /dev's content and excluded paths dropped,
// extended attributes and user names cleared.
func filterLayer(r io.Reader, w io.Writer, exclude []string) (layerStats, error) {
	var st layerStats
	zw, err := gzip.NewWriterLevel(w, gzip.BestSpeed)
	if err != nil {
		return st, err
	}
	tr := tar.NewReader(r)
	tw := tar.NewWriter(zw)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return st, err
		}
		name := strings.TrimPrefix(path.Clean("/"+hdr.Name), "/")
		if name == "" {
			continue
		}
		abs := "/" + name
		drop := excluded(abs, exclude) || strings.HasPrefix(abs, "/dev/") ||
			hdr.Typeflag == tar.TypeChar || hdr.Typeflag == tar.TypeBlock
		if hdr.Typeflag == tar.TypeLink {
			hdr.Linkname = strings.TrimPrefix(path.Clean("/"+hdr.Linkname), "/")
			drop = drop || excluded("/"+hdr.Linkname, exclude)
		}
		if drop {
			st.Excluded++
			continue
		}
		if hdr.Typeflag == tar.TypeDir {
			name += "/"
		}
		hdr.Name = name
		hdr.Uname, hdr.Gname = "", ""
		//lint:ignore SA1019 the reader fills the deprecated Xattrs and the writer still writes it
		hdr.PAXRecords, hdr.Xattrs = nil, nil
		hdr.AccessTime, hdr.ChangeTime = time.Time{}, time.Time{}
		hdr.Format = tar.FormatUnknown
		if err := tw.WriteHeader(hdr); err != nil {
			return st, err
		}
		if hdr.Typeflag == tar.TypeReg {
			n, err := io.Copy(tw, tr)
			if err != nil {
				return st, err
			}
			st.Bytes += n
		}
		st.Entries++
	}
	if err := tw.Close(); err != nil {
		return st, err
	}
	return st, zw.Close()
}

// excluded reports whether abs or one of its parent directories matches a pattern.
func excluded(abs string, patterns []string) bool {
	for _, p := range patterns {
		for q := abs; q != "/"; q = path.Dir(q) {
			if ok, _ := path.Match(p, q); ok {
				return true
			}
		}
	}
	return false
}

// filesLayer writes the recipe's files as a gzip-compressed layer to w.
func filesLayer(files []File, w io.Writer) (layerStats, error) {
	var st layerStats
	zw, err := gzip.NewWriterLevel(w, gzip.BestSpeed)
	if err != nil {
		return st, err
	}
	tw := tar.NewWriter(zw)
	for _, f := range files {
		hdr := &tar.Header{
			Name:    strings.TrimPrefix(f.Path, "/"),
			Mode:    int64(f.Mode.Perm()),
			Uid:     f.UID,
			Gid:     f.GID,
			ModTime: time.Unix(0, 0),
			Format:  tar.FormatPAX,
		}
		if f.Mode&fs.ModeSetuid != 0 {
			hdr.Mode |= 0o4000
		}
		if f.Mode&fs.ModeSetgid != 0 {
			hdr.Mode |= 0o2000
		}
		if f.Mode&fs.ModeSticky != 0 {
			hdr.Mode |= 0o1000
		}
		switch {
		case f.Mode&fs.ModeDir != 0:
			hdr.Typeflag, hdr.Name = tar.TypeDir, hdr.Name+"/"
		case f.Mode&fs.ModeSymlink != 0:
			hdr.Typeflag, hdr.Linkname = tar.TypeSymlink, string(f.Data)
			hdr.Mode = 0o777
		default:
			hdr.Typeflag, hdr.Size = tar.TypeReg, int64(len(f.Data))
			if f.Mode == 0 {
				hdr.Mode = 0o644
			}
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return st, err
		}
		if hdr.Typeflag == tar.TypeReg {
			if _, err := tw.Write(f.Data); err != nil {
				return st, err
			}
			st.Bytes += int64(len(f.Data))
		}
		st.Entries++
	}
	if err := tw.Close(); err != nil {
		return st, err
	}
	return st, zw.Close()
}

// writeFileAtomic writes a (possibly large) file through fill: a temp file in tmp, fsync,
// rename to dst, fsync of dst's directory.
func writeFileAtomic(dst, tmp string, fill func(io.Writer) error) (err error) {
	f, err := os.CreateTemp(tmp, "."+filepath.Base(dst)+".*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err = fill(f); err != nil {
		return err
	}
	if err = f.Chmod(0o644); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(f.Name(), dst); err != nil {
		return err
	}
	return atomicfile.SyncDir(filepath.Dir(dst))
}

// shq quotes s for a POSIX shell.
func shq(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// lockedTail keeps the last 4 kB written to it (a command's stderr, for its error message).
type lockedTail struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (t *lockedTail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf.Write(p)
	if t.buf.Len() > 8<<10 {
		b := t.buf.Bytes()[t.buf.Len()-4<<10:]
		t.buf = *bytes.NewBuffer(append([]byte(nil), b...))
	}
	return len(p), nil
}

func (t *lockedTail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return tail(t.buf.Bytes(), 2000)
}

// removeTemp removes a temp dir of mmdebstrap's, unless something is still mounted below it (a
// killed mmdebstrap can leave its root's /proc, /sys or /dev mounted): removing through those
// would reach the host's files. Such a dir is left for a person to unmount, and said so.
func removeTemp(dir string) error {
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	for _, line := range strings.Split(string(mounts), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			return fmt.Errorf("%s is still mounted: left in place", f[4])
		}
	}
	return os.RemoveAll(dir)
}
