package cli

import (
	"bufio"
	"io"
	"text/tabwriter"
)

// table is the CLI's tabular output (ls, image ls, dns ls, the onion listings): columns aligned
// two spaces apart, written to w in one go at Flush. A tabwriter alone writes every cell and
// every run of padding with a write call of its own: `ls` of 1000 apps made thousands of them
// (a third of the command's CPU).
type table struct {
	*tabwriter.Writer
	buf *bufio.Writer
}

func newTable(w io.Writer) *table {
	buf := bufio.NewWriterSize(w, 64<<10)
	return &table{Writer: tabwriter.NewWriter(buf, 0, 4, 2, ' ', 0), buf: buf}
}

// Flush aligns and writes what was written since the last Flush.
func (t *table) Flush() error {
	if err := t.Writer.Flush(); err != nil {
		return err
	}
	return t.buf.Flush()
}
