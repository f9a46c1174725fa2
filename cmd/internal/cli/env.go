package cli

import (
	"io"
	"os"

	"golang.org/x/term"

	"github.com/onionpod/onionpod/cmd/internal/api"
	"github.com/onionpod/onionpod/cmd/internal/store"
	"github.com/onionpod/onionpod/configs"
	"github.com/onionpod/onionpod/onion"
	"github.com/onionpod/onionpod/pods"
)

// IO holds the streams commands read and write, and whether each is a terminal (progress
// bars and prompts only ever go to terminals). Tests inject buffers and say which is a terminal.
type IO struct {
	In  io.Reader
	Out io.Writer
	Err io.Writer

	InTTY, OutTTY, ErrTTY bool
}

// SystemIO is the process's own streams.
func SystemIO() IO {
	return IO{
		In: os.Stdin, Out: os.Stdout, Err: os.Stderr,
		InTTY: IsTerminal(os.Stdin), OutTTY: IsTerminal(os.Stdout), ErrTTY: IsTerminal(os.Stderr),
	}
}

// IsTerminal reports whether w is a terminal.
func IsTerminal(w any) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// Env is what building the commands needs (cli/cli's Factory): the streams, the global flags,
// and how to reach config, state and daemon. Commands copy what they use into their options
// (the daemon client as the interface the command declares); run functions never see Env.
type Env struct {
	IO
	ConfigFlag string // --config
}

// ConfigPath is the config file in use: --config, $ONIONPOD_CONFIG or the default.
func (e *Env) ConfigPath() string { return configs.Path(e.ConfigFlag) }

// Config loads and validates the config file (the defaults when the default file does not exist).
func (e *Env) Config() (*configs.Config, error) {
	return configs.LoadOrDefault(e.ConfigPath())
}

// Client returns a LocalAPI client for the daemon of this config.
func (e *Env) Client(cfg *configs.Config) *api.Client {
	return api.NewClient(cfg.API.Socket)
}

// daemonClient returns a lazy LocalAPI client, as the interface C a command declares: the config
// is loaded when the command first needs the daemon, after its own checks of its input.
// *api.Client implements every such C (checked below, at compile time).
func daemonClient[C any](e *Env) func() (C, error) {
	return func() (C, error) {
		cfg, err := e.Config()
		if err != nil {
			var none C
			return none, err
		}
		return any(e.Client(cfg)).(C), nil
	}
}

// The interfaces of the daemon's LocalAPI the commands declare, each implemented by *api.Client.
var (
	_ lsClient        = (*api.Client)(nil)
	_ statusClient    = (*api.Client)(nil)
	_ submitClient    = (*api.Client)(nil)
	_ startClient     = (*api.Client)(nil)
	_ stopClient      = (*api.Client)(nil)
	_ rmClient        = (*api.Client)(nil)
	_ logsClient      = (*api.Client)(nil)
	_ dnsClient       = (*api.Client)(nil)
	_ imagesClient    = (*api.Client)(nil)
	_ syncClient      = (*api.Client)(nil)
	_ unexposeClient  = (*api.Client)(nil)
	_ applyClient     = (*api.Client)(nil)
	_ exportClient    = (*api.Client)(nil)
	_ dashboardClient = (*api.Client)(nil)
	_ tlsRenewClient  = (*api.Client)(nil)
	_ updateClient    = (*api.Client)(nil)
	_ backupClient    = (*api.Client)(nil)
	_ imageSender     = (*api.Client)(nil)
)

// imageRefresher returns the box's image store for an update's prefetch with a progress bar:
// only for root (the daemon's image store is root's), nil otherwise.
func (e *Env) imageRefresher() (imageRefresher, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	cfg, err := e.Config()
	if err != nil {
		return nil, err
	}
	return &pods.ImageStore{Dir: cfg.ImagesDir(), InsecureRegistries: cfg.Images.InsecureRegistries}, nil
}

// imageCache returns the box's image store for a prefetch with a progress bar: only for root
// (the daemon's image store is root's), nil otherwise.
func (e *Env) imageCache() (imageCache, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	cfg, err := e.Config()
	if err != nil {
		return nil, err
	}
	return &pods.ImageStore{Dir: cfg.ImagesDir(), InsecureRegistries: cfg.Images.InsecureRegistries}, nil
}

// keys returns the apps' onion keys (STATE_DIR/onion/APP/) under the state dir's lock.
func (e *Env) keys() (*lockedKeys, error) {
	cfg, err := e.Config()
	if err != nil {
		return nil, err
	}
	st, err := store.Open(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	return &lockedKeys{store: st, keys: &onion.KeyStore{Dir: cfg.KeysDir()}}, nil
}
