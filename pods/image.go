package pods

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/onionpod/onionpod/internal/errkind"
	"github.com/onionpod/onionpod/internal/genvalue"
)

// ImageStore keeps images on disk:
//
//	Dir/layers/HEX      layer blobs as fetched (compressed or not), named by their DiffID
//	                    (sha256 of the uncompressed tar): shared by every image that has them
//	Dir/images/HEX.json an image's record, named by its ID (the digest of its config)
//	Dir/refs/HEX.json   which image ID a reference points to (HEX = sha256 of the reference)
//	Dir/roots/HEX/      the image's root file system, unpacked once, read-only for pods
//	Dir/roots/empty/    the empty root of static-site pods
//	Dir/tmp/            work in progress; a failure leaves nothing elsewhere
type ImageStore struct {
	Dir string
	// Insecure allows plain-HTTP registries (go-containerregistry already uses HTTP for loopback
	// and RFC 1918 registries without it).
	Insecure bool
	// InsecureRegistries are registries ("host:port", "[2001:db8::1]:5000", as references
	// name them) spoken to over plain HTTP when HTTPS fails: a registry on the LAN without a
	// certificate.
	InsecureRegistries []string
	// MaxImageBytes bounds the uncompressed size of an image's layers (default 16 GiB).
	MaxImageBytes int64
}

// Image is an image ready to run.
type Image struct {
	Ref    string // the reference it was pulled or loaded as
	Digest string // the image ID ("sha256:..."): the digest of its config, the same however it came
	// RepoDigest is the digest of the manifest (or index) Ref named at its registry when it was
	// pulled ("sha256:..."): what Resolve answers while the registry still has that image. Empty
	// for an image loaded from an archive or looked up by its ID.
	RepoDigest string
	Root       string // its unpacked root file system (never write to it)
	Config     ImageConfig
}

// ImageConfig is what the image says about how to run it.
type ImageConfig struct {
	Entrypoint   []string `json:"entrypoint,omitempty"`
	Cmd          []string `json:"cmd,omitempty"`
	Env          []string `json:"env,omitempty"`
	WorkingDir   string   `json:"working_dir,omitempty"`
	User         string   `json:"user,omitempty"` // informative: pods always run as a dynamic user
	ExposedPorts []uint16 `json:"exposed_ports,omitempty"`
	// StopSignal stops the container (KillSignal=), as NormalizeSignal names it; "" (none, or
	// one systemd does not know by name) is SIGTERM.
	StopSignal string `json:"stop_signal,omitempty"`
}

type imageRecord struct {
	ID      string      `json:"id"`
	DiffIDs []string    `json:"diff_ids"`
	Config  ImageConfig `json:"config"`
}

type refRecord struct {
	Ref    string `json:"ref"`
	ID     string `json:"id"`
	Digest string `json:"digest,omitempty"` // the manifest digest at the registry (pulled images)
}

// Pull fetches ref from its registry (credentials from the docker config, as `docker login`
// writes them), skipping layers already cached, and unpacks it unless already unpacked. It always
// asks the registry what ref names now: a tag re-pushed since the last pull gives the new image
// (the old one stays in the store under its ID until Prune). A progress bar goes to progress
// when it is a terminal. A malformed reference wraps ErrBadInput.
func (s *ImageStore) Pull(ctx context.Context, ref string, progress io.Writer) (*Image, error) {
	r, err := s.parseRef(ref)
	if err != nil {
		return nil, err
	}
	return s.pull(ctx, r.Name(), r, progress)
}

// pull fetches the image at names and records it in the store as ref, with the digest of the
// manifest (or index) at was at the registry.
func (s *ImageStore) pull(ctx context.Context, ref string, at name.Reference, progress io.Writer) (*Image, error) {
	desc, err := remote.Get(at, s.remoteOptions(ctx)...)
	if err != nil {
		return nil, fmt.Errorf("pods: pull %q: %w", ref, err)
	}
	img, err := desc.Image() // an index resolves to the image of this platform
	if err != nil {
		return nil, fmt.Errorf("pods: pull %q: %w", ref, err)
	}
	unlock, err := s.lock(ctx, false)
	if err != nil {
		return nil, fmt.Errorf("pods: pull %q: %w", ref, err)
	}
	defer unlock()
	return s.importImage(ctx, ref, desc.Digest.String(), img, compressedBlobs, progress)
}

func (s *ImageStore) parseRef(ref string) (name.Reference, error) {
	var opts []name.Option
	if s.Insecure {
		opts = append(opts, name.Insecure)
	}
	r, err := name.ParseReference(ref, opts...)
	if err != nil {
		return nil, errkind.BadInputf("pods: pull %q: %w", ref, err)
	}
	if !s.Insecure && slices.Contains(s.InsecureRegistries, r.Context().RegistryStr()) {
		return name.ParseReference(ref, name.Insecure)
	}
	return r, nil
}

