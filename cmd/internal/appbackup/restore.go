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
	"path/filepath"
	"slices"
	"strings"

	"filippo.io/age"
	"golang.org/x/sys/unix"

	"github.com/onionpod/onionpod/internal/errkind"
)

// Restore reads a backup written by Backup and brings its apps back on this box: the same
// records, the same .onion addresses and clients, the same volume data. It verifies the whole
// stream first (staging the volumes beside their final place), then commits every app or none:
// keys, volumes swapped in, records; then the apps run and their dumps are loaded. If any step
// fails, the earlier ones are undone and the apps the box had run as before. A wrong passphrase
// or identity, a modified byte, a truncated file: ErrDecrypt, nothing written. An app the box
// has already is replaced only with force.
func Restore(ctx context.Context, r io.Reader, dst Target, keys Keys, force bool, identities ...age.Identity) ([]AppReport, error) {
	if len(identities) == 0 {
		return nil, errkind.BadInputf("appbackup: restore: no passphrase or identity")
	}
	dec, err := age.Decrypt(r, identities...)
	if err != nil {
		return nil, fmt.Errorf("appbackup: restore: %w%s", ErrDecrypt, decryptReason(err))
	}
	src := &authReader{r: dec}
	rs := &restore{dst: dst, force: force, buf: make([]byte, copyBufferBytes)}
	defer rs.cleanup()
	if err := rs.read(ctx, src); err != nil {
		if src.err != nil {
			return nil, fmt.Errorf("appbackup: restore: nothing written: %w: the payload does not authenticate (modified or truncated)", ErrDecrypt)
		}
		return nil, fmt.Errorf("appbackup: restore: nothing written: %w", err)
	}
	if err := rs.commit(ctx, keys); err != nil {
		return nil, fmt.Errorf("appbackup: restore: %w", err)
	}
	return rs.reports(), nil
}

// authReader keeps the first error of age's reader (a chunk that does not authenticate, a
// stream cut short): a tar error is then reported as what it is, a backup that does not verify.
type authReader struct {
	r   io.Reader
	err error
}

func (a *authReader) Read(p []byte) (int, error) {
	n, err := a.r.Read(p)
	if err != nil && err != io.EOF && a.err == nil {
		a.err = err
	}
	return n, err
}

// decryptReason says why age refused a backup, without age's words (they may quote the file).
func decryptReason(err error) string {
	var noMatch *age.NoIdentityMatchError
	switch {
	case errors.As(err, &noMatch):
		return ": wrong passphrase or identity"
	case strings.Contains(err.Error(), "header"):
		return ": not an age-encrypted file, or its header is damaged"
	}
	return ": the payload does not authenticate"
}

type restore struct {
	dst   Target
	force bool
	buf   []byte
	apps  []*restoreApp

	// cleanup: what was staged, and the directories made for it.
	staged  []string
	madeDir []string
}

type restoreApp struct {
	hdr    headerApp
	app    App // as Target.Check returned it: the volumes' directories on this box
	record bool
	key    []byte
	vols   map[string]*stagedVolume
	images map[string]*stagedImage
	rep    AppReport
}

// stagedImage is an image of the backup: staged in a file when this box lacks it (want), read
// and verified all the same when not.
type stagedImage struct {
	want    bool
	path    string
	file    *os.File
	chunks  int
	started bool
	bytes   int64
}

type stagedVolume struct {
	vol     Volume
	path    string // the staging directory (files) or file (dump)
	x       *extractor
	dump    *os.File
	chunks  int
	started bool
	rep     VolumeReport
}

// read reads and verifies the whole stream, staging the volumes.
func (rs *restore) read(ctx context.Context, src io.Reader) error {
	tr := tar.NewReader(src)
	h, err := readHeader(tr)
	if err != nil {
		return err
	}
	for _, a := range h.Apps {
		rs.apps = append(rs.apps, &restoreApp{hdr: a, vols: map[string]*stagedVolume{}, images: map[string]*stagedImage{}})
	}
	counted, end, apps, err := rs.readEntries(ctx, tr)
	if err != nil {
		return err
	}
	// Read age's stream to its end: its last chunk authenticates the end of the backup.
	if _, err := io.Copy(io.Discard, src); err != nil {
		return err
	}
	if err := rs.checkComplete(counted, end, apps); err != nil {
		return err
	}
	if err := rs.finishVolumes(); err != nil {
		return err
	}
	return rs.syncStaged()
}

