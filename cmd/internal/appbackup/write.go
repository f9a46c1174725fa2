package appbackup

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"strconv"
	"syscall"
	"time"

	"filippo.io/age"

	"github.com/onionpod/onionpod/internal/errkind"
	"github.com/onionpod/onionpod/internal/names"
)

// copyBufferBytes is the buffer file content goes through.
const copyBufferBytes = 1 << 20

// Backup writes one age-encrypted archive of apps to w, for recipients (a passphrase:
// onion.PassphraseRecipient; or age / SSH public keys), and reports what it holds. The apps'
// dumps are taken while they run; their other volumes are copied with the app quiesced. On
// failure the age stream is left unfinished (a restore refuses it) and the error says why:
// the caller removes what it wrote.
func Backup(ctx context.Context, w io.Writer, src Source, keys Keys, apps []string, recipients ...age.Recipient) ([]AppReport, error) {
	if len(recipients) == 0 {
		return nil, errkind.BadInputf("appbackup: backup: no passphrase or recipient")
	}
	if len(apps) == 0 {
		return nil, errkind.BadInputf("appbackup: backup: no app named")
	}
	h, plan, err := planBackup(ctx, src, keys, apps)
	if err != nil {
		return nil, err
	}
	return writeBackup(ctx, w, src, h, plan, recipients)
}

// plannedApp is an app as a backup plans it: its description, and its onion key (none: empty).
type plannedApp struct {
	app App
	key []byte
}

// planBackup takes everything small first (records, keys), so that a missing app fails before
// anything is written, and makes the archive's header. An app named twice is backed up once.
func planBackup(ctx context.Context, src Source, keys Keys, apps []string) (header, []plannedApp, error) {
	var plan []plannedApp
	h := header{Format: formatName, Version: formatVersion, Created: time.Now().UTC()}
	for _, name := range apps {
		if err := names.App(name); err != nil {
			return header{}, nil, fmt.Errorf("appbackup: backup: %w", err)
		}
		if slices.ContainsFunc(plan, func(p plannedApp) bool { return p.app.Name == name }) {
			continue
		}
		p, ha, err := planApp(ctx, src, keys, name)
		if err != nil {
			return header{}, nil, err
		}
		h.Apps = append(h.Apps, ha)
		plan = append(plan, p)
	}
	h.Version = formatVersionNoImages
	if slices.ContainsFunc(h.Apps, func(a headerApp) bool { return len(a.Images) > 0 }) {
		h.Version = formatVersion
	}
	return h, plan, nil
}

// planApp describes one app and takes its onion key (an app without one has none), both
// checked for size, and makes the app's entry of the header.
func planApp(ctx context.Context, src Source, keys Keys, name string) (plannedApp, headerApp, error) {
	a, err := src.Describe(ctx, name)
	if err != nil {
		return plannedApp{}, headerApp{}, fmt.Errorf("appbackup: backup %q: %w", name, err)
	}
	a.Name = name
	if len(a.Record) > maxRecordBytes {
		return plannedApp{}, headerApp{}, fmt.Errorf("appbackup: backup %q: record larger than %d bytes", name, maxRecordBytes)
	}
	ha := headerApp{Name: name}
	for _, v := range a.Volumes {
		ha.Volumes = append(ha.Volumes, headerVolume{Name: v.Name, Dump: v.Dump})
	}
	ha.Images = a.Images
	if err := checkApp(ha); err != nil {
		return plannedApp{}, headerApp{}, fmt.Errorf("appbackup: backup: %w", err)
	}
	var key bytes.Buffer
	addr, err := keys.Backup(&key, name)
	switch {
	case errors.Is(err, errkind.NotFound):
		key.Reset()
	case err != nil:
		return plannedApp{}, headerApp{}, fmt.Errorf("appbackup: backup %q: %w", name, err)
	case key.Len() > maxKeyBytes:
		return plannedApp{}, headerApp{}, fmt.Errorf("appbackup: backup %q: key larger than %d bytes", name, maxKeyBytes)
	default:
		ha.Address = addr
	}
	return plannedApp{app: a, key: key.Bytes()}, ha, nil
}

// writeBackup writes the planned apps as an archive encrypted to recipients: the header, each
// app, then the trailer that counts what came before it.
func writeBackup(ctx context.Context, w io.Writer, src Source, h header, plan []plannedApp, recipients []age.Recipient) ([]AppReport, error) {
	enc, err := age.Encrypt(w, recipients...)
	if err != nil {
		return nil, fmt.Errorf("appbackup: backup: %w", err)
	}
	aw := &archiveWriter{tw: tar.NewWriter(enc), buf: make([]byte, copyBufferBytes)}
	if err := aw.writeJSON(headerName, h); err != nil {
		return nil, fmt.Errorf("appbackup: backup: %w", err)
	}
	aw.tr = trailer{} // the header is not counted
	var reports []AppReport
	for i, p := range plan {
		rep, err := aw.writeApp(ctx, src, p.app, p.key)
		if err != nil {
			return nil, fmt.Errorf("appbackup: backup %q: %w", p.app.Name, err)
		}
		rep.Address = h.Apps[i].Address
		reports = append(reports, rep)
	}
	aw.tr.Apps = len(plan)
	tr := aw.tr
	if err := aw.writeJSON(trailerName, tr); err != nil {
		return nil, fmt.Errorf("appbackup: backup: %w", err)
	}
	if err := aw.tw.Close(); err != nil {
		return nil, fmt.Errorf("appbackup: backup: %w", err)
	}
	// Only now is the age stream finished: a backup cut short anywhere above never verifies.
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("appbackup: backup: %w", err)
	}
	return reports, nil
}

