package dnstest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
)

// ErrMissing is returned when a required program is not installed.
var ErrMissing = errors.New("not installed")

// Dig runs the real dig with args (e.g. "@127.0.0.1", "-p", "5353",
// "blog.box.example", "AAAA") and returns its standard output. A non-zero
// exit (dig's 9 for no reply, 10 for a failed transfer, ...) is an error
// that carries the output.
func Dig(ctx context.Context, args ...string) (string, error) {
	path, err := exec.LookPath("dig")
	if err != nil {
		return "", fmt.Errorf("dnstest: dig: %w", ErrMissing)
	}
	cmd := exec.CommandContext(ctx, path, args...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("dnstest: dig %s: %w: %s%s", strings.Join(redact(args), " "), err, out.String(), errOut.String())
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
