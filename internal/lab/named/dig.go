package named

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"

	"github.com/onionpod/onionpod/internal/lab/hostcheck"
)

// ErrMissing is wrapped by the error of Start and Dig when named or dig is not installed: it is
// hostcheck.ErrUnavailable.
var ErrMissing = hostcheck.ErrUnavailable

// Dig runs the real dig with args (e.g. "@127.0.0.1", "-p", "5353",
// "blog.box.example", "AAAA") and returns its standard output. A non-zero
// exit (dig's 9 for no reply, 10 for a failed transfer, ...) is an error
// that carries the output.
func Dig(ctx context.Context, args ...string) (string, error) {
	if err := hostcheck.Missing(hostcheck.Dig); err != nil {
		return "", fmt.Errorf("named: %w", err)
	}
	path, err := exec.LookPath("dig")
	if err != nil {
		return "", fmt.Errorf("named: dig: %w", err)
	}
	cmd := exec.CommandContext(ctx, path, args...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("named: dig %s: %w: %s%s", strings.Join(redact(args), " "), err, out.String(), errOut.String())
	}
	return out.String(), nil
}

// redact hides the secret of a "-y alg:name:secret" argument.
func redact(args []string) []string {
	out := append([]string(nil), args...)
	for i := range out {
		if i > 0 && out[i-1] == "-y" {
			if j := strings.LastIndex(out[i], ":"); j >= 0 {
				out[i] = out[i][:j+1] + "REDACTED"
			}
		}
	}
	return out
}
