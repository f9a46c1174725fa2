package pods

import (
	"bufio"
	"compress/gzip"
	"io"

	"github.com/klauspost/compress/zstd"

	"github.com/onionpod/onionpod/internal/atomicfile"
)

func writeJSON(path string, v any) error {
	_, err := atomicfile.WriteJSON(path, v, 0o600)
	return err
}

func readJSON(path string, v any) error { return atomicfile.ReadJSON(path, v) }

// decompress recognises gzip and zstd streams by their magic bytes; anything else is passed
// through as a plain tar.
func decompress(r io.Reader) (io.ReadCloser, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	magic, _ := br.Peek(4)
	switch {
	case len(magic) >= 2 && magic[0] == 0x1f && magic[1] == 0x8b:
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, err
		}
		return zr, nil
	case len(magic) == 4 && magic[0] == 0x28 && magic[1] == 0xb5 && magic[2] == 0x2f && magic[3] == 0xfd:
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(256<<20))
		if err != nil {
			return nil, err
		}
		return zr.IOReadCloser(), nil
	default:
		return io.NopCloser(br), nil
	}
}