func (s *ImageStore) remoteOptions(ctx context.Context) []remote.Option {
	return []remote.Option{
		remote.WithContext(ctx),
		remote.WithAuthFromKeychain(authn.DefaultKeychain),
		remote.WithPlatform(v1.Platform{OS: "linux", Architecture: runtime.GOARCH}),
	}
}

// Image returns an image already in the store by the reference it was pulled or loaded as, or by
// its ID ("sha256:..."); ErrNotFound otherwise. It never contacts a registry.
func (s *ImageStore) Image(ref string) (*Image, error) {
	id := ref
	var rr refRecord
	if !strings.HasPrefix(ref, "sha256:") {
		if err := readJSON(filepath.Join(s.Dir, "refs", refKey(canonicalRef(ref))+".json"), &rr); err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil, fmt.Errorf("pods: image %q: %w", ref, ErrNotFound)
			}
			return nil, fmt.Errorf("pods: image %q: %w", ref, err)
		}
		id = rr.ID
	}
	img, err := s.cached(id, ref)
	if err != nil {
		return nil, err
	}
	if img == nil {
		return nil, fmt.Errorf("pods: image %q: %w", ref, ErrNotFound)
	}
	img.RepoDigest = rr.Digest
	hexID, _ := idHex(img.Digest)
	if st, err := os.Stat(filepath.Join(s.Dir, "images", hexID+".json")); err == nil && time.Since(st.ModTime()) > time.Minute {
		s.touch(hexID) // LastUsed, to the minute
	}
	return img, nil
}

// canonicalRef names a registry reference the way Pull records it ("busybox" and
// "index.docker.io/library/busybox:latest" are the same); other references stay as they are.
func canonicalRef(ref string) string {
	if strings.HasPrefix(ref, "archive:") || strings.HasPrefix(ref, "layout:") {
		return ref
	}
	if r, err := name.ParseReference(ref); err == nil {
		return r.Name()
	}
	return ref
}

func refKey(ref string) string {
	sum := sha256.Sum256([]byte(ref))
	return hex.EncodeToString(sum[:])
}

// cached returns the unpacked image id, or nil when it is not (completely) in the store.
func (s *ImageStore) cached(id, ref string) (*Image, error) {
	hexID, err := idHex(id)
	if err != nil {
		return nil, err
	}
	var rec imageRecord
	if err := readJSON(filepath.Join(s.Dir, "images", hexID+".json"), &rec); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("pods: image record %s: %w", id, err)
	}
	if err := rec.Config.check(); err != nil {
		return nil, fmt.Errorf("pods: image %s: %w", id, err)
	}
	root := filepath.Join(s.Dir, "roots", hexID)
	if st, err := os.Stat(root); err != nil || !st.IsDir() {
		return nil, nil
	}
	return &Image{Ref: ref, Digest: rec.ID, Root: root, Config: rec.Config}, nil
}

func idHex(id string) (string, error) {
	h, err := v1.NewHash(id)
	if err != nil || h.Algorithm != "sha256" {
		return "", errkind.BadInputf("pods: image id %q: want sha256:HEX", id)
	}
	return h.Hex, nil
}

