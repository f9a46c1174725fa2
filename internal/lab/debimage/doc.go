// Package debimage builds OCI image archives (docker-archive or oci-archive tar files, what
// pods.ImageStore.LoadArchive reads) from Debian packages and files, without a container runtime
// or a registry: mmdebstrap unpacks the packages of the Debian archive this machine reaches into
// one layer, the recipe's files make a second one, and go-containerregistry writes the archive.
// It is product code for `onionpod lab` and the tests' engine (no testing import); the test
// wrapper is debimagetest.
//
// Builds are cached under a directory that outlives test binaries (DefaultCacheDir,
// /var/cache/onionpod-test-images, or $ONIONPOD_IMAGE_CACHE), keyed by the recipe (packages,
// excluded paths, files, config, ref, format) and the package versions the mirror offers: a
// second build of the same recipe is a stat and a small JSON read. The mirror is asked again for
// versions only after Builder.Refresh; a recipe whose packages did not change is not rebuilt, and
// a changed recipe downloads only the .deb files it has not seen. Concurrent builders, in one
// process or several, wait for each other on flock files and build each image once.
//
// The recipes of onionpod's test apps are here too: Postgres (PostgreSQL 15 from Debian, runnable
// as a systemd dynamic user in a read-only root) and Notes (the static web app of
// e2e/testapps/notes, releases v1, v2 and a broken one); Builder.Apps builds all four.
package debimage