// readEntries reads the archive's entries after its header, each app's in turn, staging its
// volumes. It answers what it counted, the trailer (nil when missing) and how many apps it read.
func (rs *restore) readEntries(ctx context.Context, tr *tar.Reader) (counted trailer, end *trailer, apps int, _ error) {
	cur := -1
	for {
		if err := ctx.Err(); err != nil {
			return counted, nil, 0, err
		}
		e, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return counted, nil, 0, errkind.BadInputf("not a valid backup archive: %v", err)
		}
		if end != nil {
			return counted, nil, 0, errkind.BadInputf("entry %q after %s", e.Name, trailerName)
		}
		if e.Name == trailerName {
			t, err := readJSON[trailer](tr, e)
			if err != nil {
				return counted, nil, 0, err
			}
			end = &t
			continue
		}
		counted.Entries++
		if e.Typeflag == tar.TypeReg {
			counted.Bytes += e.Size
		}
		if cur+1 < len(rs.apps) && e.Name == recordName(rs.apps[cur+1].hdr.Name) {
			cur++
			if err := rs.startApp(ctx, rs.apps[cur], tr, e); err != nil {
				return counted, nil, 0, err
			}
			continue
		}
		if cur < 0 || !strings.HasPrefix(e.Name, appPrefix(rs.apps[cur].hdr.Name)) {
			return counted, nil, 0, errkind.BadInputf("unexpected entry %q", e.Name)
		}
		if err := rs.appEntry(rs.apps[cur], tr, e); err != nil {
			return counted, nil, 0, err
		}
	}
	return counted, end, cur + 1, nil
}

// checkComplete fails unless the archive ended with its trailer, held every app its header
// lists, and the trailer's counts are what was read.
func (rs *restore) checkComplete(counted trailer, end *trailer, apps int) error {
	if end == nil {
		return errkind.BadInputf("the backup has no %s: it was cut short", trailerName)
	}
	if apps != len(rs.apps) {
		return errkind.BadInputf("app %q is listed but not in the backup", rs.apps[apps].hdr.Name)
	}
	counted.Apps = apps
	if counted != *end {
		return errkind.BadInputf("the backup's trailer says %+v, its entries are %+v", *end, counted)
	}
	return nil
}

// finishVolumes checks that every volume listed was in the archive, finishes and syncs what was
// staged of each, and fills in the apps' volume reports.
func (rs *restore) finishVolumes() error {
	for _, a := range rs.apps {
		for _, v := range a.hdr.Volumes {
			if sv := a.vols[v.Name]; sv == nil || !sv.started {
				return errkind.BadInputf("app %q: volume %q is listed but not in the backup", a.hdr.Name, v.Name)
			}
		}
		for _, id := range a.hdr.Images {
			si := a.images[id]
			if !si.started {
				return errkind.BadInputf("app %q: image %s is listed but not in the backup", a.hdr.Name, id)
			}
			if si.file != nil {
				if err := si.file.Sync(); err != nil {
					return err
				}
				a.rep.Images = append(a.rep.Images, ImageReport{ID: id, Bytes: si.bytes})
			}
		}
		for _, sv := range a.vols {
			if sv.x != nil {
				if err := sv.x.finish(); err != nil {
					return err
				}
				sv.x.close()
				sv.x = nil
			}
			if sv.dump != nil {
				if err := sv.dump.Sync(); err != nil {
					return err
				}
			}
			a.rep.Volumes = append(a.rep.Volumes, sv.rep)
		}
		slices.SortFunc(a.rep.Volumes, func(x, y VolumeReport) int { return strings.Compare(x.Name, y.Name) })
	}
	return nil
}

// syncStaged makes what is staged reach the disk before it is swapped in (one syncfs per file
// system).
func (rs *restore) syncStaged() error {
	synced := map[uint64]bool{}
	for _, p := range rs.staged {
		if err := syncFS(p, synced); err != nil {
			return err
		}
	}
	return nil
}

// syncFS flushes the file system holding p, unless done already (synced, by device).
func syncFS(p string, synced map[uint64]bool) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return err
	}
	if synced[st.Dev] {
		return nil
	}
	synced[st.Dev] = true
	if err := unix.Syncfs(int(f.Fd())); err != nil {
		return fmt.Errorf("syncfs %s: %w", p, err)
	}
	return nil
}

func readHeader(tr *tar.Reader) (header, error) {
	e, err := tr.Next()
	if err != nil || e.Name != headerName {
		return header{}, errkind.BadInputf("not an onionpod app backup (no %s first)", headerName)
	}
	h, err := readJSON[header](tr, e)
	if err != nil {
		return header{}, err
	}
	return h, h.check()
}

