package onion

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// outsideTree makes a directory of files that a planted symlink points at.
func outsideTree(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "victim"), []byte("keep me\n"), 0o600)
	os.Mkdir(filepath.Join(dir, "clients"), 0o700)
	os.WriteFile(filepath.Join(dir, "clients", "stale.auth"), []byte("keep me too\n"), 0o600)
	return dir
}

// watch returns a function telling what changed under dir since now (written, added or
// deleted), "" when nothing did.
func watch(t *testing.T, dir string) func() string {
	t.Helper()
	before := snapshot(t, dir)
	return func() string {
		if after := snapshot(t, dir); after != before {
			return "before:\n" + before + "\nafter:\n" + after
		}
		return ""
	}
}

// TestExportRefusesSymlinks plants symlinks in an existing export directory (for each file
// Export writes, for authorized_clients/, and for the directory itself) and checks that
// Export refuses and nothing outside is written or deleted.
func TestExportRefusesSymlinks(t *testing.T) {
	ks := newStore(t)
	k, _, err := ks.Ensure("app")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ks.AddClient("app", "alice"); err != nil {
		t.Fatal(err)
	}
	cases := map[string]func(t *testing.T, export, outside string){
		"authorized_clients": func(t *testing.T, export, outside string) {
			os.Symlink(filepath.Join(outside, "clients"), filepath.Join(export, authorizedClients))
		},
		"hostname": func(t *testing.T, export, outside string) {
			os.Symlink(filepath.Join(outside, "victim"), filepath.Join(export, hostnameFile))
		},
		"public key": func(t *testing.T, export, outside string) {
			os.Symlink(filepath.Join(outside, "victim"), filepath.Join(export, publicKeyFile))
		},
		"secret key": func(t *testing.T, export, outside string) {
			os.Symlink(filepath.Join(outside, "victim"), filepath.Join(export, secretKeyFile))
		},
		"dangling secret key": func(t *testing.T, export, outside string) {
			os.Symlink(filepath.Join(outside, "new-file"), filepath.Join(export, secretKeyFile))
		},
		// The same key is there already (a re-export), but one file is now a symlink.
		"hostname of a re-export": func(t *testing.T, export, outside string) {
			if err := ks.Export("app", export); err != nil {
				t.Fatal(err)
			}
			os.WriteFile(filepath.Join(outside, "victim"), k.hostnameFile(), 0o600)
			os.Remove(filepath.Join(export, hostnameFile))
			os.Symlink(filepath.Join(outside, "victim"), filepath.Join(export, hostnameFile))
		},
		"a client's file": func(t *testing.T, export, outside string) {
			if err := ks.Export("app", export); err != nil {
				t.Fatal(err)
			}
			os.Remove(filepath.Join(export, authorizedClients, "alice.auth"))
			os.Symlink(filepath.Join(outside, "victim"), filepath.Join(export, authorizedClients, "alice.auth"))
		},
	}
	for name, plant := range cases {
		t.Run(name, func(t *testing.T) {
			export := filepath.Join(t.TempDir(), "hs")
			os.Mkdir(export, 0o700)
			outside := outsideTree(t)
			plant(t, export, outside)
			changed := watch(t, outside)
			err := ks.Export("app", export)
			if err == nil {
				t.Fatal("export through a planted symlink succeeded")
			}
			if !errors.Is(err, ErrBadInput) {
				t.Errorf("err = %v, want ErrBadInput", err)
			}
			if d := changed(); d != "" {
				t.Fatalf("export changed files outside the directory:\n%s", d)
			}
		})
	}

	t.Run("the directory itself", func(t *testing.T) {
		outside := outsideTree(t)
		changed := watch(t, outside)
		link := filepath.Join(t.TempDir(), "hs")
		os.Symlink(outside, link)
		if err := ks.Export("app", link); !errors.Is(err, ErrBadInput) {
			t.Fatalf("export into a symlinked directory: %v, want ErrBadInput", err)
		}
		if d := changed(); d != "" {
			t.Fatalf("export changed files outside:\n%s", d)
		}
	})
}
