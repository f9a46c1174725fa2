package child

import (
	"os/exec"
	"runtime"
	"syscall"
	"testing"
	"time"
)

// The main goroutine keeps the main thread, so the goroutines below run on threads the runtime
// really ends (it wedges, not ends, a main thread whose goroutine returns locked).
func init() { runtime.LockOSThread() }

// TestPdeathsigSurvivesTheCallersThread starts a child with Pdeathsig from a goroutine whose
// thread then ends (locked and returned, as netns code does): the child must live on.
func TestPdeathsigSurvivesTheCallersThread(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var exited <-chan struct{}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // returning while locked makes the runtime end this thread
		var err error
		exited, _, err = Start(cmd)
		errc <- err
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	select {
	case <-exited:
		t.Fatal("the child died with the thread that asked for it")
	case <-time.After(500 * time.Millisecond):
	}
	cmd.Process.Kill()
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Fatal("exited was not closed after the child was killed")
	}
}
