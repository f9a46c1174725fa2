package debimage

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"

	"github.com/onionpod/onionpod/internal/atomicfile"
)

// debianKeyring is the Debian archive keyring (Debian's debian-archive-keyring package).
const debianKeyring = "/usr/share/keyrings/debian-archive-keyring.gpg"

// aptState is a private apt state for one set of sources, under the cache dir: its sources.list,
// its package lists (kept between builds: a later update downloads only what changed), an empty
// dpkg status (resolution as for an empty root). It never touches the host's apt state.
type aptState struct {
	dir     string
	sources []string
	arch    string
}

func newAptState(cacheDir string, sources []string) *aptState {
	return &aptState{
		dir:     filepath.Join(cacheDir, "apt", hashJSON(sources)[:16]),
		sources: sources,
		arch:    debianArch(),
	}
}

// debianArch is dpkg's name for this machine's architecture.
func debianArch() string {
	switch runtime.GOARCH {
	case "386":
		return "i386"
	case "arm":
		return "armhf"
	case "ppc64le":
		return "ppc64el"
	}
	return runtime.GOARCH // amd64, arm64, riscv64, s390x, mips64le
}

func (a *aptState) listsDir() string    { return filepath.Join(a.dir, "lists") }
func (a *aptState) sourcesFile() string { return filepath.Join(a.dir, "sources.list") }

// options are the apt-get options that point apt at this state only.
func (a *aptState) options() []string {
	return []string{
		"-o", "Dir::Etc=" + filepath.Join(a.dir, "etc"),
		"-o", "Dir::Etc::SourceList=" + a.sourcesFile(),
		"-o", "Dir::Etc::SourceParts=" + filepath.Join(a.dir, "etc", "sources.list.d"),
		"-o", "Dir::Etc::Preferences=" + filepath.Join(a.dir, "etc", "preferences"),
		"-o", "Dir::Etc::PreferencesParts=" + filepath.Join(a.dir, "etc", "preferences.d"),
		"-o", "Dir::Etc::TrustedParts=/etc/apt/trusted.gpg.d",
		"-o", "Dir::State=" + a.dir,
		"-o", "Dir::State::Lists=" + a.listsDir(),
		"-o", "Dir::State::status=" + filepath.Join(a.dir, "status"),
		"-o", "Dir::Cache=" + filepath.Join(a.dir, "cache"),
		"-o", "Dir::Cache::pkgcache=", "-o", "Dir::Cache::srcpkgcache=",
		"-o", "Dir::Log=" + filepath.Join(a.dir, "log"),
		"-o", "APT::Architecture=" + a.arch, "-o", "APT::Architectures=" + a.arch,
		"-o", "Acquire::Languages=none",
		"-o", "Acquire::Retries=2",
		"-o", "Acquire::http::Timeout=20",
		"-o", "APT::Install-Recommends=false",
		"-o", "Debug::NoLocking=true", // the caller holds the state's lock
	}
}

// prepare makes the state's directories and files.
func (a *aptState) prepare() error {
	for _, d := range []string{"etc/sources.list.d", "etc/preferences.d", "lists/partial", "cache/archives/partial", "log"} {
		if err := os.MkdirAll(filepath.Join(a.dir, d), 0o755); err != nil {
			return err
		}
	}
	if _, err := atomicfile.WriteFile(a.sourcesFile(), []byte(strings.Join(a.sources, "\n")+"\n"), 0o644); err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(a.dir, "status")); errors.Is(err, os.ErrNotExist) {
		return os.WriteFile(filepath.Join(a.dir, "status"), nil, 0o644)
	}
	return nil
}

// update refreshes the package lists from the mirror (apt-get update).
func (a *aptState) update(ctx context.Context) error {
	if err := a.prepare(); err != nil {
		return fmt.Errorf("apt state: %w", err)
	}
	out, err := a.run(ctx, "update")
	if err == nil && bytes.Contains(out, []byte("\nW: ")) && bytes.Contains(out, []byte("Failed to fetch")) {
		err = errors.New("some index files failed to download")
	}
	if err != nil {
		return fmt.Errorf("apt-get update: %w: %s", err, tail(out, 800))
	}
	return nil
}

// resolve returns the packages an install of want into an empty root brings, as sorted
// "name version arch" lines: what the layer will hold.
func (a *aptState) resolve(ctx context.Context, want []string) ([]string, error) {
	out, err := a.run(ctx, append([]string{"--simulate", "install"}, want...)...)
	if err != nil {
		return nil, fmt.Errorf("apt-get --simulate install: %w: %s", err, tail(out, 800))
	}
	var pkgs []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		// Inst libc6 (2.36-9+deb12u14 Debian:12.15/oldstable [amd64]) []
		f := strings.Fields(sc.Text())
		if len(f) < 4 || f[0] != "Inst" || !strings.HasPrefix(f[2], "(") {
			continue
		}
		arch := ""
		for _, x := range f[3:] {
			if strings.HasPrefix(x, "[") {
				arch = strings.Trim(x, "[])")
				break
			}
		}
		pkgs = append(pkgs, f[1]+" "+strings.TrimPrefix(f[2], "(")+" "+arch)
	}
	if len(pkgs) == 0 {
		return nil, fmt.Errorf("apt-get --simulate install %s: no package to install: %s", strings.Join(want, " "), tail(out, 800))
	}
	sort.Strings(pkgs)
	return pkgs, nil
}

func (a *aptState) run(ctx context.Context, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "apt-get", append(append(a.options(), "-q", "-y"), args...)...)
	cmd.Env = append(os.Environ(), "LC_ALL=C.UTF-8", "DEBIAN_FRONTEND=noninteractive")
	return cmd.CombinedOutput()
}

// installRequest is what apt is asked to install for a layer: its packages, plus what its
// variant brings.
func installRequest(d Debian) []string {
	want := append([]string(nil), d.Packages...)
	switch d.variant() {
	case "essential":
		want = append(want, "?essential")
	case "apt":
		want = append(want, "?essential", "apt")
	case "required", "minbase":
		want = append(want, "?essential", "?priority(required)", "apt")
	}
	return want
}

// tail is the end of a command's output, for an error message.
func tail(out []byte, n int) string {
	s := strings.TrimSpace(string(out))
	if len(s) > n {
		s = "..." + s[len(s)-n:]
	}
	return s
}
