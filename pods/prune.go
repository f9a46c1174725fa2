package pods

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"
)

// ImageInfo describes an image in the store (List).
type ImageInfo struct {
	ID       string    // the image ID ("sha256:..."), as Image.Digest
	Refs     []string  // the references it was pulled or loaded as, sorted
	Size     int64     // bytes on disk: its unpacked root plus its cached layers (shared ones too)
	LastUsed time.Time // when it was last pulled, loaded, or looked up with Image
}

// List lists the images in the store, the most recently used first.
func (s *ImageStore) List() ([]ImageInfo, error) {
	records, err := filepath.Glob(filepath.Join(s.Dir, "images", "*.json"))
	if err != nil {
		return nil, fmt.Errorf("pods: list images: %w", err)
	}
	refs := s.refsByID()
	var out []ImageInfo
	for _, rec := range records {
		var r imageRecord
		st, err := os.Stat(rec)
		if err == nil {
			err = readJSON(rec, &r)
		}
		if errors.Is(err, os.ErrNotExist) {
			continue // pruned meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("pods: list images: %w", err)
		}
		h, err := idHex(r.ID)
		if err != nil || h+".json" != filepath.Base(rec) {
			continue // not a record of ours
		}
		info := ImageInfo{ID: r.ID, Refs: refs[r.ID], LastUsed: st.ModTime(), Size: diskUsage(filepath.Join(s.Dir, "roots", h))}
		for _, d := range r.DiffIDs {
			if hash, err := v1.NewHash(d); err == nil {
				info.Size += diskUsage(s.layerPath(hash))
			}
		}
		sort.Strings(info.Refs)
		out = append(out, info)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].LastUsed.After(out[j].LastUsed) })
	return out, nil
}

// refsByID reads the reference records: image ID -> references.
func (s *ImageStore) refsByID() map[string][]string {
	out := map[string][]string{}
	files, _ := filepath.Glob(filepath.Join(s.Dir, "refs", "*.json"))
	for _, f := range files {
		var r refRecord
		if readJSON(f, &r) == nil {
			out[r.ID] = append(out[r.ID], r.Ref)
		}
	}
	return out
}

// diskUsage is the space a file or tree takes on disk (allocated blocks; each inode once).
func diskUsage(p string) int64 {
	var total int64
	seen := map[uint64]bool{}
	_ = filepath.WalkDir(p, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok && !seen[st.Ino] {
			seen[st.Ino] = true
			total += st.Blocks * 512
		}
		return nil
	})
	return total
}

// touch marks an image record used now (its modification time is the image's LastUsed).
func (s *ImageStore) touch(hexID string) {
	now := time.Now()
	_ = os.Chtimes(filepath.Join(s.Dir, "images", hexID+".json"), now, now)
}

// PruneReport says what a prune removed.
type PruneReport struct {
	Images []string // IDs of the images removed
	Layers int      // cached layers removed
	Bytes  int64    // disk space freed
}

// Prune removes every image whose ID is not in keep (pass the IDs of all images in use by pods,
// running or not): its root, its record and the references to it, then the cached layers no kept
// image uses, and whatever a crashed load left in Dir/tmp. It is safe with respect to loads, here
// or in another process: it waits (until ctx ends) for the loads in progress to finish, and
// images loaded or used after Prune was called are kept too.
func (s *ImageStore) Prune(ctx context.Context, keep []string) (PruneReport, error) {
	started := time.Now()
	keepHex, err := hexSet(keep)
	if err != nil {
		return PruneReport{}, err
	}
	unlock, err := s.lock(ctx, true)
	if err != nil {
		return PruneReport{}, fmt.Errorf("pods: prune: %w", err)
	}
	defer unlock()
	records, err := filepath.Glob(filepath.Join(s.Dir, "images", "*.json"))
	if err != nil {
		return PruneReport{}, fmt.Errorf("pods: prune: %w", err)
	}
	p := pruning{keepHex: keepHex, keptLayers: map[string]bool{}}
	for _, rec := range records {
		s.pruneImage(&p, rec, started)
	}
	s.pruneRefs(&p)
	s.pruneLayers(&p)
	s.pruneOrphanRoots(&p)
	s.clearTmp(&p)
	sort.Strings(p.report.Images)
	if err := errors.Join(p.errs...); err != nil {
		return p.report, fmt.Errorf("pods: prune: %w", err)
	}
	return p.report, nil
}

// pruning is the state of one Prune: what it keeps, what it removed, what failed.
type pruning struct {
	keepHex    map[string]bool // the hex IDs of the images kept
	keptLayers map[string]bool // the hex diff IDs of the kept images' layers
	report     PruneReport
	errs       []error
}

// hexSet is the set of the hex digests of image IDs.
func hexSet(ids []string) (map[string]bool, error) {
	set := map[string]bool{}
	for _, id := range ids {
		h, err := idHex(id)
		if err != nil {
			return nil, err
		}
		set[h] = true
	}
	return set, nil
}

