package appbackup

import "time"

// AppReport says what a backup took of one app, or what a restore put back.
type AppReport struct {
	Name    string         `json:"name"`
	Address string         `json:"address,omitempty"` // its .onion ("" without a key)
	Volumes []VolumeReport `json:"volumes,omitempty"`
	// Images are the images it holds (backup) or loaded (restore).
	Images []ImageReport `json:"images,omitempty"`
	// Quiesced is how long the app was held stopped for its volumes to be copied, from the
	// stop asked to the start asked (backup).
	Quiesced time.Duration `json:"quiesced,omitempty"`
	// Replaced says the restore replaced an app the box had (force).
	Replaced bool `json:"replaced,omitempty"`
}

// VolumeReport counts one volume's entries.
type VolumeReport struct {
	Name      string `json:"name"`
	Dump      bool   `json:"dump,omitempty"`
	Dirs      int64  `json:"dirs,omitempty"`
	Files     int64  `json:"files,omitempty"`
	Symlinks  int64  `json:"symlinks,omitempty"`
	HardLinks int64  `json:"hard_links,omitempty"`
	Sparse    int64  `json:"sparse,omitempty"`  // files stored as their data segments
	Skipped   int64  `json:"skipped,omitempty"` // sockets, FIFOs, devices: not copied
	Bytes     int64  `json:"bytes"`             // file (or dump) content stored
}

// ImageReport is one image a backup holds.
type ImageReport struct {
	ID    string `json:"id"`
	Bytes int64  `json:"bytes"` // the archive's size
}
