package appbackup

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/onionpod/onionpod/internal/lab/hostcheck"
)

// The backup-versus-`tar | age` benchmark (make bench runs it):
//
//	go test -run '^$' -bench BenchmarkBackupVsTarAge -benchtime 3x ./cmd/internal/appbackup/
//
// One 1 GiB volume (an 896 MiB file and 4096 files of 32 KiB, incompressible, in the page
// cache): each iteration backs it up with Backup to a file and with `tar -cf - . | age -r`, then
// restores each (Restore into a new box; `age -d | tar -xf -` then `sync -f`, as Restore makes
// its data durable with syncfs before the swap). The same X25519 recipient for both (a
// passphrase's scrypt would add the same second to each). It reports median throughputs and
// the ratios ours/theirs (target >= 0.8); nothing is asserted.
func BenchmarkBackupVsTarAge(b *testing.B) {
	if err := hostcheck.Missing(hostcheck.Age); err != nil {
		b.Skip(err)
	}
	if _, err := exec.LookPath("tar"); err != nil {
		b.Skip("tar needed")
	}
	work := b.TempDir()
	src := &testBox{dir: filepath.Join(work, "src"), records: map[string][]byte{}}
	if err := os.MkdirAll(filepath.Join(src.dir, "onion"), 0o700); err != nil {
		b.Fatal(err)
	}
	src.keys.Store = nil
	vol := src.volumeDir("bench", "data")
	total := makeBenchVolume(b, vol)
	src.records["bench"] = []byte(`{"image":"x","volumes":[{"Name":"data"}]}`)
	ident, err := age.GenerateX25519Identity()
	if err != nil {
		b.Fatal(err)
	}
	idFile := filepath.Join(work, "identity")
	if err := os.WriteFile(idFile, []byte(ident.String()+"\n"), 0o600); err != nil {
		b.Fatal(err)
	}
	var ours, theirs, oursRestore, theirsRestore []time.Duration
	var oursSize, theirsSize int64
	b.ResetTimer()
	for i := range b.N {
		out := filepath.Join(work, fmt.Sprintf("ours-%d.age", i))
		t0 := time.Now()
		f, err := os.Create(out)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := Backup(context.Background(), f, src, noKeys{}, []string{"bench"}, ident.Recipient()); err != nil {
			b.Fatal(err)
		}
		if err := f.Close(); err != nil {
			b.Fatal(err)
		}
		ours = append(ours, time.Since(t0))
		st, _ := os.Stat(out)
		oursSize = st.Size()

		theirsOut := filepath.Join(work, fmt.Sprintf("theirs-%d.tar.age", i))
		t0 = time.Now()
		run(b, "bash", "-c", fmt.Sprintf("tar -C %s -cf - . | age -r %s -o %s", vol, ident.Recipient(), theirsOut))
		theirs = append(theirs, time.Since(t0))
		st, _ = os.Stat(theirsOut)
		theirsSize = st.Size()

		dst := &testBox{dir: filepath.Join(work, fmt.Sprintf("dst-%d", i)), records: map[string][]byte{}}
		t0 = time.Now()
		in, err := os.Open(out)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := Restore(context.Background(), in, dst, noKeys{}, false, ident); err != nil {
			b.Fatal(err)
		}
		in.Close()
		oursRestore = append(oursRestore, time.Since(t0))

		into := filepath.Join(work, fmt.Sprintf("untar-%d", i))
		if err := os.MkdirAll(into, 0o700); err != nil {
			b.Fatal(err)
		}
		t0 = time.Now()
		run(b, "bash", "-c", fmt.Sprintf("age -d -i %s %s | tar -C %s -xf - && sync -f %s", idFile, theirsOut, into, into))
		theirsRestore = append(theirsRestore, time.Since(t0))

		for _, p := range []string{out, theirsOut, dst.dir, into} {
			os.RemoveAll(p)
		}
	}
	b.StopTimer()
	mibps := func(d time.Duration) float64 { return float64(total) / (1 << 20) / d.Seconds() }
	mb, tb, mr, tr := median(ours), median(theirs), median(oursRestore), median(theirsRestore)
	b.ReportMetric(mibps(mb), "backup-MiB/s")
	b.ReportMetric(mibps(tb), "tar-age-MiB/s")
	b.ReportMetric(mibps(mb)/mibps(tb), "backup-ratio")
	b.ReportMetric(mibps(mr), "restore-MiB/s")
	b.ReportMetric(mibps(tr), "age-untar-MiB/s")
	b.ReportMetric(mibps(mr)/mibps(tr), "restore-ratio")
	fmt.Printf("\nappbackup vs tar|age, %d MiB volume, median of %d each, interleaved\n", total>>20, b.N)
	fmt.Printf("  backup : %6.0f MiB/s vs %6.0f MiB/s (tar | age)       ratio %.2f (target >= 0.8); archives %d vs %d bytes\n", mibps(mb), mibps(tb), mibps(mb)/mibps(tb), oursSize, theirsSize)
	fmt.Printf("  restore: %6.0f MiB/s vs %6.0f MiB/s (age -d | tar -x) ratio %.2f (target >= 0.8)\n", mibps(mr), mibps(tr), mibps(mr)/mibps(tr))
}

// makeBenchVolume writes an 896 MiB file and 4096 files of 32 KiB of incompressible data.
func makeBenchVolume(b *testing.B, dir string) int64 {
	b.Helper()
	if err := os.MkdirAll(filepath.Join(dir, "small"), 0o755); err != nil {
		b.Fatal(err)
	}
	rng := rand.NewChaCha8([32]byte{1})
	buf := make([]byte, 1<<20)
	f, err := os.Create(filepath.Join(dir, "big"))
	if err != nil {
		b.Fatal(err)
	}
	var total int64
	for range 896 {
		rng.Read(buf)
		n, err := f.Write(buf)
		if err != nil {
			b.Fatal(err)
		}
		total += int64(n)
	}
	f.Close()
	small := make([]byte, 32<<10)
	for i := range 4096 {
		rng.Read(small)
		if err := os.WriteFile(filepath.Join(dir, "small", fmt.Sprintf("%04d", i)), small, 0o644); err != nil {
			b.Fatal(err)
		}
		total += int64(len(small))
	}
	return total
}

func run(b *testing.B, name string, args ...string) {
	b.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		b.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}