// readJSON decodes a small JSON entry strictly (unknown fields refused).
func readJSON[T any](tr *tar.Reader, e *tar.Header) (T, error) {
	var v T
	if e.Typeflag != tar.TypeReg || e.Size > maxHeaderBytes {
		return v, errkind.BadInputf("%s: not a small file", e.Name)
	}
	b, err := io.ReadAll(tr)
	if err != nil {
		return v, err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		return v, errkind.BadInputf("%s: %v", e.Name, err)
	}
	return v, nil
}

func readSmall(tr *tar.Reader, e *tar.Header, limit int64) ([]byte, error) {
	if e.Typeflag != tar.TypeReg || e.Size > limit {
		return nil, errkind.BadInputf("%s: not a file of at most %d bytes", e.Name, limit)
	}
	return io.ReadAll(tr)
}

// startApp reads an app's record and asks the box whether (and where) it can be restored.
func (rs *restore) startApp(ctx context.Context, a *restoreApp, tr *tar.Reader, e *tar.Header) error {
	rec, err := readSmall(tr, e, maxRecordBytes)
	if err != nil {
		return err
	}
	want := App{Name: a.hdr.Name, Record: rec, Images: a.hdr.Images}
	for _, v := range a.hdr.Volumes {
		want.Volumes = append(want.Volumes, Volume{Name: v.Name, Dump: v.Dump})
	}
	got, err := rs.dst.Check(ctx, want, rs.force)
	if err != nil {
		return fmt.Errorf("app %q: %w", a.hdr.Name, err)
	}
	a.app, a.record = got, true
	a.app.Record = rec
	a.rep = AppReport{Name: a.hdr.Name, Address: a.hdr.Address, Replaced: got.Replaces}
	for _, hv := range a.hdr.Volumes {
		i := slices.IndexFunc(got.Volumes, func(v Volume) bool { return v.Name == hv.Name })
		if i < 0 || got.Volumes[i].Dump != hv.Dump || !filepath.IsAbs(got.Volumes[i].Dir) {
			return fmt.Errorf("app %q: volume %q of the backup is not a volume of its record here: %w", a.hdr.Name, hv.Name, ErrBadInput)
		}
		a.vols[hv.Name] = &stagedVolume{vol: got.Volumes[i], rep: VolumeReport{Name: hv.Name, Dump: hv.Dump}}
	}
	for _, id := range a.hdr.Images {
		a.images[id] = &stagedImage{}
	}
	for _, id := range got.Images {
		si := a.images[id]
		if si == nil || si.want || !filepath.IsAbs(got.ImageDir) {
			return fmt.Errorf("app %q: image %s to load is not an image of the backup, or has no staging directory: %w", a.hdr.Name, id, ErrBadInput)
		}
		si.want = true
	}
	return nil
}

// appEntry stages one entry of the current app: its key, a volume's entry, a dump's chunk.
func (rs *restore) appEntry(a *restoreApp, tr *tar.Reader, e *tar.Header) error {
	name := a.hdr.Name
	if e.Name == keyName(name) {
		if a.key != nil || a.hdr.Address == "" {
			return errkind.BadInputf("unexpected entry %q", e.Name)
		}
		b, err := readSmall(tr, e, maxKeyBytes)
		if err != nil {
			return err
		}
		a.key = b
		return nil
	}
	for _, id := range a.hdr.Images {
		if strings.HasPrefix(e.Name, imagePrefix(name, id)) {
			return rs.imageChunk(a, a.images[id], tr, e, imageChunkName(name, id, a.images[id].chunks))
		}
	}
	for _, hv := range a.hdr.Volumes {
		sv := a.vols[hv.Name]
		if hv.Dump && strings.HasPrefix(e.Name, dumpPrefix(name, hv.Name)) {
			return rs.dumpChunk(sv, tr, e, dumpChunkName(name, hv.Name, sv.chunks))
		}
		if !hv.Dump && strings.HasPrefix(e.Name, volumePrefix(name, hv.Name)) {
			if !sv.started {
				if e.Name != volumePrefix(name, hv.Name) || e.Typeflag != tar.TypeDir {
					return errkind.BadInputf("entry %q before its volume's directory", e.Name)
				}
				if err := rs.stageVolume(sv, volumePrefix(name, hv.Name)); err != nil {
					return err
				}
			}
			return sv.x.entry(e, tr)
		}
	}
	return errkind.BadInputf("unexpected entry %q", e.Name)
}

