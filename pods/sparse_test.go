package pods

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// sparseTar is a PAX GNU sparse 1.0 entry of realSize bytes with one data byte at its end, built
// by hand (tar.Writer drops GNU sparse records).
func sparseTar(t *testing.T, realSize int64) []byte {
	t.Helper()
	var out bytes.Buffer
	pax := ""
	for _, kv := range [][2]string{{"GNU.sparse.major", "1"}, {"GNU.sparse.minor", "0"},
		{"GNU.sparse.name", "big"}, {"GNU.sparse.realsize", itoa64(realSize)}} {
		rec := " " + kv[0] + "=" + kv[1] + "\n"
		n := len(rec) + 1
		for len(itoa64(int64(n)))+len(rec) != n {
			n++
		}
		pax += itoa64(int64(n)) + rec
	}
	sparseMap := "1\n" + itoa64(realSize-1) + "\n1\n"
	body := append([]byte(sparseMap), make([]byte, 512-len(sparseMap))...)
	body = append(body, 'x')
	out.Write(rawHeader("PaxHeaders/big", 'x', int64(len(pax))))
	out.Write(padBlock([]byte(pax)))
	out.Write(rawHeader("GNUSparseFile.0/big", '0', int64(len(body))))
	out.Write(padBlock(body))
	out.Write(make([]byte, 1024))
	return out.Bytes()
}

func padBlock(b []byte) []byte {
	if r := len(b) % 512; r != 0 {
		b = append(b, make([]byte, 512-r)...)
	}
	return b
}

// rawHeader is a ustar header block.
func rawHeader(name string, typ byte, size int64) []byte {
	b := make([]byte, 512)
	copy(b[0:100], name)
	copy(b[100:108], "0000644\x00")
	copy(b[108:116], "0000000\x00")
	copy(b[116:124], "0000000\x00")
	copy(b[124:136], fmt.Sprintf("%011o\x00", size))
	copy(b[136:148], fmt.Sprintf("%011o\x00", 1700000000))
	b[156] = typ
	copy(b[257:265], "ustar\x0000")
	copy(b[148:156], "        ")
	sum := 0
	for _, c := range b {
		sum += int(c)
	}
	copy(b[148:156], fmt.Sprintf("%06o\x00 ", sum))
	return b
}

func itoa64(n int64) string { return strconv.FormatInt(n, 10) }

// A sparse entry is written with holes (little disk), and one beyond the budget is refused.
func TestUnpackSparse(t *testing.T) {
	s := newSandbox(t)
	start := time.Now()
	if err := applyLayers(t, s.root, sparseTar(t, 256<<20)); err != nil {
		t.Fatal(err)
	}
	t.Logf("a 256 MiB sparse entry took %v", time.Since(start))
	st, err := os.Stat(filepath.Join(s.root, "big"))
	if err != nil || st.Size() != 256<<20 {
		t.Fatalf("big: %v, %v", st, err)
	}
	if blocks := st.Sys().(*syscall.Stat_t).Blocks; blocks*512 > 1<<20 {
		t.Errorf("big uses %d bytes of disk: holes were written as zeros", blocks*512)
	}
	s2 := newSandbox(t)
	u, err := newUnpacker(s2.root, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	if err := u.applyLayer(bytes.NewReader(sparseTar(t, 1<<30))); err == nil {
		t.Errorf("a sparse entry over the budget was accepted")
	}
	s2.untouched(t)
}
