package daemon

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/onionpod/onionpod/cmd/internal/api"
	"github.com/onionpod/onionpod/pods"
)

// maxUploadBytes bounds an image archive sent to the daemon: the image store's budget for one
// image's layers (16 GiB) and room for the archive's headers, configs and manifests.
const maxUploadBytes = 16<<30 + 64<<20

// archiveLoader loads an image archive from a stream: an archive the CLI read as the user who
// named it and sent over the API. The daemon never opens a path a user names.
//
// pods.(*ImageStore).LoadArchiveStream has this signature (pods branch); until it is merged,
// spoolLoader stands in for it.
type archiveLoader interface {
	LoadArchiveStream(ctx context.Context, r io.Reader, progress io.Writer) (*pods.Image, error)
}

// spoolLoader copies the stream into a file of the daemon's own (0600, in the image store) and
// loads that.
type spoolLoader struct{ images *pods.ImageStore }

func (l spoolLoader) LoadArchiveStream(ctx context.Context, r io.Reader, progress io.Writer) (*pods.Image, error) {
	dir := filepath.Join(l.images.Dir, "uploads")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("daemon: image upload: %w", err)
	}
	f, err := os.CreateTemp(dir, "upload-*.tar")
	if err != nil {
		return nil, fmt.Errorf("daemon: image upload: %w", err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	if _, err := io.Copy(f, ctxReader{ctx, r}); err != nil {
		return nil, fmt.Errorf("daemon: image upload: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("daemon: image upload: %w", err)
	}
	return l.images.LoadArchive(ctx, f.Name(), progress)
}

// ctxReader stops reading when ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// loadImage loads an archive sent by a client into the image store and says what it loaded.
func (d *Daemon) loadImage(ctx context.Context, r io.Reader) (api.ImageInfo, error) {
	img, err := d.parts.loader.LoadArchiveStream(ctx, r, io.Discard)
	if err != nil {
		return api.ImageInfo{}, err
	}
	d.log.Info("image loaded", "id", img.Digest, "ref", img.Ref)
	return api.ImageInfo{ID: img.Digest, Ref: img.Ref}, nil
}