func (rs *restore) dumpChunk(sv *stagedVolume, tr *tar.Reader, e *tar.Header, want string) error {
	if e.Name != want || e.Typeflag != tar.TypeReg {
		return errkind.BadInputf("entry %q: want %s", e.Name, want)
	}
	if !sv.started {
		if err := rs.stageDump(sv); err != nil {
			return err
		}
	}
	n, err := io.CopyBuffer(sv.dump, tr, rs.buf)
	if err != nil {
		return err
	}
	sv.chunks++
	sv.rep.Bytes += n
	return nil
}

// imageChunk stages a chunk of an image this box lacks, or reads it to verify it.
func (rs *restore) imageChunk(a *restoreApp, si *stagedImage, tr *tar.Reader, e *tar.Header, want string) error {
	if e.Name != want || e.Typeflag != tar.TypeReg {
		return errkind.BadInputf("entry %q: want %s", e.Name, want)
	}
	var w io.Writer = io.Discard
	if si.want {
		if !si.started {
			if err := rs.mkdirAll(a.app.ImageDir); err != nil {
				return err
			}
			f, err := os.CreateTemp(a.app.ImageDir, ".image-")
			if err != nil {
				return err
			}
			rs.staged = append(rs.staged, f.Name())
			si.path, si.file = f.Name(), f
		}
		w = si.file
	}
	si.started = true
	n, err := io.CopyBuffer(w, tr, rs.buf)
	if err != nil {
		return err
	}
	si.chunks++
	si.bytes += n
	return nil
}

// stageVolume makes the staging directory of a volume beside its final place (one file system:
// the swap is a rename).
func (rs *restore) stageVolume(sv *stagedVolume, prefix string) error {
	parent := filepath.Dir(sv.vol.Dir)
	if err := rs.mkdirAll(parent); err != nil {
		return err
	}
	dir, err := os.MkdirTemp(parent, "."+filepath.Base(sv.vol.Dir)+".restore-")
	if err != nil {
		return err
	}
	rs.staged = append(rs.staged, dir)
	x, err := newExtractor(dir, prefix, &sv.rep, rs.buf)
	if err != nil {
		return err
	}
	sv.path, sv.x, sv.started = dir, x, true
	return nil
}

func (rs *restore) stageDump(sv *stagedVolume) error {
	parent := filepath.Dir(sv.vol.Dir)
	if err := rs.mkdirAll(parent); err != nil {
		return err
	}
	f, err := os.CreateTemp(parent, "."+filepath.Base(sv.vol.Dir)+".dump-")
	if err != nil {
		return err
	}
	rs.staged = append(rs.staged, f.Name())
	sv.path, sv.dump, sv.started = f.Name(), f, true
	return nil
}

// mkdirAll makes dir and its missing parents (0700, root's), remembering them: a restore that
// fails removes them again.
func (rs *restore) mkdirAll(dir string) error {
	var missing []string
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Lstat(d); err == nil {
			break
		} else if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		missing = append(missing, d)
		if d == filepath.Dir(d) {
			break
		}
	}
	for _, d := range slices.Backward(missing) {
		if err := os.Mkdir(d, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
		rs.madeDir = append(rs.madeDir, d)
	}
	return nil
}

// cleanup removes what is still staged (after a failure, or the swapped-out old data after
// success) and the directories made for it, when they are empty.
func (rs *restore) cleanup() {
	for _, a := range rs.apps {
		for _, sv := range a.vols {
			if sv.x != nil {
				sv.x.close()
			}
			if sv.dump != nil {
				sv.dump.Close()
			}
		}
		for _, si := range a.images {
			if si.file != nil {
				si.file.Close()
			}
		}
	}
	for _, p := range rs.staged {
		os.RemoveAll(p)
	}
	for _, d := range slices.Backward(rs.madeDir) {
		os.Remove(d) // only if empty
	}
}

func (rs *restore) reports() []AppReport {
	var out []AppReport
	for _, a := range rs.apps {
		out = append(out, a.rep)
	}
	return out
}

// undoStack runs undo steps in reverse order.
type undoStack []func(context.Context) error

func (u *undoStack) push(f func(context.Context) error) { *u = append(*u, f) }

