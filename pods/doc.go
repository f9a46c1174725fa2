// Package pods runs each app as a sandboxed systemd service: OCI images (pulled from a registry,
// loaded from `docker save` or OCI archives, or from OCI layout directories) are unpacked safely,
// once, into a read-only root, and run by a persistent unit with RootDirectory=,
// NetworkNamespacePath=, DynamicUser=yes and an empty capability set. There is no per-pod
// supervisor process: systemd is the supervisor.
//
// Unit naming (all files in the unit directory, normally /etc/systemd/system):
//
//	onionpod-pod-APP.service   the app itself (enabled: WantedBy=multi-user.target)
//	onionpod-net-APP.service   its network (oneshot, RemainAfterExit), pulled in and ordered
//	                           before the pod unit by Requires=/BindsTo= + After=
//	onionpod-NAME.service      onionpod's own helper services (HostService), e.g. onionpod-tor
//
// Nothing here touches a unit whose name does not start with "onionpod-".
package pods

import (
	"errors"

	"github.com/onionpod/onionpod/internal/errkind"
)

// ErrBadInput marks errors caused by the caller's input (a bad image reference, app name, path or
// capability): the CLI maps it to exit code 2.
var ErrBadInput = errkind.BadInput

// ErrNotFound is returned for an unknown app or image.
var ErrNotFound = errkind.NotFound

// ErrHostileLayer marks an image layer that was refused because it tried to place something
// outside its root (path traversal, a symlink or hard link leading out) or was absurd.
var ErrHostileLayer = errors.New("hostile layer refused")
