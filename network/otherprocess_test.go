package network_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/onionpod/onionpod/network"
)

// helperEnv marks the test binary re-executed as a second process with a Manager of its own on
// the same state dir: what `onionpod internal net-up/net-down` are next to the daemon. Its value
// is the Manager's Config as JSON.
const helperEnv = "ONIONPOD_NETWORK_TEST_OTHER_PROCESS"

// otherProcess is a running helper: it reads commands on stdin and answers one line each.
type otherProcess struct {
	t      testing.TB
	cmd    *exec.Cmd
	in     io.WriteCloser
	out    *bufio.Scanner
	stderr strings.Builder
	mu     sync.Mutex // one command at a time
	done   chan struct{}
}

// startOtherProcess runs the helper with a Manager on cfg; it is stopped (by PID) at cleanup.
func startOtherProcess(t testing.TB, cfg network.Config) *otherProcess {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	p := &otherProcess{t: t, cmd: exec.Command(self), done: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), helperEnv+"="+string(b))
	p.cmd.Stderr = &p.stderr
	if p.in, err = p.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.out = bufio.NewScanner(stdout)
	p.out.Buffer(make([]byte, 1<<20), 1<<20)
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.in.Close() // the helper closes its Manager and exits at EOF
		select {
		case <-p.done:
		case <-time.After(30 * time.Second):
			p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() && p.stderr.Len() > 0 {
			t.Logf("other process stderr:\n%s", p.stderr.String())
		}
	})
	return p
}

// do sends one command and returns the answer's payload, or the helper's error.
func (p *otherProcess) do(command string) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, err := fmt.Fprintln(p.in, command); err != nil {
		return "", fmt.Errorf("other process: %s: %w", command, err)
	}
	if !p.out.Scan() {
		return "", fmt.Errorf("other process: %s: no answer (exited?): %v", command, p.out.Err())
	}
	status, payload, _ := strings.Cut(p.out.Text(), " ")
	if status != "ok" {
		return "", fmt.Errorf("other process: %s: %s", command, payload)
	}
	return payload, nil
}

func (p *otherProcess) attach(t testing.TB, app string, onionOnly bool) network.Result {
	t.Helper()
	payload, err := p.do(fmt.Sprintf("attach %s %t", app, onionOnly))
	if err != nil {
		t.Fatal(err)
	}
	var res network.Result
	if err := json.Unmarshal([]byte(payload), &res); err != nil {
		t.Fatal(err)
	}
	return res
}

func (p *otherProcess) detach(t testing.TB, app string) {
	t.Helper()
	if _, err := p.do("detach " + app); err != nil {
		t.Fatal(err)
	}
}

// close closes the helper's Manager (waiting for its background teardown, the shim's removal
// included) and ends it.
func (p *otherProcess) close(t testing.TB) {
	t.Helper()
	if _, err := p.do("close"); err != nil {
		t.Fatal(err)
	}
	<-p.done
}

// runOtherProcess is the helper's main: a Manager on the Config in helperEnv, driven by stdin.
//
//	attach APP ONIONONLY      -> ok RESULT-JSON
//	detach APP                -> ok
//	churn SEED ROUNDS APP...  -> ok (random attach/detach of each app, all apps at once)
//	close                     -> ok, and exit
func runOtherProcess() int {
	var cfg network.Config
	if err := json.Unmarshal([]byte(os.Getenv(helperEnv)), &cfg); err != nil {
		fmt.Fprintln(os.Stderr, "other process:", err)
		return 1
	}
	m, err := network.New(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "other process:", err)
		return 1
	}
	defer m.Close()
	ctx := context.Background()
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		f := strings.Fields(in.Text())
		if len(f) == 0 {
			continue
		}
		answer := func(payload string, err error) {
			if err != nil {
				fmt.Printf("err %s\n", strings.ReplaceAll(err.Error(), "\n", " "))
				return
			}
			fmt.Printf("ok %s\n", payload)
		}
		switch f[0] {
		case "attach":
			res, err := m.Attach(ctx, network.Attachment{App: f[1], OnionOnly: f[2] == "true"})
			b, _ := json.Marshal(res)
			answer(string(b), err)
		case "detach":
			answer("", m.Detach(ctx, f[1]))
		case "churn":
			seed, _ := strconv.ParseUint(f[1], 10, 64)
			rounds, _ := strconv.Atoi(f[2])
			answer("", churn(ctx, m, seed, rounds, f[3:]))
		case "close":
			answer("", m.Close())
			return 0
		default:
			answer("", fmt.Errorf("unknown command %q", f[0]))
		}
	}
	return 0
}

// churn attaches and detaches each app rounds times in a random order, all apps at once. An app
// whose name starts with "o" is onion-only.
func churn(ctx context.Context, m *network.Manager, seed uint64, rounds int, apps []string) error {
	var wg sync.WaitGroup
	errs := make(chan error, len(apps)*rounds)
	for i, app := range apps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rnd := rand.New(rand.NewPCG(seed, uint64(i)))
			for range rounds {
				var err error
				if rnd.IntN(3) < 2 {
					_, err = m.Attach(ctx, network.Attachment{App: app, OnionOnly: strings.HasPrefix(app, "o")})
				} else {
					err = m.Detach(ctx, app)
				}
				if err != nil {
					errs <- err
				}
				time.Sleep(time.Duration(rnd.IntN(20)) * time.Millisecond)
			}
		}()
	}
	wg.Wait()
	close(errs)
	var all []string
	for err := range errs {
		all = append(all, err.Error())
	}
	if len(all) > 0 {
		return fmt.Errorf("%d errors: %s", len(all), strings.Join(all, "; "))
	}
	return nil
}

// storedLeases reads the lease files the way an operator would: app -> ULA.
func storedLeases(t testing.TB, stateDir string) map[string]string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(stateDir, "leases"))
	if err != nil {
		t.Fatal(err)
	}
	leases := map[string]string{}
	for _, e := range entries {
		app, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || strings.HasPrefix(app, ".") {
			t.Errorf("stray file in the leases dir: %s", e.Name())
			continue
		}
		b, err := os.ReadFile(filepath.Join(stateDir, "leases", e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		var l struct{ ULA string }
		if err := json.Unmarshal(b, &l); err != nil {
			t.Fatalf("lease %s: %v", e.Name(), err)
		}
		leases[app] = l.ULA
	}
	return leases
}
