package appbackup

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const envStreamChild = "APPBACKUP_STREAM_CHILD"

// largeVolumeBytes is the size of the volume TestLargeVolumeStreams backs up and restores.
const largeVolumeBytes = 2 << 30

// maxPeakRSS bounds the memory of a backup and a restore of that volume, running at once in one
// process (a few buffers are all they need; the Go runtime and the test binary take ~20 MiB).
const maxPeakRSS = 128 << 20

// A 2 GiB volume streams: backed up and restored at the same time through a pipe (the archive is
// never held anywhere), in a child process whose peak RSS is measured and printed. The volume's
// file is allocated (fallocate: dense, not sparse, reads as zeros) so that making it costs no
// write; every byte of it goes through age both ways, and the restored file is 2 GiB of data.
func TestLargeVolumeStreams(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: streams 2 GiB through a backup and a restore")
	}
	if os.Getenv(envStreamChild) != "" {
		streamChild(t)
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestLargeVolumeStreams$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), envStreamChild+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`peak RSS (\d+) KiB`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("the child printed no peak RSS:\n%s", out)
	}
	kib, _ := strconv.ParseInt(string(m[1]), 10, 64)
	t.Logf("%s", bytes.TrimSpace(regexp.MustCompile(`(?m)^.*stream_test.go:\d+: (.*)$`).ReplaceAll(out, []byte("$1"))))
	fmt.Printf("appbackup: %d MiB volume backed up and restored through a pipe: peak RSS %.1f MiB\n", largeVolumeBytes>>20, float64(kib)/1024)
	if kib<<10 > maxPeakRSS {
		t.Errorf("peak RSS %d KiB for a %d MiB volume: the backup does not stream", kib, largeVolumeBytes>>20)
	}
}

func streamChild(t *testing.T) {
	src := newTestBox(t)
	src.addApp(t, "notes", []Volume{dataVolume})
	f, err := os.Create(filepath.Join(src.volumeDir("notes", "data"), "big"))
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Fallocate(int(f.Fd()), 0, 0, largeVolumeBytes); err != nil {
		t.Skipf("fallocate: %v", err)
	}
	if _, err := f.WriteAt([]byte("first"), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("last"), largeVolumeBytes-4); err != nil {
		t.Fatal(err)
	}
	f.Close()
	rcpt, id := x25519(t)
	dst := newTestBox(t)

	pr, pw := io.Pipe()
	counted := &countReader{r: pr}
	start := time.Now()
	errc := make(chan error, 1)
	go func() {
		_, err := Backup(t.Context(), pw, src, src.keys, []string{"notes"}, rcpt)
		pw.CloseWithError(err)
		errc <- err
	}()
	reps, err := Restore(t.Context(), counted, dst, dst.keys, false, id)
	if berr := <-errc; berr != nil {
		t.Fatal(berr)
	}
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	got, err := os.Open(filepath.Join(dst.volumeDir("notes", "data"), "big"))
	if err != nil {
		t.Fatal(err)
	}
	defer got.Close()
	st, _ := got.Stat()
	head, tail := make([]byte, 5), make([]byte, 4)
	got.ReadAt(head, 0)
	got.ReadAt(tail, largeVolumeBytes-4)
	if st.Size() != largeVolumeBytes || string(head) != "first" || string(tail) != "last" {
		t.Fatalf("restored file: %d bytes, %q...%q", st.Size(), head, tail)
	}
	// VmHWM, not getrusage's ru_maxrss: that one carries the peak of the process this one was
	// forked from (the parent test binary) across fork and exec.
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	hwm := regexp.MustCompile(`VmHWM:\s+(\d+) kB`).FindSubmatch(status)
	if hwm == nil {
		t.Fatalf("no VmHWM in /proc/self/status")
	}
	t.Logf("%d MiB volume (%d bytes in the archive) backed up and restored in %v (%.0f MiB/s), report %+v",
		largeVolumeBytes>>20, counted.n, took.Round(time.Millisecond), float64(largeVolumeBytes>>20)/took.Seconds(), reps[0].Volumes)
	t.Logf("peak RSS %s KiB", hwm[1])
}

type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
