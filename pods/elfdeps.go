package pods

import (
	"debug/elf"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/onionpod/onionpod/internal/errkind"
)

// maxDeps bounds the shared libraries followed for one binary.
const maxDeps = 64

// elfDeps is what a dynamically linked ELF binary needs to run in an otherwise empty root: its
// program interpreter (the dynamic loader) and its shared libraries, with the directories the
// loader must search.
type elfDeps struct {
	Interp string   // PT_INTERP, e.g. /lib64/ld-linux-x86-64.so.2; "" for a static binary
	Libs   []string // the DT_NEEDED libraries, recursively, as found (paths not resolved)
	Dirs   []string // the directories they were found in, in search order
}

// binaryDeps reads a binary's ELF headers (debug/elf; it runs nothing, unlike ldd) and finds its
// interpreter and libraries the way the dynamic loader does: DT_RPATH (without DT_RUNPATH),
// DT_RUNPATH ($ORIGIN expanded), the directories of /etc/ld.so.conf, then the default ones. A
// library must match the binary's class and machine. A static binary has no dependencies.
func binaryDeps(binary string) (elfDeps, error) {
	f, err := elf.Open(binary)
	if err != nil {
		return elfDeps{}, errkind.BadInputf("binary %q: %w", binary, err)
	}
	defer f.Close()
	var deps elfDeps
	for _, p := range f.Progs {
		if p.Type != elf.PT_INTERP {
			continue
		}
		b := make([]byte, p.Filesz)
		if _, err := p.ReadAt(b, 0); err != nil {
			return elfDeps{}, errkind.BadInputf("binary %q: interpreter: %w", binary, err)
		}
		deps.Interp = strings.TrimRight(string(b), "\x00")
	}
	if deps.Interp == "" {
		return elfDeps{}, nil
	}
	if !path.IsAbs(deps.Interp) {
		return elfDeps{}, errkind.BadInputf("binary %q: interpreter %q is not an absolute path", binary, deps.Interp)
	}
	system := append(ldSoConfDirs("/etc/ld.so.conf", 0), defaultLibDirs(f.Class)...)
	found := map[string]bool{}
	queue := []string{binary}
	for len(queue) > 0 {
		obj := queue[0]
		queue = queue[1:]
		needed, search, err := objectNeeds(obj)
		if err != nil {
			return elfDeps{}, errkind.BadInputf("binary %q: %s: %w", binary, obj, err)
		}
		for _, soname := range needed {
			lib, err := findLibrary(soname, append(search, system...), f.Class, f.Machine)
			if err != nil {
				return elfDeps{}, errkind.BadInputf("binary %q: %w", binary, err)
			}
			if found[lib] || lib == deps.Interp {
				continue
			}
			found[lib] = true
			if len(found) > maxDeps {
				return elfDeps{}, errkind.BadInputf("binary %q: more than %d shared libraries", binary, maxDeps)
			}
			deps.Libs = append(deps.Libs, lib)
			if d := path.Dir(lib); !slices.Contains(deps.Dirs, d) {
				deps.Dirs = append(deps.Dirs, d)
			}
			queue = append(queue, lib)
		}
	}
	return deps, nil
}

// objectNeeds reads one object's DT_NEEDED names and its own search path (RPATH or RUNPATH).
func objectNeeds(file string) (needed, search []string, err error) {
	f, err := elf.Open(file)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	needed, err = f.DynString(elf.DT_NEEDED)
	if err != nil {
		return nil, nil, err
	}
	runpath, _ := f.DynString(elf.DT_RUNPATH)
	rpath, _ := f.DynString(elf.DT_RPATH)
	if len(runpath) > 0 {
		rpath = runpath // DT_RPATH is ignored when DT_RUNPATH is present
	}
	origin := filepath.Dir(file)
	for _, list := range rpath {
		for _, d := range strings.Split(list, ":") {
			d = strings.NewReplacer("$ORIGIN", origin, "${ORIGIN}", origin).Replace(d)
			if path.IsAbs(d) {
				search = append(search, path.Clean(d))
			}
		}
	}
	return needed, search, nil
}

// findLibrary finds soname in dirs: the first regular file of the binary's class and machine.
func findLibrary(soname string, dirs []string, class elf.Class, machine elf.Machine) (string, error) {
	if strings.Contains(soname, "/") {
		return "", fmt.Errorf("library %q: a path, not a name", soname)
	}
	for _, d := range dirs {
		p := path.Join(d, soname)
		if st, err := os.Stat(p); err != nil || !st.Mode().IsRegular() {
			continue
		}
		lf, err := elf.Open(p)
		if err != nil {
			continue
		}
		ok := lf.Class == class && lf.Machine == machine
		lf.Close()
		if ok {
			return p, nil
		}
	}
	return "", fmt.Errorf("library %s: %w in %v", soname, os.ErrNotExist, dirs)
}

// ldSoConfDirs reads the library directories of an ld.so.conf file and the files it includes.
func ldSoConfDirs(file string, depth int) []string {
	b, err := os.ReadFile(file)
	if err != nil || depth > 4 {
		return nil
	}
	var dirs []string
	for _, line := range strings.Split(string(b), "\n") {
		line, _, _ = strings.Cut(line, "#")
		line = strings.TrimSpace(line)
		if pattern, ok := strings.CutPrefix(line, "include"); ok && (pattern == "" || pattern[0] == ' ' || pattern[0] == '\t') {
			for _, p := range strings.Fields(pattern) {
				if !path.IsAbs(p) {
					p = filepath.Join(filepath.Dir(file), p)
				}
				matches, _ := filepath.Glob(p)
				slices.Sort(matches)
				for _, m := range matches {
					dirs = append(dirs, ldSoConfDirs(m, depth+1)...)
				}
			}
			continue
		}
		if path.IsAbs(line) {
			dirs = append(dirs, path.Clean(line))
		}
	}
	return dirs
}

// defaultLibDirs are the loader's own last resort.
func defaultLibDirs(class elf.Class) []string {
	if class == elf.ELFCLASS64 {
		return []string{"/lib64", "/usr/lib64", "/lib", "/usr/lib"}
	}
	return []string{"/lib32", "/usr/lib32", "/lib", "/usr/lib"}
}
