// Package lab is where the lab lived before it moved to internal/lab (product code of `onionpod
// lab`, which must not sit under e2e). It only forwards to internal/lab, so that code importing
// this path still builds; new code imports internal/lab.
package lab

import (
	"context"

	"github.com/onionpod/onionpod/internal/lab"
)

// Names and addresses of the lab (see internal/lab).
const (
	DefaultDir   = lab.DefaultDir
	Zone         = lab.Zone
	InBox        = lab.InBox
	InClient     = lab.InClient
	InTor        = lab.InTor
	BusyboxPath  = lab.BusyboxPath
	DemoImageRef = lab.DemoImageRef
)

// Addresses of the lab (see internal/lab).
var (
	LANPrefix  = lab.LANPrefix
	BoxLANIP   = lab.BoxLANIP
	ClientIPv4 = lab.ClientIPv4
)

// Options describe a lab.
type Options = lab.Options

// Lab is a running lab.
type Lab = lab.Lab

// State is what lab.json records.
type State = lab.State

// Up brings a lab up (see internal/lab.Up).
func Up(ctx context.Context, opts Options) (*Lab, error) { return lab.Up(ctx, opts) }

// Open takes over a lab brought up by another process.
func Open(dir string) (*Lab, error) { return lab.Open(dir) }

// ValidPlace reports whether where names a place of the lab.
func ValidPlace(where string) bool { return lab.ValidPlace(where) }

// WriteDemoImage builds the busybox httpd demo image serving page, as an archive at path.
func WriteDemoImage(path, page string) error { return lab.WriteDemoImage(path, page) }
