package cli

import (
	"io"
	"os"

	"golang.org/x/term"

	"github.com/onionpod/onionpod/cmd/internal/api"
	"github.com/onionpod/onionpod/cmd/internal/store"
	"github.com/onionpod/onionpod/configs"
)

// IO holds the streams commands read and write; tests inject buffers.
type IO struct {
	In  io.Reader
	Out io.Writer
	Err io.Writer
}

// IsTerminal reports whether w is a terminal (progress bars and prompts only go to terminals).
func IsTerminal(w any) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// Env is what every command gets: the streams, the global flags, and access to config, state and daemon.
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

// Store opens the desired-state store of the config's state dir.
func (e *Env) Store(cfg *configs.Config) (*store.Store, error) {
	return store.Open(cfg.StateDir)
}

// Client returns a LocalAPI client for the daemon of this config.
func (e *Env) Client(cfg *configs.Config) *api.Client {
	return api.NewClient(cfg.API.Socket)
}
