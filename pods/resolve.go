package pods

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Resolve asks ref's registry which manifest ref names now and returns its digest
// ("sha256:...", an index's digest for a multi-platform image): one HEAD request for the
// manifest (a GET when the registry gives no digest for HEAD), no layer fetched. A reference by
// digest resolves to itself without contacting anything. A malformed reference wraps
// ErrBadInput.
func (s *ImageStore) Resolve(ctx context.Context, ref string) (string, error) {
	r, err := s.parseRef(ref)
	if err != nil {
		return "", err
	}
	if d, ok := r.(name.Digest); ok {
		return d.DigestStr(), nil
	}
	opts := s.remoteOptions(ctx)
	desc, err := remote.Head(r, opts...)
	if err != nil && ctx.Err() == nil {
		// Some registries answer HEAD without Docker-Content-Digest (or not at all).
		full, gerr := remote.Get(r, opts...)
		if gerr != nil {
			return "", fmt.Errorf("pods: resolve %q: %w", ref, errors.Join(err, gerr))
		}
		return full.Digest.String(), nil
	}
	if err != nil {
		return "", fmt.Errorf("pods: resolve %q: %w", ref, err)
	}
	return desc.Digest.String(), nil
}

// Refresh brings the store's image of ref up to date with its registry and returns it: when
// the registry (Resolve) names the manifest the store already has for ref, nothing more is
// fetched and changed is false; otherwise the image at that digest is pulled (only the layers
// the store does not have, with a progress bar on progress when it is a terminal) and recorded
// as ref. changed says whether ref now names another image (another image ID) than before. The
// image ref named before stays in the store under its ID (Image("sha256:...")), for a
// rollback, until a Prune that does not keep it.
func (s *ImageStore) Refresh(ctx context.Context, ref string, progress io.Writer) (img *Image, changed bool, err error) {
	r, err := s.parseRef(ref)
	if err != nil {
		return nil, false, err
	}
	digest, err := s.Resolve(ctx, ref)
	if err != nil {
		return nil, false, err
	}
	cur, err := s.Image(r.Name())
	switch {
	case errors.Is(err, ErrNotFound):
		cur = nil
	case err != nil:
		return nil, false, err
	case cur.RepoDigest == digest:
		return cur, false, nil
	}
	// Fetch what was resolved, by its digest: a push between the two requests cannot slip
	// another image under the digest reported.
	img, err = s.pull(ctx, r.Name(), r.Context().Digest(digest), progress)
	if err != nil {
		return nil, false, err
	}
	return img, cur == nil || cur.Digest != img.Digest, nil
}

// DigestRef names the manifest digest in ref's repository ("r.example/blog@sha256:..."): the
// image ref named when it was pulled, whatever the tag names now. A malformed ref is returned
// as it is.
func DigestRef(ref, digest string) string {
	r, err := name.ParseReference(ref)
	if err != nil {
		return ref
	}
	return r.Context().Digest(digest).String()
}
