package network_test

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"syscall"
	"testing"
)

// sandboxEnv marks the test binary re-executed in its own empty network namespace.
const sandboxEnv = "ONIONPOD_NETWORK_TEST_SANDBOX"

// TestMain re-executes the test binary (as root) in a fresh, empty network namespace. The Manager
// under test works on a box namespace given by path, never on the process's own; running the
// tests from an empty namespace makes any slip visible (no uplink there) and keeps it from ever
// touching the host's links. Mounts are shared, so the namespaces the tests create are visible.
//
// With helperEnv set, the binary is instead a second process with a Manager of its own (see
// otherprocess_test.go), started by a test already in the sandbox.
func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		os.Exit(runOtherProcess())
	}
	if os.Geteuid() == 0 && os.Getenv(sandboxEnv) == "" {
		if unshare, err := exec.LookPath("unshare"); err == nil {
			os.Exit(runSandboxed(unshare))
		}
	}
	os.Exit(m.Run())
}

func runSandboxed(unshare string) int {
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "network test: ", err)
		return 1
	}
	// The child dies with this thread (Pdeathsig), so keep it alive and locked.
	runtime.LockOSThread()
	cmd := exec.Command(unshare, append([]string{"--net", "--", self}, os.Args[1:]...)...)
	cmd.Env = append(os.Environ(), sandboxEnv+"=1")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	err = cmd.Run()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return exit.ExitCode()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "network test: sandbox:", err)
		return 1
	}
	return 0
}
