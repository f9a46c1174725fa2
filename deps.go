//go:build deps

// Package onionpod pins the module's dependencies while packages are being written.
package onionpod

import (
	_ "filippo.io/age"
	_ "github.com/BurntSushi/toml"
	_ "github.com/containernetworking/cni/libcni"
	_ "github.com/containernetworking/plugins/pkg/ns"
	_ "github.com/coreos/go-systemd/v22/dbus"
	_ "github.com/coreos/go-systemd/v22/unit"
	_ "github.com/cretz/bine/control"
	_ "github.com/cretz/bine/tor"
	_ "github.com/cretz/bine/torutil/ed25519"
	_ "github.com/godbus/dbus/v5"
	_ "github.com/google/go-containerregistry/pkg/authn"
	_ "github.com/google/go-containerregistry/pkg/registry"
	_ "github.com/google/go-containerregistry/pkg/v1/layout"
	_ "github.com/google/go-containerregistry/pkg/v1/mutate"
	_ "github.com/google/go-containerregistry/pkg/v1/remote"
	_ "github.com/google/go-containerregistry/pkg/v1/tarball"
	_ "github.com/miekg/dns"
	_ "github.com/pelletier/go-toml/v2"
	_ "github.com/rogpeppe/go-internal/testscript"
	_ "github.com/schollz/progressbar/v3"
	_ "github.com/spf13/cobra"
	_ "github.com/vishvananda/netlink"
	_ "github.com/vishvananda/netns"
	_ "golang.org/x/crypto/curve25519"
	_ "golang.org/x/crypto/sha3"
	_ "golang.org/x/sys/unix"
	_ "golang.org/x/term"
)
