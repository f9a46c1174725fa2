package pods

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"time"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
	"github.com/godbus/dbus/v5"
)

// ErrCheckFailed is in the error of a command check that ran and failed (exited non-zero, or
// timed out), as opposed to one that could not be run.
var ErrCheckFailed = errors.New("check failed")

// maxCheckOutput bounds what is kept of a check command's output (its last line is shown).
const maxCheckOutput = 4 << 10

// CheckUnitName is the transient unit a container's command check runs as.
func CheckUnitName(app, container string) string {
	stem := strings.TrimSuffix(strings.TrimPrefix(ContainerUnitName(app, container), UnitPrefix+"pod-"), ".service")
	return UnitPrefix + "check-" + stem + ".service"
}

// RunCheck runs argv in the sandbox of the container spec describes (spec as given to
// PodUnits: its root, network namespace, dynamic user, environment file, working directory and
// volumes, with the pod unit's hardening) as a transient unit, and waits for it to exit: nil
// when it exited 0 within timeout; an error wrapping ErrCheckFailed, with the last line it
// wrote, when it exited otherwise or ran out of time. argv[0] must be absolute inside the root
// (Image.CommandOf resolves it). Every value is checked as unitValue checks what goes into a
// unit file (systemd writes the transient unit's file).
func (s *Systemd) RunCheck(ctx context.Context, spec Spec, argv []string, timeout time.Duration) error {
	if err := spec.checkShape(); err != nil {
		return err
	}
	props, err := checkProperties(spec, argv, timeout)
	if err != nil {
		return fmt.Errorf("pods: app %q: check of %s: %w", spec.App, spec.containerName(), err)
	}
	conn, err := s.connection(ctx)
	if err != nil {
		return err
	}
	name := CheckUnitName(spec.App, spec.containerName())
	r, w, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("pods: %w", err)
	}
	defer r.Close()
	props = append(props,
		sddbus.Property{Name: "StandardOutputFileDescriptor", Value: dbus.MakeVariant(dbus.UnixFD(w.Fd()))},
		sddbus.Property{Name: "StandardErrorFileDescriptor", Value: dbus.MakeVariant(dbus.UnixFD(w.Fd()))})
	var out bytes.Buffer
	copied := make(chan struct{})
	go func() {
		io.Copy(&lastBytes{b: &out, max: maxCheckOutput}, r)
		close(copied)
	}()
	done := make(chan string, 1)
	_, err = conn.StartTransientUnitContext(ctx, name, "replace", props, done)
	if isUnitExists(err) {
		// A check left behind (by a daemon stopped while it ran): clear it, try once more.
		s.clearCheck(context.WithoutCancel(ctx), conn, name)
		_, err = conn.StartTransientUnitContext(ctx, name, "replace", props, done)
	}
	w.Close() // systemd holds its own copy for the check's process
	if err != nil {
		return fmt.Errorf("pods: check %s: %w", name, err)
	}
	var result string
	select {
	case result = <-done:
	case <-ctx.Done():
		s.clearCheck(context.WithoutCancel(ctx), conn, name)
		return fmt.Errorf("pods: check %s: %w", name, ctx.Err())
	}
	select {
	case <-copied:
	case <-time.After(time.Second): // a child of the check still holds the pipe
		r.Close()
	}
	if result == "done" {
		return nil // an inactive transient unit is gone already
	}
	// A failed one stays until reset: ask why it failed first.
	why := "exited with an error"
	if svc, err := conn.GetUnitTypePropertiesContext(ctx, name, "Service"); err == nil {
		code, _ := svc["ExecMainStatus"].(int32)
		switch res, _ := svc["Result"].(string); {
		case res == "timeout":
			why = ""
		case res == "exit-code":
			why = fmt.Sprintf("exited with status %d", code)
		case res == "signal" || res == "core-dump":
			why = "was killed by a signal"
		}
	}
	_ = conn.ResetFailedUnitContext(context.WithoutCancel(ctx), name)
	if why == "" {
		return checkFailed(fmt.Sprintf("%s: no answer within %v%s", path.Base(argv[0]), timeout, lastLine(out.String())))
	}
	return checkFailed(fmt.Sprintf("%s %s%s", path.Base(argv[0]), why, lastLine(out.String())))
}

// checkFailed is an error that says what the check did and matches ErrCheckFailed.
type checkFailed string

func (e checkFailed) Error() string        { return string(e) }
func (e checkFailed) Is(target error) bool { return target == ErrCheckFailed }

