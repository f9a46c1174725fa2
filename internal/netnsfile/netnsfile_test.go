package netnsfile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCreateDoRemove(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces")
	}
	path := filepath.Join(t.TempDir(), "ns")
	var inside string
	err := Create(path, func() error {
		b, err := os.ReadFile("/proc/sys/net/ipv6/conf/default/accept_dad")
		inside = strings.TrimSpace(string(b))
		return errors.Join(err, Sysctl("net/ipv6/conf/default/accept_dad", "0"))
	})
	if err != nil {
		t.Fatal(err)
	}
	defer Remove(path)
	if !Exists(path) || inside == "" {
		t.Fatalf("namespace not created (exists %v, setup read %q)", Exists(path), inside)
	}
	if err := Create(path, nil); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second Create = %v, want ErrExist", err)
	}
	// The setup ran in the new namespace, and Do enters it again.
	var got string
	if err := Do(path, func() error {
		b, err := os.ReadFile("/proc/sys/net/ipv6/conf/default/accept_dad")
		got = strings.TrimSpace(string(b))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if got != "0" {
		t.Fatalf("accept_dad in the namespace = %q, want 0", got)
	}
	mine, _ := os.ReadFile("/proc/sys/net/ipv6/conf/default/accept_dad")
	if strings.TrimSpace(string(mine)) == "0" && inside != "0" {
		t.Fatal("the sysctl leaked into the caller's namespace")
	}
	if err := Remove(path); err != nil {
		t.Fatal(err)
	}
	if Exists(path) {
		t.Fatal("still mounted after Remove")
	}
	if err := Remove(path); err != nil {
		t.Fatalf("second Remove = %v, want nil", err)
	}
}

func TestFailedSetupLeavesNothing(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces")
	}
	path := filepath.Join(t.TempDir(), "ns")
	boom := errors.New("boom")
	if err := Create(path, func() error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("Create = %v, want boom", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("path left behind: %v", err)
	}
}
