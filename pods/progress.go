package pods

import (
	"io"
	"os"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// progress is a byte progress bar drawn only on a terminal; on anything else (a nil writer, a
// file, a pipe) it draws nothing. A nil *progress is valid and silent.
type progress struct {
	bar *progressbar.ProgressBar
}

func newProgress(w io.Writer, total int64, what string) *progress {
	f, ok := w.(*os.File)
	if !ok || f == nil || !term.IsTerminal(int(f.Fd())) {
		return nil
	}
	return &progress{bar: progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(f),
		progressbar.OptionSetDescription(what),
		progressbar.OptionShowBytes(true),
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(100_000_000), // 100 ms
		progressbar.OptionClearOnFinish(),
	)}
}

func (p *progress) Write(b []byte) (int, error) {
	if p != nil {
		_ = p.bar.Add(len(b))
	}
	return len(b), nil
}

func (p *progress) finish() {
	if p != nil {
		_ = p.bar.Finish()
	}
}
