package cli

import (
	"context"
	"io"
	"os"

	"github.com/onionpod/onionpod/cmd/internal/api"
	"github.com/onionpod/onionpod/internal/errkind"
	"github.com/onionpod/onionpod/pods"
)

// A local image (a `docker save` tarball, an OCI archive or an OCI layout directory) is read by
// the CLI, as the user who names it, and sent to the daemon, which loads it: the daemon never
// opens a path a user names.

// sendImage sends the local image at path to the daemon and returns what it loaded as.
func sendImage(ctx context.Context, client *api.Client, path string) (api.ImageInfo, error) {
	st, err := os.Stat(path)
	if err != nil {
		return api.ImageInfo{}, errkind.BadInputf("image %s: %w", path, err)
	}
	if st.IsDir() {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		pr, pw := io.Pipe()
		go func() { pw.CloseWithError(pods.WriteLayoutArchive(ctx, pw, path)) }()
		defer pr.Close()
		return client.LoadImage(ctx, pr)
	}
	f, err := pods.OpenLocal(path)
	if err != nil {
		return api.ImageInfo{}, err
	}
	defer f.Close()
	return client.LoadImage(ctx, f)
}
