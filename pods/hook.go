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
	pipes, err := openHookPipes(stdin != nil)
	if err != nil {
		return err
	}
	defer pipes.closeReaders()
	props = append(props, pipes.properties()...)
	copied := make(chan error, 1)
	go func() {
		_, err := io.Copy(stdout, pipes.outR)
		copied <- err
	}()
	var stderr bytes.Buffer
	stderrDone := make(chan struct{})
	go func() {
		io.Copy(&lastBytes{b: &stderr, max: maxCheckOutput}, pipes.errR)
		close(stderrDone)
	}()
	done := make(chan string, 1)
	err = s.startHookUnit(ctx, conn, name, props, done)
	pipes.closeHookEnds()
	fed := pipes.feed(stdin)
	if err != nil {
		if pipes.inW != nil {
			pipes.inW.Close()
		}
		return fmt.Errorf("pods: hook %s: %w", name, err)
	}
	result, copyErr, err := s.awaitHook(ctx, conn, name, done, copied, stderrDone)
	if err != nil {
		return err
	}
	if result != "done" {
		why := hookFailure(ctx, conn, name, timeout)
		_ = conn.ResetFailedUnitContext(context.WithoutCancel(ctx), name)
		return fmt.Errorf("pods: hook of %s/%s: %s %s%s", spec.App, spec.containerName(), path.Base(argv[0]), why, lastLine(stderr.String()))
	}
	return checkHookIO(spec, argv, copyErr, fed)
}

// hookPipes are the pipes of a hook's standard output, standard error and (when it has one)
// standard input. The hook's ends (outW, errW, inR) are handed to systemd, which keeps its own
// copies; ours are closed once the unit is started.
type hookPipes struct {
	outR, outW *os.File
	errR, errW *os.File
	inR, inW   *os.File // nil without input
}

// openHookPipes opens the pipes of a hook, with an input pipe when withStdin. On an error it
// closes whatever it had opened.
func openHookPipes(withStdin bool) (*hookPipes, error) {
	var p hookPipes
	var err error
	if p.outR, p.outW, err = os.Pipe(); err != nil {
		return nil, fmt.Errorf("pods: %w", err)
	}
	if p.errR, p.errW, err = os.Pipe(); err != nil {
		p.outR.Close()
		p.outW.Close()
		return nil, fmt.Errorf("pods: %w", err)
	}
	if withStdin {
		if p.inR, p.inW, err = os.Pipe(); err != nil {
			p.outR.Close()
			p.outW.Close()
			p.errR.Close()
			p.errW.Close()
			return nil, fmt.Errorf("pods: %w", err)
		}
	}
	return &p, nil
}

// properties are the unit properties that hand the hook's ends of the pipes to systemd.
func (p *hookPipes) properties() []sddbus.Property {
	prop := func(name string, v any) sddbus.Property {
		return sddbus.Property{Name: name, Value: dbus.MakeVariant(v)}
	}
	props := []sddbus.Property{
		prop("StandardOutputFileDescriptor", dbus.UnixFD(p.outW.Fd())),
		prop("StandardErrorFileDescriptor", dbus.UnixFD(p.errW.Fd())),
	}
	if p.inR != nil {
		props = append(props, prop("StandardInputFileDescriptor", dbus.UnixFD(p.inR.Fd())))
	}
	return props
}

// closeHookEnds closes our copies of the hook's ends, once systemd holds its own.
func (p *hookPipes) closeHookEnds() {
	p.outW.Close()
	p.errW.Close()
	if p.inR != nil {
		p.inR.Close() // a hook that exits without reading all its input: the feed ends (EPIPE)
	}
}

func (p *hookPipes) closeReaders() {
	p.outR.Close()
	p.errR.Close()
}

// feed copies stdin into the hook's input pipe in the background, then closes the pipe, and
// reports the copy's error (nil at once when the hook has no input).
func (p *hookPipes) feed(stdin io.Reader) <-chan error {
	fed := make(chan error, 1)
	if p.inW == nil {
		fed <- nil
		return fed
	}
	go func() {
		_, err := io.Copy(p.inW, stdin)
		p.inW.Close()
		fed <- err
	}()
	return fed
}

// startHookUnit starts the hook's transient unit, first clearing a unit of that name left over
// from an earlier hook.
func (s *Systemd) startHookUnit(ctx context.Context, conn *sddbus.Conn, name string, props []sddbus.Property, done chan<- string) error {
	_, err := conn.StartTransientUnitContext(ctx, name, "replace", props, done)
	if isUnitExists(err) {
		s.clearCheck(context.WithoutCancel(ctx), conn, name)
		_, err = conn.StartTransientUnitContext(ctx, name, "replace", props, done)
	}
	return err
}

// awaitHook waits until the hook's unit has ended and its standard output is all copied (the
// copy's error in copyErr), then up to a second for its standard error. It fails when ctx ends
// first, clearing the unit if it was still running.
func (s *Systemd) awaitHook(ctx context.Context, conn *sddbus.Conn, name string, done <-chan string, copied <-chan error, stderrDone <-chan struct{}) (result string, copyErr, err error) {
	select {
	case result = <-done:
	case <-ctx.Done():
		s.clearCheck(context.WithoutCancel(ctx), conn, name)
		return "", nil, fmt.Errorf("pods: hook %s: %w", name, ctx.Err())
	}
	// The hook has exited: what it wrote is in the pipes (a child it left may still hold them).
	select {
	case copyErr = <-copied:
	case <-ctx.Done():
		return "", nil, fmt.Errorf("pods: hook %s: %w", name, ctx.Err())
	}
	select {
	case <-stderrDone:
	case <-time.After(time.Second):
	}
	return result, copyErr, nil
}

// hookFailure says why the hook's unit failed, from its service result.
func hookFailure(ctx context.Context, conn *sddbus.Conn, name string, timeout time.Duration) string {
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
	return why
}

// checkHookIO fails when copying the hook's output failed, or feeding its input failed or had
// not ended within a second of the hook's exit.
func checkHookIO(spec Spec, argv []string, copyErr error, fed <-chan error) error {
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
