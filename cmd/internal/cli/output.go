package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/onionpod/onionpod/cmd/internal/api"
	"github.com/onionpod/onionpod/cmd/internal/store"
)

// What several commands print the same way.

// writeJSON is every command's --json: indented, one value, a final newline.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func onionURL(a api.AppStatus) string {
	if a.Onion.Address == "" {
		return ""
	}
	return "http://" + a.Onion.Address + "/"
}

// source is where an app's pod comes from: its image (and the local file it was sent from),
// its static directory, or for a held app what to do.
func source(a api.AppStatus) string {
	if held(a) {
		return "(record " + a.State + ": see onionpod status " + a.App.Name + ")"
	}
	var out []string
	for _, c := range a.App.Containers {
		src := containerSource(c)
		if len(a.App.Containers) > 1 {
			src = c.Name + "=" + src
		}
		out = append(out, src)
	}
	return strings.Join(out, " ")
}

// containerSource is what a container runs: its image reference, the local archive it was sent
// from (and the image's short ID), or its static directory.
func containerSource(c store.Container) string {
	switch {
	case c.Static != "":
		return "static:" + c.Static
	case c.Source != "":
		return c.Source + " (" + shortID(c.Image) + ")"
	}
	return c.Image
}

// containersLine says how an app's containers are, for ls: "db:healthy web:running".
func containersLine(a api.AppStatus) string {
	var out []string
	for _, c := range a.Containers {
		state := c.Unit.ActiveState
		if c.Health != nil && c.Health.State != "" && state == "active" {
			state = c.Health.State
		} else if state == "active" {
			state = c.Unit.SubState
		}
		out = append(out, c.Name+":"+orDash(state))
	}
	return strings.Join(out, " ")
}

// shortID is an image ID as docker shows it: 12 hex digits.
func shortID(id string) string {
	hex := strings.TrimPrefix(id, "sha256:")
	if len(hex) > 12 {
		hex = hex[:12]
	}
	return hex
}

// addressLines are the lines that end the human output of run, expose and status: how to reach the app.
func addressLines(a api.AppStatus) []string {
	var lines []string
	if u := onionURL(a); u != "" {
		lines = append(lines, u)
	}
	if a.DNS.Name != "" {
		scheme := "http://"
		if a.TLS != nil && a.TLS.Front { // its front answers http:// with a redirect
			scheme = "https://"
		}
		lines = append(lines, scheme+strings.TrimSuffix(a.DNS.Name, ".")+"/")
	}
	if a.Network.LAN != "" {
		lines = append(lines, "http://["+a.Network.LAN+"]/")
	}
	return lines
}

// held reports whether the app's record cannot be used (damaged or unreadable).
func held(st api.AppStatus) bool {
	return st.State == api.StateDamaged || st.State == api.StateUnreadable
}

// humanBytes is a size as people read it: 1.5 kB, 23 MB, 1.2 GB (decimal units, as df -H).
func humanBytes(n int64) string {
	if n < 1000 {
		return fmt.Sprintf("%d B", n)
	}
	f, unit := float64(n), 0
	for f >= 1000 && unit < 4 {
		f /= 1000
		unit++
	}
	format := "%.1f %s"
	if f >= 10 {
		format = "%.0f %s"
	}
	return fmt.Sprintf(format, f, []string{"B", "kB", "MB", "GB", "TB"}[unit])
}
