package cli

import (
	"context"
	"fmt"
	"os"

	"github.com/onionpod/onionpod/cmd/internal/daemon"
	"github.com/onionpod/onionpod/configs"
	"github.com/onionpod/onionpod/pods"
)

// prefetch pulls or loads an app's image into the box's image store with a progress bar, when
// the user watches a terminal: the daemon then finds it cached. Without a terminal (scripts, the
// lab) the daemon fetches it itself. A failure here is only reported: the daemon tries again
// and its error is the one that counts.
func prefetch(ctx context.Context, env *Env, cfg *configs.Config, ref string) {
	if ref == "" || !IsTerminal(env.Err) || os.Geteuid() != 0 {
		return
	}
	images := &pods.ImageStore{Dir: cfg.ImagesDir()}
	if !daemon.LocalImage(ref) {
		if _, err := images.Image(ref); err == nil {
			return // already cached
		}
	}
	if _, err := daemon.FetchImage(ctx, images, ref, env.Err); err != nil {
		fmt.Fprintf(env.Err, "note: fetching %s here failed (%v); the daemon tries again\n", ref, err)
	}
}
