package cli

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestCLIReadsNoSecret: a member of the API group runs the CLI with the box's config, whose TSIG
// secret_file only root may read. The CLI never opens secret files (only the daemon reads them):
// `ls` gets as far as the daemon's socket, and `config check` checks what it can and says what it
// could not. Root's `config check` still checks the secret itself.
func TestCLIReadsNoSecret(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root, to run the CLI as another user")
	}
	dir, err := os.MkdirTemp("", "onionpod-secret-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	bin := filepath.Join(dir, "onionpod") // the test binary, run as "onionpod" (see TestMain)
	copyFile(t, os.Args[0], bin, 0o755)
	secret := filepath.Join(dir, "tsig.key")
	os.WriteFile(secret, []byte("key \"box\" { algorithm hmac-sha256; secret \"c2VjcmV0c2VjcmV0c2VjcmV0\"; };\n"), 0o600)
	cfg := filepath.Join(dir, "onionpod.toml")
	os.WriteFile(cfg, []byte(`state_dir = "`+dir+`/state"
[api]
socket = "`+dir+`/api.sock"
[dns]
zone = "box.example"
[[dns.tsig]]
name = "box"
secret_file = "`+secret+`"
[[dns.secondaries]]
address = "[2001:db8::53]:53"
key = "box"
`), 0o644)

	const nobody = 65534
	code, _, errOut := runAs(t, nobody, bin, "--config", cfg, "ls")
	if code != 1 || !strings.Contains(errOut, "daemon is not running") {
		t.Errorf("ls as a group member: exit %d, want 1 (no daemon here)\n%s", code, errOut)
	}
	code, out, errOut := runAs(t, nobody, bin, "--config", cfg, "config", "check")
	if code != 0 || !strings.Contains(out, "ok") || !strings.Contains(out+errOut, "dns.tsig[0].secret_file") || !strings.Contains(out+errOut, "not checked") {
		t.Errorf("config check as a group member: exit %d, want 0 and a note that the secret was not checked\n%s%s", code, out, errOut)
	}
	os.WriteFile(secret, []byte("not base64!\n"), 0o600)
	code, out, errOut = runAs(t, 0, bin, "--config", cfg, "config", "check")
	if code != 2 || !strings.Contains(errOut, "dns.tsig[0]") || strings.Contains(out+errOut, "not base64!") {
		t.Errorf("config check by root of a bad secret: exit %d, want 2 naming dns.tsig[0] (and never the secret)\n%s%s", code, out, errOut)
	}
}

// runAs runs argv as uid (and gid uid), and returns the exit code, stdout and stderr.
func runAs(t *testing.T, uid uint32, argv ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0, out.String(), errOut.String()
	case errors.As(err, &exit):
		return exit.ExitCode(), out.String(), errOut.String()
	}
	t.Fatal(err)
	return 0, "", ""
}

func copyFile(t *testing.T, from, to string, perm os.FileMode) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}