// archiveWriter writes the tar stream and counts it (the trailer).
type archiveWriter struct {
	tw  *tar.Writer
	tr  trailer
	buf []byte
}

func (aw *archiveWriter) header(h *tar.Header) error {
	if err := aw.tw.WriteHeader(h); err != nil {
		return fmt.Errorf("%s: %w", h.Name, err)
	}
	aw.tr.Entries++
	aw.tr.Bytes += h.Size
	return nil
}

func (aw *archiveWriter) writeBytes(name string, b []byte) error {
	if err := aw.header(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o600, Size: int64(len(b)), ModTime: time.Now().Truncate(time.Second)}); err != nil {
		return err
	}
	_, err := aw.tw.Write(b)
	return err
}

func (aw *archiveWriter) writeJSON(name string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return aw.writeBytes(name, append(b, '\n'))
}

// writeApp writes one app: record, key, images, dumps (the app running), then the file volumes
// (the app quiesced meanwhile).
func (aw *archiveWriter) writeApp(ctx context.Context, src Source, a App, key []byte) (rep AppReport, err error) {
	rep.Name = a.Name
	if err := aw.writeBytes(recordName(a.Name), a.Record); err != nil {
		return rep, err
	}
	if len(key) > 0 {
		if err := aw.writeBytes(keyName(a.Name), key); err != nil {
			return rep, err
		}
	}
	for _, id := range a.Images {
		cw := &chunkWriter{aw: aw, name: func(n int) string { return imageChunkName(a.Name, id, n) }, buf: make([]byte, 0, dumpChunkBytes)}
		if err := src.WriteImage(ctx, id, cw); err != nil {
			return rep, fmt.Errorf("image %s: %w", id, err)
		}
		if err := cw.flush(); err != nil {
			return rep, fmt.Errorf("image %s: %w", id, err)
		}
		rep.Images = append(rep.Images, ImageReport{ID: id, Bytes: cw.total})
	}
	var files []Volume
	for _, v := range a.Volumes {
		if !v.Dump {
			files = append(files, v)
			continue
		}
		vr := VolumeReport{Name: v.Name, Dump: true}
		cw := &chunkWriter{aw: aw, name: func(n int) string { return dumpChunkName(a.Name, v.Name, n) }, buf: make([]byte, 0, dumpChunkBytes)}
		if err := src.Dump(ctx, a.Name, v.Name, cw); err != nil {
			return rep, fmt.Errorf("dump of volume %q: %w", v.Name, err)
		}
		if err := cw.flush(); err != nil {
			return rep, fmt.Errorf("dump of volume %q: %w", v.Name, err)
		}
		vr.Bytes = cw.total
		rep.Volumes = append(rep.Volumes, vr)
	}
	if len(files) == 0 {
		return rep, nil
	}
	stopped := time.Now()
	resume, err := src.Quiesce(ctx, a.Name)
	if err != nil {
		return rep, fmt.Errorf("quiesce: %w", err)
	}
	defer func() {
		rep.Quiesced = time.Since(stopped)
		if rerr := resume(context.WithoutCancel(ctx)); rerr != nil {
			err = errors.Join(err, fmt.Errorf("resume: %w", rerr))
		}
	}()
	for _, v := range files {
		vr := VolumeReport{Name: v.Name}
		if err := aw.writeVolume(ctx, volumePrefix(a.Name, v.Name), v.Dir, &vr); err != nil {
			return rep, fmt.Errorf("volume %q: %w", v.Name, err)
		}
		rep.Volumes = append(rep.Volumes, vr)
	}
	return rep, nil
}

// chunkWriter stores a dump (or an image) as entries of dumpChunkBytes, named by name: a stream
// of unknown length in bounded memory.
type chunkWriter struct {
	aw    *archiveWriter
	name  func(n int) string
	buf   []byte
	n     int
	total int64
}

func (c *chunkWriter) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		k := min(len(p), cap(c.buf)-len(c.buf))
		c.buf = append(c.buf, p[:k]...)
		p = p[k:]
		written += k
		if len(c.buf) == cap(c.buf) {
			if err := c.flush(); err != nil {
				return written, err
			}
		}
	}
	return written, nil
}

func (c *chunkWriter) flush() error {
	if len(c.buf) == 0 && c.n > 0 {
		return nil
	}
	if err := c.aw.writeBytes(c.name(c.n), c.buf); err != nil {
		return err
	}
	c.n++
	c.total += int64(len(c.buf))
	c.buf = c.buf[:0]
	return nil
}