func (u undoStack) run(ctx context.Context) error {
	var errs []error
	for _, f := range slices.Backward(u) {
		if err := f(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// commit puts every verified app in place, all or nothing: with the apps quiesced, their keys,
// their volumes (swapped with what the box had, which is removed only at the end), their
// records; then the apps run and their dumps are loaded. A failure undoes every step and lets
// the box's apps run as they were.
func (rs *restore) commit(ctx context.Context, keys Keys) (err error) {
	ctx = context.WithoutCancel(ctx) // half a commit is worse than a late one
	var undo undoStack
	quiesce := func() (func(context.Context) error, error) {
		var resumes undoStack
		for _, a := range rs.apps {
			resume, err := rs.dst.Quiesce(ctx, a.hdr.Name)
			if err != nil {
				return resumes.run, fmt.Errorf("app %q: quiesce: %w", a.hdr.Name, err)
			}
			resumes.push(resume)
		}
		return resumes.run, nil
	}
	resume, err := quiesce()
	if err != nil {
		return errors.Join(fmt.Errorf("nothing written: %w", err), resume(ctx))
	}
	rollback := func(err error) error {
		if uerr := undo.run(ctx); uerr != nil {
			err = errors.Join(err, fmt.Errorf("undoing the restore: %w", uerr))
		} else {
			err = fmt.Errorf("nothing kept: %w", err)
		}
		return errors.Join(err, resume(ctx))
	}
	for _, a := range rs.apps {
		if err := rs.commitApp(ctx, a, keys, &undo); err != nil {
			return rollback(fmt.Errorf("app %q: %w", a.hdr.Name, err))
		}
	}
	if err := resume(ctx); err != nil {
		return rollback(fmt.Errorf("resume: %w", err))
	}
	for _, a := range rs.apps {
		for _, sv := range a.vols {
			if !sv.vol.Dump {
				continue
			}
			if _, err := sv.dump.Seek(0, io.SeekStart); err != nil {
				return rollback(err)
			}
			if err := rs.dst.Load(ctx, a.hdr.Name, sv.vol.Name, sv.dump); err != nil {
				// The apps run: quiesce them again to undo.
				err = fmt.Errorf("app %q: loading the dump of volume %q: %w", a.hdr.Name, sv.vol.Name, err)
				var qerr error
				if resume, qerr = quiesce(); qerr != nil {
					return errors.Join(err, qerr, resume(ctx))
				}
				return rollback(err)
			}
		}
	}
	return nil
}

func (rs *restore) commitApp(ctx context.Context, a *restoreApp, keys Keys, undo *undoStack) error {
	// Images first: an image no app runs is pruned, nothing to undo.
	for _, id := range a.hdr.Images {
		si := a.images[id]
		if !si.want {
			continue
		}
		if _, err := si.file.Seek(0, io.SeekStart); err != nil {
			return err
		}
		if err := rs.dst.LoadImage(ctx, id, si.file); err != nil {
			return fmt.Errorf("image %s: %w", id, err)
		}
	}
	if a.key != nil {
		addr, undoKey, err := keys.Restore(bytes.NewReader(a.key), a.hdr.Name, rs.force)
		if err != nil {
			return fmt.Errorf("onion key: %w", err)
		}
		undo.push(func(context.Context) error { return undoKey() })
		if addr != a.hdr.Address {
			return fmt.Errorf("onion key: the key is %s, the backup's header says %s: %w", addr, a.hdr.Address, ErrBadInput)
		}
	}
	for _, sv := range a.vols {
		if sv.vol.Dump {
			continue
		}
		undoSwap, err := swapIn(sv.path, sv.vol.Dir)
		if err != nil {
			return fmt.Errorf("volume %q: %w", sv.vol.Name, err)
		}
		undo.push(func(context.Context) error { return undoSwap() })
	}
	undoCommit, err := rs.dst.Commit(ctx, a.app)
	if err != nil {
		return fmt.Errorf("record: %w", err)
	}
	undo.push(undoCommit)
	return nil
}

// swapIn puts the staged directory at dir: exchanged with what dir holds (which is then at
// staged, removed with the staging at the end), or renamed there when dir does not exist.
func swapIn(staged, dir string) (undo func() error, err error) {
	err = unix.Renameat2(unix.AT_FDCWD, staged, unix.AT_FDCWD, dir, unix.RENAME_EXCHANGE)
	if err == nil {
		return func() error {
			return unix.Renameat2(unix.AT_FDCWD, staged, unix.AT_FDCWD, dir, unix.RENAME_EXCHANGE)
		}, nil
	}
	if !errors.Is(err, unix.ENOENT) {
		return nil, fmt.Errorf("swap %s: %w", dir, err)
	}
	if err := unix.Renameat2(unix.AT_FDCWD, staged, unix.AT_FDCWD, dir, unix.RENAME_NOREPLACE); err != nil {
		return nil, fmt.Errorf("rename into %s: %w", dir, err)
	}
	return func() error { return os.Rename(dir, staged) }, nil
}
