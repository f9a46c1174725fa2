package pods

import (
	"fmt"
	"path"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/onionpod/onionpod/internal/errkind"
)

const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Command returns the argv a pod of this image runs: the image's Entrypoint followed by args, or
// by the image's Cmd when args is empty. A program name without a slash is looked up in the
// image's PATH inside its root (as docker does; systemd would search the host). Errors wrap
// ErrBadInput.
func (img *Image) Command(args []string) ([]string, error) {
	return img.CommandOf(nil, args)
}

// CommandOf is Command with the image's Entrypoint replaced by entrypoint when it is not empty;
// a replaced entrypoint drops the image's Cmd too (as `docker run --entrypoint` does), so args
// alone follow it.
func (img *Image) CommandOf(entrypoint, args []string) ([]string, error) {
	argv := slices.Clone(img.Config.Entrypoint)
	cmd := img.Config.Cmd
	if len(entrypoint) > 0 {
		argv, cmd = slices.Clone(entrypoint), nil
	}
	if len(args) > 0 {
		argv = append(argv, args...)
	} else {
		argv = append(argv, cmd...)
	}
	if len(argv) == 0 || argv[0] == "" {
		return nil, errkind.BadInputf("pods: image %q: no command (no entrypoint or cmd)", img.Ref)
	}
	prog := argv[0]
	switch {
	case path.IsAbs(prog):
	case strings.Contains(prog, "/"):
		wd := img.Config.WorkingDir
		if wd == "" {
			wd = "/"
		}
		argv[0] = path.Join(wd, prog)
	default:
		found, err := lookPathInRoot(img.Root, prog, envValue(img.Config.Env, "PATH"))
		if err != nil {
			return nil, errkind.BadInputf("pods: image %q: %w", img.Ref, err)
		}
		argv[0] = found
	}
	return argv, nil
}

// lookPathInRoot finds an executable file named prog in the directories of pathList, resolving
// each candidate inside root (symlinks included) with openat2's RESOLVE_IN_ROOT.
func lookPathInRoot(root, prog, pathList string) (string, error) {
	if pathList == "" {
		pathList = defaultPath
	}
	rfd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", err
	}
	defer unix.Close(rfd)
	for _, dir := range strings.Split(pathList, ":") {
		if !path.IsAbs(dir) {
			continue
		}
		candidate := path.Join(dir, prog)
		fd, err := unix.Openat2(rfd, strings.TrimPrefix(candidate, "/"), &unix.OpenHow{
			Flags:   unix.O_PATH | unix.O_CLOEXEC,
			Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
		})
		if err != nil {
			continue
		}
		var st unix.Stat_t
		err = unix.Fstat(fd, &st)
		unix.Close(fd)
		if err == nil && st.Mode&unix.S_IFMT == unix.S_IFREG && st.Mode&0o111 != 0 {
			return candidate, nil
		}
	}
	return "", fmt.Errorf("%q not found in the image's PATH %s", prog, pathList)
}

func envValue(env []string, key string) string {
	for i := len(env) - 1; i >= 0; i-- {
		if k, v, ok := strings.Cut(env[i], "="); ok && k == key {
			return v
		}
	}
	return ""
}

// MergeEnv returns base with overrides applied: an override replaces the variable of the same
// name in place, new variables are appended in order. Entries without '=' are dropped.
func MergeEnv(base, overrides []string) []string {
	var out []string
	index := map[string]int{}
	for _, list := range [][]string{base, overrides} {
		for _, e := range list {
			k, _, ok := strings.Cut(e, "=")
			if !ok || k == "" {
				continue
			}
			if i, seen := index[k]; seen {
				out[i] = e
				continue
			}
			index[k] = len(out)
			out = append(out, e)
		}
	}
	return out
}