// writeVolume writes the tree at dir as entries under prefix (its top directory is prefix
// itself). It reads through os.Root and never follows a symlink: a pod may change its volume
// while it is read, and nothing outside dir is ever read. A missing dir is an empty volume.
func (aw *archiveWriter) writeVolume(ctx context.Context, prefix, dir string, rep *VolumeReport) error {
	fi, err := os.Lstat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		rep.Dirs++
		return aw.header(&tar.Header{Name: prefix, Typeflag: tar.TypeDir, Mode: 0o755, ModTime: time.Now().Truncate(time.Second)})
	}
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	vw := &volumeWriter{aw: aw, root: root, prefix: prefix, rep: rep, links: map[fileID]string{}}
	if err := vw.entry(".", fi); err != nil {
		return err
	}
	return vw.walk(ctx, ".", fi)
}

type fileID struct{ dev, ino uint64 }

type volumeWriter struct {
	aw     *archiveWriter
	root   *os.Root
	prefix string
	rep    *VolumeReport
	links  map[fileID]string // hard-linked files already written: their archive names
}

func (vw *volumeWriter) name(rel string) string {
	if rel == "." {
		return vw.prefix
	}
	return vw.prefix + rel
}

// walk writes the entries of the directory rel, which Lstat saw as fi.
func (vw *volumeWriter) walk(ctx context.Context, rel string, fi fs.FileInfo) error {
	d, err := vw.root.OpenFile(rel, os.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	if st, err := d.Stat(); err != nil || !os.SameFile(st, fi) {
		d.Close()
		return fmt.Errorf("%s changed while it was read (is the app stopped?)", rel)
	}
	entries, err := d.Readdirnames(-1)
	d.Close()
	if err != nil {
		return err
	}
	slices.Sort(entries)
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return err
		}
		p := path.Join(rel, e)
		fi, err := vw.root.Lstat(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed meanwhile
		}
		if err != nil {
			return err
		}
		if err := vw.entry(p, fi); err != nil {
			return err
		}
		if fi.IsDir() {
			if err := vw.walk(ctx, p, fi); err != nil {
				return err
			}
		}
	}
	return nil
}

// entry writes one file system object (not a directory's content).
func (vw *volumeWriter) entry(rel string, fi fs.FileInfo) error {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("%s: no stat", rel)
	}
	h := &tar.Header{
		Name:    vw.name(rel),
		Mode:    int64(fi.Mode().Perm()),
		Uid:     int(st.Uid),
		Gid:     int(st.Gid),
		ModTime: fi.ModTime().Truncate(time.Second),
	}
	if fi.Mode()&fs.ModeSticky != 0 {
		h.Mode |= 0o1000 // setuid and setgid are dropped: volumes hold data
	}
	switch {
	case fi.IsDir():
		h.Typeflag = tar.TypeDir
		if rel != "." {
			h.Name += "/"
		}
		vw.rep.Dirs++
		return vw.aw.header(h)
	case fi.Mode()&fs.ModeSymlink != 0:
		target, err := vw.root.Readlink(rel)
		if err != nil {
			return err
		}
		h.Typeflag, h.Linkname = tar.TypeSymlink, target
		vw.rep.Symlinks++
		return vw.aw.header(h)
	case fi.Mode().IsRegular():
		id := fileID{uint64(st.Dev), st.Ino}
		if st.Nlink > 1 {
			if first, ok := vw.links[id]; ok {
				h.Typeflag, h.Linkname = tar.TypeLink, first
				vw.rep.HardLinks++
				return vw.aw.header(h)
			}
			vw.links[id] = h.Name
		}
		return vw.file(rel, h, id)
	default:
		vw.rep.Skipped++ // sockets, FIFOs, devices
		return nil
	}
}

// file writes a regular file's content: its data segments only when it is sparse.
func (vw *volumeWriter) file(rel string, h *tar.Header, id fileID) error {
	f, err := vw.root.OpenFile(rel, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		return err
	}
	if uint64(st.Dev) != id.dev || st.Ino != id.ino || st.Mode&syscall.S_IFMT != syscall.S_IFREG {
		return fmt.Errorf("%s changed while it was read (is the app stopped?)", rel)
	}
	size := st.Size
	h.Typeflag = tar.TypeReg
	segs := []segment{{0, size}}
	if st.Blocks*512 < size {
		if s, ok := dataSegments(int(f.Fd()), size); ok {
			segs = s
			h.PAXRecords = map[string]string{paxSparseMap: formatSegments(segs), paxSparseSize: strconv.FormatInt(size, 10)}
			vw.rep.Sparse++
		}
	}
	h.Size = 0
	for _, s := range segs {
		h.Size += s.length
	}
	if err := vw.aw.header(h); err != nil {
		return err
	}
	for _, s := range segs {
		n, err := io.CopyBuffer(vw.aw.tw, io.NewSectionReader(f, s.offset, s.length), vw.aw.buf)
		if err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		if n != s.length {
			return fmt.Errorf("%s shrank while it was read (is the app stopped?)", rel)
		}
	}
	vw.rep.Files++
	vw.rep.Bytes += h.Size
	return nil
}
