package lab

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/onionpod/onionpod/internal/atomicfile"
)

// BusyboxPath is the statically linked busybox the demo image is built from (Debian's
// busybox-static).
const BusyboxPath = "/bin/busybox"

// DemoImageRef is the tag the demo image carries in its archive.
const DemoImageRef = "onionpod.example/hello:1"

// WriteDemoImage builds a tiny web server image (busybox httpd serving page on port 80) and
// writes it as a `docker save` archive at path. Built locally: no registry, no network.
func WriteDemoImage(path, page string) error {
	data, err := demoLayer(page)
	if err != nil {
		return fmt.Errorf("lab: demo image: %w", err)
	}
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
	if err != nil {
		return fmt.Errorf("lab: demo image: %w", err)
	}
	img, err := mutate.AppendLayers(empty.Image, l)
	if err != nil {
		return fmt.Errorf("lab: demo image: %w", err)
	}
	img, err = mutate.Config(img, v1.Config{
		Entrypoint: []string{"/bin/busybox", "httpd", "-f", "-v", "-p", "[::]:80", "-h", "/www"},
		Env:        []string{"PATH=/bin"},
		WorkingDir: "/www",
		ExposedPorts: map[string]struct{}{
			"80/tcp": {},
		},
	})
	if err != nil {
		return fmt.Errorf("lab: demo image: %w", err)
	}
	tag, err := name.NewTag(DemoImageRef)
	if err != nil {
		return fmt.Errorf("lab: demo image: %w", err)
	}
	var archive bytes.Buffer
	if err := tarball.Write(tag, img, &archive); err != nil {
		return fmt.Errorf("lab: demo image: %w", err)
	}
	if _, err := atomicfile.WriteFile(path, archive.Bytes(), 0o644); err != nil {
		return fmt.Errorf("lab: demo image: %w", err)
	}
	return nil
}

// demoLayer is the demo image's only layer: busybox (from the host's busybox-static), page as
// /www/index.html, and /tmp.
func demoLayer(page string) ([]byte, error) {
	bb, err := os.ReadFile(BusyboxPath)
	if err != nil {
		return nil, fmt.Errorf("lab: demo image needs busybox-static: %w", err)
	}
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	mod := time.Unix(0, 0)
	entries := []struct {
		name string
		mode int64
		data []byte
		dir  bool
	}{
		{name: "bin/", mode: 0o755, dir: true},
		{name: "bin/busybox", mode: 0o755, data: bb},
		{name: "www/", mode: 0o755, dir: true},
		{name: "www/index.html", mode: 0o644, data: []byte(page)},
		{name: "tmp/", mode: 0o1777, dir: true},
	}
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Mode: e.mode, ModTime: mod, Typeflag: tar.TypeReg, Size: int64(len(e.data))}
		if e.dir {
			h.Typeflag, h.Size = tar.TypeDir, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("lab: demo image: %w", err)
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, fmt.Errorf("lab: demo image: %w", err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("lab: demo image: %w", err)
	}
	return layer.Bytes(), nil
}
