package daemon

import (
	"context"
	"io"

	"github.com/onionpod/onionpod/cmd/internal/api"
	"github.com/onionpod/onionpod/pods"
)

// maxUploadBytes bounds an image archive sent to the daemon: the image store's budget for one
// image's layers (16 GiB) and room for the archive's headers, configs and manifests.
const maxUploadBytes = 16<<30 + 64<<20

// archiveLoader loads an image archive from a stream: an archive the CLI read as the user who
// named it and sent over the API. The daemon never opens a path a user names.
// (*pods.ImageStore).LoadArchiveStream is it.
type archiveLoader interface {
	LoadArchiveStream(ctx context.Context, r io.Reader, progress io.Writer) (*pods.Image, error)
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