// pruneImage removes the image of the record rec (its root, then the record) unless it is kept
// (or was loaded or used since started), in which case its layers are kept.
func (s *ImageStore) pruneImage(p *pruning, rec string, started time.Time) {
	h := strings.TrimSuffix(filepath.Base(rec), ".json")
	if st, err := os.Stat(rec); err == nil && !st.ModTime().Before(started) {
		p.keepHex[h] = true // loaded or used since Prune was called
	}
	if p.keepHex[h] {
		var r imageRecord
		if err := readJSON(rec, &r); err != nil {
			p.errs = append(p.errs, err)
			return
		}
		for _, d := range r.DiffIDs {
			if hash, err := v1.NewHash(d); err == nil {
				p.keptLayers[hash.Hex] = true
			}
		}
		return
	}
	// The root leaves its place in one rename (its files go with Dir/tmp, at the end of the
	// prune), and the record goes last: a prune killed half-way leaves either the whole image
	// or a record without a root, which a load of the image unpacks again. (A root removed in
	// place, half-removed by a kill, was still vouched for by its record: the image's next
	// load found it present, and its pods failed in it.)
	root := filepath.Join(s.Dir, "roots", h)
	freed := diskUsage(root)
	if err := s.discard(root); err != nil {
		p.errs = append(p.errs, err)
		return
	}
	if err := os.Remove(s.configPath(h)); err != nil && !errors.Is(err, os.ErrNotExist) {
		p.errs = append(p.errs, err)
		return
	}
	if err := os.Remove(rec); err != nil && !errors.Is(err, os.ErrNotExist) {
		p.errs = append(p.errs, err)
		return
	}
	p.report.Images = append(p.report.Images, "sha256:"+h)
	p.report.Bytes += freed
}

// discard moves dir (if it exists) into Dir/tmp, which clearTmp empties.
func (s *ImageStore) discard(dir string) error {
	tmp, err := s.tempDir("pruned")
	if err != nil {
		return err
	}
	if err := os.Rename(dir, filepath.Join(tmp, "root")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("pods: prune: %w", err)
	}
	return nil
}

// pruneRefs removes the references to images not kept.
func (s *ImageStore) pruneRefs(p *pruning) {
	for id, refs := range s.refsByID() {
		if h, err := idHex(id); err == nil && p.keepHex[h] {
			continue
		}
		for _, ref := range refs {
			if err := os.Remove(filepath.Join(s.Dir, "refs", refKey(ref)+".json")); err != nil && !errors.Is(err, os.ErrNotExist) {
				p.errs = append(p.errs, err)
			}
		}
	}
}

// pruneLayers removes the cached layers no kept image uses.
func (s *ImageStore) pruneLayers(p *pruning) {
	layers, _ := os.ReadDir(filepath.Join(s.Dir, "layers"))
	for _, l := range layers {
		if p.keptLayers[l.Name()] {
			continue
		}
		path := filepath.Join(s.Dir, "layers", l.Name())
		freed := diskUsage(path)
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			p.errs = append(p.errs, err)
			continue
		}
		p.report.Layers++
		p.report.Bytes += freed
	}
}

// pruneOrphanRoots removes the roots without a record (an interrupted prune); the static sites'
// empty root stays.
func (s *ImageStore) pruneOrphanRoots(p *pruning) {
	roots, _ := os.ReadDir(filepath.Join(s.Dir, "roots"))
	for _, r := range roots {
		if r.Name() == "empty" || p.keepHex[r.Name()] {
			continue
		}
		if _, err := os.Stat(filepath.Join(s.Dir, "images", r.Name()+".json")); errors.Is(err, os.ErrNotExist) {
			p.report.Bytes += diskUsage(filepath.Join(s.Dir, "roots", r.Name()))
			if err := s.discard(filepath.Join(s.Dir, "roots", r.Name())); err != nil {
				p.errs = append(p.errs, err)
			}
		}
	}
}

// clearTmp removes what a crashed load left in tmp: no load is in progress (the lock).
func (s *ImageStore) clearTmp(p *pruning) {
	tmp, _ := os.ReadDir(filepath.Join(s.Dir, "tmp"))
	for _, e := range tmp {
		if err := os.RemoveAll(filepath.Join(s.Dir, "tmp", e.Name())); err != nil {
			p.errs = append(p.errs, err)
		}
	}
}

// lock takes the store's lock: shared for a load (any number at once), exclusive for a prune. It
// is a flock on Dir/lock, so it also holds between processes (the CLI's pull and the daemon).
// It waits until ctx ends; the returned function releases it.
func (s *ImageStore) lock(ctx context.Context, exclusive bool) (func(), error) {
	if err := s.makeDirs(); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(s.Dir, "lock"), os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, err
	}
	how := unix.LOCK_SH
	if exclusive {
		how = unix.LOCK_EX
	}
	for {
		err := unix.Flock(int(f.Fd()), how|unix.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil // closing the file releases the lock
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, err
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}
