// Package pods runs each app as a sandboxed systemd service: OCI images (pulled from a registry,
// loaded from `docker save` or OCI archives, or from OCI layout directories) are unpacked safely,
// once, into a read-only root, and run by a persistent unit with RootDirectory=,
// NetworkNamespacePath=, DynamicUser=yes and an empty capability set. There is no per-pod
// supervisor process: systemd is the supervisor.
//
// A pod is one or more containers sharing the app's network namespace (the database listens on
// the pod's localhost, only the app's ports are published). Unit naming (all files in the unit
// directory, normally /etc/systemd/system):
//
//	onionpod-pod-APP.service        the app's own container: the one named like the app (every
//	                                app of one container that `onionpod run` makes)
//	onionpod-pod-APP_CONTAINER.service  each other container ('_' is in no app or container name)
//	onionpod-net-APP.service        the app's network (oneshot, RemainAfterExit), pulled in and
//	                                ordered before every container by Requires= + After=; it
//	                                runs only where the pod's namespace does not exist (at boot)
//	onionpod-check-APP[_CONTAINER].service  a command health check while it runs (transient)
//	onionpod-NAME.service           onionpod's own helper services (HostService), e.g. onionpod-tor,
//	                                and onionpod-netns, the holder of the pods' namespaces
//	                                (network units want it and start after it: Spec.NetAfter),
//	                                and onionpod-networks, which makes every app's network at
//	                                boot in one process (network units start after it, and are
//	                                then skipped: Spec.NetBoot)
//
// Containers are enabled (WantedBy=multi-user.target), start after the containers their spec
// names (After= and Wants=), stop with the image's StopSignal (KillSignal=), and run as one
// dynamic user per app (DynamicUser=yes, User=onionpod-APP: AppUser), so they share the app's
// volumes (one StateDirectory=onionpod-volumes/APP/VOLUME each mounts); a container may run as a user
// of its own instead. Each carries resource limits (MemoryMax=, CPUQuota=, CPUWeight=,
// TasksMax=), DefaultLimits unless its spec says otherwise.
//
// A container's environment (it may hold secrets) is not in its unit, which anyone may read, but
// in EnvDir/UNIT.env (root's, 0600), written and removed with the unit. Every value that
// reaches a unit file goes through one function (unitValue), which refuses control characters
// and quotes what systemd would otherwise expand. Images are hostile input: their layers are
// unpacked safely and cached only once verified, their configs checked like any other value.
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
