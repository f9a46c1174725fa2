package pods

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Prune removes every image whose ID (Image.Digest) is not in keep: its root, its record and the
// references to it, then the cached layers that no kept image uses. Pass the IDs of all images in
// use (by pods, running or not). It must not run while an image is being pulled or loaded.
func (s *ImageStore) Prune(keep []string) error {
	keepHex := map[string]bool{}
	for _, id := range keep {
		h, err := idHex(id)
		if err != nil {
			return err
		}
		keepHex[h] = true
	}
	var errs []error
	keptLayers := map[string]bool{}
	records, err := filepath.Glob(filepath.Join(s.Dir, "images", "*.json"))
	if err != nil {
		return fmt.Errorf("pods: prune: %w", err)
	}
	for _, rec := range records {
		h := strings.TrimSuffix(filepath.Base(rec), ".json")
		if keepHex[h] {
			var r imageRecord
			if err := readJSON(rec, &r); err != nil {
				errs = append(errs, err)
				continue
			}
			for _, d := range r.DiffIDs {
				if hash, err := v1.NewHash(d); err == nil {
					keptLayers[hash.Hex] = true
				}
			}
			continue
		}
		// The record goes last: a prune interrupted half-way is finished by the next one.
		if err := os.RemoveAll(filepath.Join(s.Dir, "roots", h)); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := os.Remove(rec); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	refs, _ := filepath.Glob(filepath.Join(s.Dir, "refs", "*.json"))
	for _, ref := range refs {
		var r refRecord
		if err := readJSON(ref, &r); err != nil {
			errs = append(errs, err)
			continue
		}
		if h, err := idHex(r.ID); err != nil || !keepHex[h] {
			if err := os.Remove(ref); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	layers, _ := os.ReadDir(filepath.Join(s.Dir, "layers"))
	for _, l := range layers {
		if !keptLayers[l.Name()] {
			if err := os.Remove(filepath.Join(s.Dir, "layers", l.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	// Roots without a record (an interrupted prune) go too; the static sites' empty root stays.
	roots, _ := os.ReadDir(filepath.Join(s.Dir, "roots"))
	for _, r := range roots {
		if r.Name() == "empty" || keepHex[r.Name()] {
			continue
		}
		if _, err := os.Stat(filepath.Join(s.Dir, "images", r.Name()+".json")); errors.Is(err, os.ErrNotExist) {
			if err := os.RemoveAll(filepath.Join(s.Dir, "roots", r.Name())); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("pods: prune: %w", err)
	}
	return nil
}