// importImage caches img's layers, unpacks them into a root (once per image ID) and records ref
// (with repoDigest, the manifest digest at the registry, for a pulled image).
func (s *ImageStore) importImage(ctx context.Context, ref, repoDigest string, img v1.Image, src layerSource, progress io.Writer) (*Image, error) {
	fail := func(err error) (*Image, error) { return nil, fmt.Errorf("pods: image %q: %w", ref, err) }
	if err := s.makeDirs(); err != nil {
		return fail(err)
	}
	cfgName, err := img.ConfigName()
	if err != nil {
		return fail(err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return fail(err)
	}
	id := cfgName.String()
	if ref == "" { // an archive without a tag or a name annotation
		ref = id
	}
	config, err := imageConfig(cfg)
	if err != nil {
		return fail(err)
	}
	hexID, _ := idHex(id)
	if done, err := s.cached(id, ref); err != nil || done != nil {
		if err == nil {
			err = s.saveConfig(hexID, img) // kept by no older onionpod
		}
		if err == nil && !reflect.DeepEqual(done.Config, config) {
			// Recorded by an older onionpod, which kept less of the config (StopSignal).
			err = s.rewriteConfig(id, config)
			done.Config = config
		}
		if err == nil {
			err = s.recordRef(ref, id, repoDigest)
		}
		if err != nil {
			return fail(err)
		}
		s.touch(hexID) // used now: a prune already waiting keeps it
		done.RepoDigest = repoDigest
		return done, nil
	}

	layers, err := img.Layers()
	if err != nil {
		return fail(err)
	}
	if err := s.fetchLayers(ctx, ref, layers, cfg.RootFS.DiffIDs, src, progress); err != nil {
		return fail(err)
	}
	diffIDs := make([]string, len(layers))
	for i, d := range cfg.RootFS.DiffIDs {
		diffIDs[i] = d.String()
	}

	// Unpack.
	if err := s.unpack(ctx, id, cfg.RootFS.DiffIDs, progress); err != nil {
		return fail(err)
	}
	rec := imageRecord{ID: id, DiffIDs: diffIDs, Config: config}
	if err := s.saveConfig(hexID, img); err != nil { // before the record: a recorded image has it
		return fail(err)
	}
	if err := writeJSON(filepath.Join(s.Dir, "images", hexID+".json"), rec); err != nil {
		return fail(err)
	}
	s.touch(hexID) // an unchanged record is not rewritten: mark it used all the same
	if err := s.recordRef(ref, id, repoDigest); err != nil {
		return fail(err)
	}
	return &Image{Ref: ref, Digest: id, RepoDigest: repoDigest, Root: filepath.Join(s.Dir, "roots", hexID), Config: rec.Config}, nil
}

// rewriteConfig rewrites the config kept in an image's record.
func (s *ImageStore) rewriteConfig(id string, config ImageConfig) error {
	hexID, err := idHex(id)
	if err != nil {
		return err
	}
	file := filepath.Join(s.Dir, "images", hexID+".json")
	var rec imageRecord
	if err := readJSON(file, &rec); err != nil {
		return err
	}
	rec.Config = config
	return writeJSON(file, rec)
}

func (s *ImageStore) makeDirs() error {
	for _, d := range []string{"layers", "images", "refs", "roots", "tmp"} {
		if err := os.MkdirAll(filepath.Join(s.Dir, d), 0o700); err != nil {
			return err
		}
	}
	// Pods run as dynamic users: they must be able to reach their roots.
	for _, d := range []string{"", "roots"} {
		if err := os.Chmod(filepath.Join(s.Dir, d), 0o711); err != nil {
			return err
		}
	}
	return nil
}

func (s *ImageStore) tempDir(purpose string) (string, error) {
	if err := s.makeDirs(); err != nil {
		return "", fmt.Errorf("pods: %w", err)
	}
	d, err := os.MkdirTemp(filepath.Join(s.Dir, "tmp"), purpose+"-")
	if err != nil {
		return "", fmt.Errorf("pods: %w", err)
	}
	return d, nil
}

// recordRef records which image ref names; an image known by its ID alone needs no record.
func (s *ImageStore) recordRef(ref, id, repoDigest string) error {
	if ref == id {
		return nil
	}
	ref = canonicalRef(ref)
	return writeJSON(filepath.Join(s.Dir, "refs", refKey(ref)+".json"), refRecord{Ref: ref, ID: id, Digest: repoDigest})
}

// imageConfig takes what onionpod uses from an image's config, checked (see ImageConfig.check).
func imageConfig(cfg *v1.ConfigFile) (ImageConfig, error) {
	c := cfg.Config
	out := ImageConfig{
		Entrypoint: c.Entrypoint,
		Cmd:        c.Cmd,
		Env:        c.Env,
		WorkingDir: c.WorkingDir,
		User:       c.User,
		StopSignal: NormalizeSignal(c.StopSignal),
	}
	if path.IsAbs(out.WorkingDir) {
		out.WorkingDir = path.Clean(out.WorkingDir) // "/app/" is "/app"
	}
	for p := range c.ExposedPorts {
		num, _, _ := strings.Cut(p, "/")
		if n, err := strconv.ParseUint(num, 10, 16); err == nil && n > 0 {
			out.ExposedPorts = append(out.ExposedPorts, uint16(n))
		}
	}
	sort.Slice(out.ExposedPorts, func(i, j int) bool { return out.ExposedPorts[i] < out.ExposedPorts[j] })
	return out, out.check()
}

// check refuses a config whose values could not be written into a unit or environment file: an
// image is hostile input, and a control character there (a carriage return in WorkingDir) would
// add a directive of its own to the pod's unit. The error names the image's field.
func (c ImageConfig) check() error {
	for _, f := range []struct {
		name   string
		values []string
	}{{"Entrypoint", c.Entrypoint}, {"Cmd", c.Cmd}, {"Env", c.Env}, {"WorkingDir", []string{c.WorkingDir}}, {"User", []string{c.User}}} {
		for _, v := range f.values {
			if err := genvalue.Check("image config "+f.name, v); err != nil {
				return err
			}
		}
	}
	if c.WorkingDir != "" {
		return genvalue.Path("image config WorkingDir", c.WorkingDir)
	}
	return nil
}

// CheckRef checks the syntax of a registry reference ("registry.example/blog:1", "busybox",
// "r.example/x@sha256:..."), without contacting anything. Errors wrap ErrBadInput.
func CheckRef(ref string) error {
	if _, err := name.ParseReference(ref); err != nil {
		return errkind.BadInputf("pods: image %q: %w", ref, err)
	}
	return nil
}
