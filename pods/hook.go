package pods

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"time"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
	"github.com/godbus/dbus/v5"
)

// HookUnitName is the transient unit a container's hook (a backup's dump or restore) runs as.
func HookUnitName(app, container string) string {
	stem := strings.TrimSuffix(strings.TrimPrefix(ContainerUnitName(app, container), UnitPrefix+"pod-"), ".service")
	return UnitPrefix + "hook-" + stem + ".service"
}

// RunHook runs argv in the sandbox of the container spec describes, as RunCheck does (its root,
// network namespace, dynamic user, environment file, volumes), with stdin as its standard input
// (nil: none) and its standard output copied to stdout, and waits until it has exited and its
// output is all copied: a database's dump written to a backup, or a dump read back. It fails
// when the command exits non-zero or runs longer than timeout, with the last line it wrote to
// its standard error.
func (s *Systemd) RunHook(ctx context.Context, spec Spec, argv []string, stdin io.Reader, stdout io.Writer, timeout time.Duration) error {
	if err := spec.checkShape(); err != nil {
		return err
	}
	props, err := checkProperties(spec, argv, timeout)
	if err != nil {
		return fmt.Errorf("pods: app %q: hook of %s: %w", spec.App, spec.containerName(), err)
	}
	props[0] = sddbus.PropDescription("onionpod hook of " + spec.App + "/" + spec.containerName())
	conn, err := s.connection(ctx)
	if err != nil {
		return err
	}
	name := HookUnitName(spec.App, spec.containerName())
	outR, outW, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("pods: %w", err)
	}
	defer outR.Close()
	errR, errW, err := os.Pipe()
	if err != nil {
		outW.Close()
		return fmt.Errorf("pods: %w", err)
	}
	defer errR.Close()
	prop := func(name string, v any) sddbus.Property {
		return sddbus.Property{Name: name, Value: dbus.MakeVariant(v)}
	}
	props = append(props,
		prop("StandardOutputFileDescriptor", dbus.UnixFD(outW.Fd())),
		prop("StandardErrorFileDescriptor", dbus.UnixFD(errW.Fd())))
	var inR, inW *os.File
	if stdin != nil {
		if inR, inW, err = os.Pipe(); err != nil {
			outW.Close()
			errW.Close()
			return fmt.Errorf("pods: %w", err)
		}
		props = append(props, prop("StandardInputFileDescriptor", dbus.UnixFD(inR.Fd())))
	}
	copied := make(chan error, 1)
	go func() {
		_, err := io.Copy(stdout, outR)
		copied <- err
	}()
	var stderr bytes.Buffer
	stderrDone := make(chan struct{})
	go func() {
		io.Copy(&lastBytes{b: &stderr, max: maxCheckOutput}, errR)
		close(stderrDone)
	}()
	done := make(chan string, 1)
	_, err = conn.StartTransientUnitContext(ctx, name, "replace", props, done)
	if isUnitExists(err) {
		s.clearCheck(context.WithoutCancel(ctx), conn, name)
		_, err = conn.StartTransientUnitContext(ctx, name, "replace", props, done)
	}
	outW.Close() // systemd holds its own copies for the hook's process
	errW.Close()
	if inR != nil {
		inR.Close() // a hook that exits without reading all its input: the copy below ends (EPIPE)
	}
	fed := make(chan error, 1)
	if inW != nil {
		go func() {
			_, err := io.Copy(inW, stdin)
			inW.Close()
			fed <- err
		}()
	} else {
		fed <- nil
	}
	if err != nil {
		if inW != nil {
			inW.Close()
		}
		return fmt.Errorf("pods: hook %s: %w", name, err)
	}
	var result string
	select {
	case result = <-done:
	case <-ctx.Done():
		s.clearCheck(context.WithoutCancel(ctx), conn, name)
		return fmt.Errorf("pods: hook %s: %w", name, ctx.Err())
	}
	// The hook has exited: what it wrote is in the pipes (a child it left may still hold them).
	var copyErr error
	select {
	case copyErr = <-copied:
	case <-ctx.Done():
		return fmt.Errorf("pods: hook %s: %w", name, ctx.Err())
	}
	select {
	case <-stderrDone:
	case <-time.After(time.Second):
	}
	if result != "done" {
		why := "exited with an error"
		if svc, err := conn.GetUnitTypePropertiesContext(ctx, name, "Service"); err == nil {
			code, _ := svc["ExecMainStatus"].(int32)
			switch res, _ := svc["Result"].(string); {
			case res == "timeout":
				why = fmt.Sprintf("ran longer than %v", timeout)
			case res == "exit-code":
				why = fmt.Sprintf("exited with status %d", code)
			case res == "signal" || res == "core-dump":
				why = "was killed by a signal"
			}
		}
		_ = conn.ResetFailedUnitContext(context.WithoutCancel(ctx), name)
		return fmt.Errorf("pods: hook of %s/%s: %s %s%s", spec.App, spec.containerName(), path.Base(argv[0]), why, lastLine(stderr.String()))
	}
	if copyErr != nil {
		return fmt.Errorf("pods: hook of %s/%s: its output: %w", spec.App, spec.containerName(), copyErr)
	}
	select {
	case err := <-fed:
		if err != nil {
			return fmt.Errorf("pods: hook of %s/%s: its input: %w", spec.App, spec.containerName(), err)
		}
	case <-time.After(time.Second):
		return fmt.Errorf("pods: hook of %s/%s: %s exited without reading all its input", spec.App, spec.containerName(), path.Base(argv[0]))
	}
	return nil
}
