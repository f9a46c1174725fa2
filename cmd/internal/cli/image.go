package cli

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/onionpod/onionpod/cmd/internal/api"
	"github.com/onionpod/onionpod/internal/errkind"
)

// A local image (a `docker save` tarball, an OCI archive or an OCI layout directory) is read by
// the CLI, as the user who names it, and sent to the daemon, which loads it: the daemon never
// opens a path a user names.

// sendImage sends the local image at path to the daemon and returns what it loaded as.
func sendImage(ctx context.Context, client *api.Client, path string) (api.ImageInfo, error) {
	st, err := os.Stat(path)
	if err != nil {
		return api.ImageInfo{}, errkind.BadInputf("image %s: %w", path, err)
	}
	if st.IsDir() {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		pr, pw := io.Pipe()
		go func() { pw.CloseWithError(writeLayoutArchive(ctx, pw, path)) }()
		defer pr.Close()
		return client.LoadImage(ctx, pr)
	}
	f, err := openArchive(path)
	if err != nil {
		return api.ImageInfo{}, err
	}
	defer f.Close()
	return client.LoadImage(ctx, f)
}

// openArchive opens a file of a local image the safe way (what pods.OpenLocal does, on the pods
// branch): a symlink as the last component is not followed, a FIFO or device never blocks the
// open, anything but a regular file is refused. Every refusal is bad input.
func openArchive(path string) (*os.File, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	switch {
	case errors.Is(err, unix.ELOOP):
		return nil, errkind.BadInputf("image %s: a symlink (name the file itself)", path)
	case err != nil:
		return nil, errkind.BadInputf("image %s: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	st, err := f.Stat()
	if err == nil && !st.Mode().IsRegular() {
		err = errkind.BadInputf("image %s: not a regular file (%s)", path, st.Mode().Type())
	}
	if err == nil {
		err = unix.SetNonblock(fd, false)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// writeLayoutArchive writes the OCI layout directory dir to w as an OCI archive: its
// oci-layout, index.json and blobs, each opened by openArchive (what pods.WriteLayoutArchive
// does, on the pods branch).
func writeLayoutArchive(ctx context.Context, w io.Writer, dir string) error {
	files := []string{"oci-layout", "index.json"}
	blobs, _ := filepath.Glob(filepath.Join(dir, "blobs", "*", "*"))
	for _, b := range blobs {
		rel, _ := filepath.Rel(dir, b)
		files = append(files, filepath.ToSlash(rel))
	}
	tw := tar.NewWriter(w)
	for _, name := range files {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := addFile(tw, filepath.Join(dir, filepath.FromSlash(name)), name); err != nil {
			return fmt.Errorf("image %s: %w", dir, err)
		}
	}
	return tw.Close()
}

func addFile(tw *tar.Writer, path, name string) error {
	f, err := openArchive(path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: st.Size(), Typeflag: tar.TypeReg}); err != nil {
		return err
	}
	_, err = io.Copy(tw, io.LimitReader(f, st.Size()))
	return err
}