// clearCheck stops a check's transient unit and forgets it (a failed one stays loaded until
// reset), so that the next check can take its name.
func (s *Systemd) clearCheck(ctx context.Context, conn *sddbus.Conn, name string) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_ = runJob(ctx, name, conn.StopUnitContext)
	_ = conn.ResetFailedUnitContext(ctx, name)
}

// isUnitExists reports whether err is systemd's refusal of a transient unit whose name is taken.
func isUnitExists(err error) bool {
	var dErr dbus.Error
	if errors.As(err, &dErr) && dErr.Name == "org.freedesktop.systemd1.UnitExists" {
		return true
	}
	return err != nil && (strings.Contains(err.Error(), "already exists") || strings.Contains(err.Error(), "already loaded"))
}

// checkProperties are the transient unit's settings: the pod unit's sandbox around argv.
func checkProperties(s Spec, argv []string, timeout time.Duration) ([]sddbus.Property, error) {
	if len(argv) == 0 || !path.IsAbs(argv[0]) {
		return nil, fmt.Errorf("%w: check command: argv[0] must be an absolute path inside the root", ErrBadInput)
	}
	if _, err := unitValue(commandValue, "check command", argv...); err != nil {
		return nil, err
	}
	for _, p := range []struct{ field, value string }{{"root", s.Root}, {"netns", s.Netns}, {"working directory", s.WorkingDir}} {
		if p.value == "" && p.field != "root" {
			continue
		}
		if _, err := unitValue(pathValue, p.field, p.value); err != nil {
			return nil, err
		}
	}
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	prop := func(name string, v any) sddbus.Property {
		return sddbus.Property{Name: name, Value: dbus.MakeVariant(v)}
	}
	props := []sddbus.Property{
		sddbus.PropDescription("onionpod health check of " + s.App + "/" + s.containerName()),
		prop("Type", "oneshot"),
		sddbus.PropExecStart(argv, false),
		prop("RootDirectory", s.Root),
		prop("MountAPIVFS", true),
		prop("DynamicUser", true),
		prop("User", s.user()),
		prop("NoNewPrivileges", true),
		prop("CapabilityBoundingSet", uint64(0)),
		prop("ProtectSystem", "strict"),
		prop("PrivateDevices", true),
		prop("PrivateTmp", true),
		prop("RestrictSUIDSGID", true),
		prop("LockPersonality", true),
		prop("TimeoutStartUSec", uint64(timeout/time.Microsecond)),
		// Collected once inactive; a failed one waits for RunCheck to read why, then reset it.
		prop("CollectMode", "inactive"),
	}
	if s.Netns != "" {
		props = append(props, prop("NetworkNamespacePath", s.Netns))
	}
	if len(s.Env) > 0 {
		// The container's own environment file (root's, 0600): its secrets stay out of the
		// transient unit, which `systemctl show` would print.
		props = append(props, prop("EnvironmentFiles", []struct {
			Path     string
			Optional bool
		}{{EnvFile(s.unitName()), false}}))
	}
	if s.WorkingDir != "" {
		props = append(props, prop("WorkingDirectory", s.WorkingDir))
	}
	type bind struct {
		Source, Target string
		IgnoreMissing  bool
		Flags          uint64
	}
	var states []string
	var binds, roBinds []bind
	for _, v := range s.Volumes {
		states = append(states, volumeStateDir(s.App, v.Name))
		binds = append(binds, bind{Source: VolumeHostDir(s.App, v.Name), Target: v.Path})
	}
	for _, b := range s.BindReadOnly {
		roBinds = append(roBinds, bind{Source: b.Source, Target: b.Target})
	}
	for _, b := range append(append([]bind(nil), binds...), roBinds...) {
		if _, err := unitValue(bindValue, "check bind", b.Source, b.Target); err != nil {
			return nil, err
		}
	}
	if len(states) > 0 {
		props = append(props, prop("StateDirectory", states), prop("BindPaths", binds))
	}
	if len(roBinds) > 0 {
		props = append(props, prop("BindReadOnlyPaths", roBinds))
	}
	return props, nil
}

// lastBytes keeps the last max bytes written to it.
type lastBytes struct {
	b   *bytes.Buffer
	max int
}

func (l *lastBytes) Write(p []byte) (int, error) {
	l.b.Write(p)
	if over := l.b.Len() - l.max; over > 0 {
		l.b.Next(over)
	}
	return len(p), nil
}

// lastLine is ": LINE" for the last non-empty line of out (shortened), or "".
func lastLine(out string) string {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	line := strings.TrimSpace(lines[len(lines)-1])
	if line == "" {
		return ""
	}
	if len(line) > 200 {
		line = line[:200] + "..."
	}
	return ": " + strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, line)
}
