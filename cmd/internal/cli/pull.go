package cli

import (
	"context"
	"fmt"
	"os"

	"github.com/onionpod/onionpod/cmd/internal/daemon"
	"github.com/onionpod/onionpod/configs"
	"github.com/onionpod/onionpod/pods"
)

// prefetch pulls an app's registry image into the box's image store with a progress bar, when
// root watches a terminal: the daemon then finds it cached. Without a terminal (scripts, the lab)
// the daemon pulls it itself, in the background. A failure here is only reported: the daemon
// tries again and its error is the one that counts. (Local archives are sent to the daemon.)
func prefetch(ctx context.Context, env *Env, cfg *configs.Config, ref string) {
	if !daemon.RegistryImage(ref) || !IsTerminal(env.Err) || os.Geteuid() != 0 {
		return
	}
	images := &pods.ImageStore{Dir: cfg.ImagesDir()}
	if _, err := images.Image(ref); err == nil {
		return // already cached
	}
	if _, err := images.Pull(ctx, ref, env.Err); err != nil {
		fmt.Fprintf(env.Err, "note: fetching %s here failed (%v); the daemon tries again\n", ref, err)
	}
}
