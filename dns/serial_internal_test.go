package dns

import (
	"testing"
	"time"
)

func TestNextSerial(t *testing.T) {
	day := time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)
	for _, c := range []struct{ prev, want uint32 }{
		{0, 2026112900},                                  // first change: today's date
		{2026112900, 2026112901},                         // then counting
		{2026112999, 2026113000},                         // 100 changes: runs into tomorrow's numbers
		{2026113005, 2026113006},                         // and never back
		{2025010100, 2026112900},                         // an old date serial jumps to today
		{4294967295, 2026112900},                         // past the wrap today is ahead again (RFC 1982)
		{2026112900 + 1<<31 - 5, 2026112900 + 1<<31 - 4}, // today is "behind" in serial arithmetic
	} {
		got := nextSerial(c.prev, day)
		if got != c.want {
			t.Errorf("nextSerial(%d) = %d, want %d", c.prev, got, c.want)
		}
		if !serialGreater(got, c.prev) {
			t.Errorf("nextSerial(%d) = %d went backwards", c.prev, got)
		}
	}
}
