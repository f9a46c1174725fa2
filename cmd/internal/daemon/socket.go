package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"time"
)

// listenSocket opens the LocalAPI socket with mode 0660, owned by root and the given group ("" =
// root's group). A stale socket file is replaced; a live one means another daemon runs.
func listenSocket(path, group string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("api: %w", err)
	}
	if _, err := os.Stat(path); err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		conn, err := (&net.Dialer{}).DialContext(ctx, "unix", path)
		cancel()
		if err == nil {
			conn.Close()
			return nil, fmt.Errorf("api: another onionpod daemon is listening on %s", path)
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("api: remove stale socket: %w", err)
		}
	}
	gid := 0
	if group != "" {
		g, err := user.LookupGroup(group)
		if err != nil {
			return nil, fmt.Errorf("api: group %q: %w", group, err)
		}
		gid, _ = strconv.Atoi(g.Gid)
	}
	// Create the socket with no access at all, then open it up: nobody can connect in between.
	ln, err := listenUnixPrivate(path)
	if err != nil {
		return nil, fmt.Errorf("api: %w", err)
	}
	if err := os.Chown(path, 0, gid); err != nil {
		ln.Close()
		return nil, fmt.Errorf("api: %w", err)
	}
	if err := os.Chmod(path, 0o660); err != nil {
		ln.Close()
		return nil, fmt.Errorf("api: %w", err)
	}
	return ln, nil
}
