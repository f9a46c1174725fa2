package podstest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
)

// InsideEnv is set to "1" in the environment of a test binary that RunTest runs inside a box.
const InsideEnv = "PODSTEST_INSIDE"

// Inside reports whether this process was started inside a box by RunTest or RunTestInside.
// A TestMain must not boot boxes when Inside is true, and a phase test skips when it is false.
func Inside() bool { return os.Getenv(InsideEnv) == "1" }

// RunTest runs the test function named name of the current test binary (os.Args[0]) inside the
// box: `nsenter ... os.Args[0] -test.run '^name$' -test.v -test.count=1`, in the caller's working
// directory, with InsideEnv=1 and env (KEY=VALUE) added to the caller's environment. Its output is
// copied to out. It fails when the test fails, panics, or did not run at all.
func (s *System) RunTest(ctx context.Context, name string, out io.Writer, env ...string) error {
	wd, err := os.Getwd()
	if err != nil {
		return fmt.Errorf("podstest: run %s inside: %w", name, err)
	}
	cmd := s.CommandIn(ctx, wd, os.Args[0], "-test.run", "^"+name+"$", "-test.v", "-test.count=1")
	cmd.Env = append(append(os.Environ(), InsideEnv+"=1"), env...)
	pr, pw := io.Pipe()
	cmd.Stdout = pw
	cmd.Stderr = pw
	passed := false
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64*1024), 1024*1024)
		for sc.Scan() {
			line := sc.Text()
			if strings.HasPrefix(strings.TrimSpace(line), "--- PASS: "+name+" ") {
				passed = true
			}
			fmt.Fprintln(out, line)
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	runErr := cmd.Run()
	_ = pw.Close()
	<-done
	if runErr != nil {
		return fmt.Errorf("podstest: %s inside %s: %w", name, s.Name(), runErr)
	}
	if !passed {
		return fmt.Errorf("podstest: %s inside %s: did not pass (not found, or skipped)", name, s.Name())
	}
	return nil
}

// RunTestInside runs the test function name inside the box (see RunTest), streams its output to
// t.Log and fails t if it fails. The inner test is usually guarded by `if !podstest.Inside() {
// t.Skip(...) }`.
func (s *System) RunTestInside(t testing.TB, name string, env ...string) {
	t.Helper()
	if err := s.RunTest(t.Context(), name, &lineLogger{t: t}, env...); err != nil {
		t.Fatal(err)
	}
}

// lineLogger passes each written line to t.Log.
type lineLogger struct {
	t testing.TB
}

func (l *lineLogger) Write(p []byte) (int, error) {
	l.t.Log("inside: " + strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
