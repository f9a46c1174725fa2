package appbackup

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/onionpod/onionpod/internal/errkind"
)

// The PAX records of a sparse file: the offsets and lengths of its data segments, and its
// length. Its entry's content is the segments, one after the other.
const (
	paxSparseMap  = "ONIONPOD.sparse.map"
	paxSparseSize = "ONIONPOD.sparse.size"
)

// maxSegments bounds a sparse map (its PAX record): a file fragmented into more segments is
// stored with its smallest holes filled in.
const maxSegments = 4096

type segment struct{ offset, length int64 }

// dataSegments maps the data of the file fd (of length size) with SEEK_DATA and SEEK_HOLE; ok
// is false when the file system cannot say, or the file has no holes after all.
func dataSegments(fd int, size int64) (segs []segment, ok bool) {
	for off := int64(0); off < size; {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole up to the end
		}
		if err != nil {
			return nil, false
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			return nil, false
		}
		hole = min(hole, size)
		if hole > data {
			segs = append(segs, segment{data, hole - data})
		}
		off = hole
	}
	if len(segs) == 1 && segs[0] == (segment{0, size}) {
		return nil, false
	}
	return coalesce(segs), true
}

// coalesce fills the smallest holes until at most maxSegments segments remain.
func coalesce(segs []segment) []segment {
	for gap := int64(4096); len(segs) > maxSegments; gap *= 2 {
		out := segs[:1]
		for _, s := range segs[1:] {
			last := &out[len(out)-1]
			if s.offset-(last.offset+last.length) <= gap {
				last.length = s.offset + s.length - last.offset
				continue
			}
			out = append(out, s)
		}
		segs = out
	}
	return segs
}

func formatSegments(segs []segment) string {
	var b strings.Builder
	for i, s := range segs {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatInt(s.offset, 10))
		b.WriteByte(',')
		b.WriteString(strconv.FormatInt(s.length, 10))
	}
	return b.String()
}

// parseSparse reads a sparse file's records: its segments, in order, within its length, and
// adding up to the entry's size.
func parseSparse(records map[string]string, entrySize int64) (segs []segment, size int64, sparse bool, err error) {
	m, hasMap := records[paxSparseMap]
	sz, hasSize := records[paxSparseSize]
	if !hasMap && !hasSize {
		return nil, 0, false, nil
	}
	bad := func(why string) error { return errkind.BadInputf("sparse file: %s", why) }
	if !hasMap || !hasSize {
		return nil, 0, false, bad("map or size missing")
	}
	size, err = strconv.ParseInt(sz, 10, 64)
	if err != nil || size < 0 {
		return nil, 0, false, bad("size")
	}
	var total, end int64
	if m != "" {
		f := strings.Split(m, ",")
		if len(f)%2 != 0 || len(f)/2 > maxSegments {
			return nil, 0, false, bad("map")
		}
		for i := 0; i < len(f); i += 2 {
			off, err1 := strconv.ParseInt(f[i], 10, 64)
			n, err2 := strconv.ParseInt(f[i+1], 10, 64)
			if err1 != nil || err2 != nil || off < end || n <= 0 || off > size-n {
				return nil, 0, false, bad(fmt.Sprintf("segment %d", i/2))
			}
			segs = append(segs, segment{off, n})
			end, total = off+n, total+n
		}
	}
	if total != entrySize {
		return nil, 0, false, bad("segments do not add up to the entry's size")
	}
	return segs, size, true, nil
}
