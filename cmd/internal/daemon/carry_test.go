package daemon

import (
	"strings"
	"testing"
	"time"

	"github.com/onionpod/onionpod/cmd/internal/store"
)

// TestCarryImages: a change keeps what runs of a container whose reference is unchanged (its
// image ID, previous one and source), remembers the image that ran when the reference changes,
// gives an uploaded image its own ID, and keeps IDs the change sets itself (a rollback). An
// update's trial goes on through a change that keeps the image; a change of the reference ends
// it, and a trial the change names itself is ignored (only an update starts one).
func TestCarryImages(t *testing.T) {
	id := func(c string) string { return "sha256:" + strings.Repeat(c, 64) }
	trial := &store.Trial{Deadline: time.Now().Add(time.Minute), Grace: time.Minute, Back: store.ImageFields{Image: "r.example/pg:14", ImageID: id("9")}}
	old := store.App{Name: "notes", Containers: []store.Container{
		{Name: "db", Image: "r.example/pg:15", ImageID: id("a"), PreviousImageID: id("9"), Trial: trial},
		{Name: "web", Image: "r.example/notes:1", ImageID: id("b"), Trial: trial},
		{Name: "up", Image: id("c"), ImageID: id("c"), Source: "/home/me/up.tar"},
	}}
	next := []store.Container{
		{Name: "db", Image: "r.example/pg:15"},                              // unchanged
		{Name: "web", Image: "r.example/notes:2"},                           // a new reference
		{Name: "up", Image: id("c")},                                        // the same upload, applied from an export
		{Name: "new", Image: id("d"), Source: "/tmp/new.tar", Trial: trial}, // a new container of a sent image
		{Name: "back", Image: "r.example/x:1", ImageID: id("e"), PreviousImageID: id("f")},
	}
	got := carryImages(old, next)
	want := []store.Container{
		{Name: "db", Image: "r.example/pg:15", ImageID: id("a"), PreviousImageID: id("9")},
		{Name: "web", Image: "r.example/notes:2", PreviousImageID: id("b")},
		{Name: "up", Image: id("c"), ImageID: id("c"), Source: "/home/me/up.tar"},
		{Name: "new", Image: id("d"), ImageID: id("d"), Source: "/tmp/new.tar"},
		{Name: "back", Image: "r.example/x:1", ImageID: id("e"), PreviousImageID: id("f")},
	}
	for i := range want {
		if g, w := got[i], want[i]; g.Image != w.Image || g.ImageID != w.ImageID || g.PreviousImageID != w.PreviousImageID || g.Source != w.Source {
			t.Errorf("%s: %+v\nwant %+v", w.Name, g, w)
		}
	}
	for i, c := range got {
		if onTrial := c.Trial != nil; onTrial != (i == 0) {
			t.Errorf("%s: trial %+v", c.Name, c.Trial)
		}
	}
	if next[0].ImageID != "" {
		t.Error("carryImages changed its input")
	}
}

// TestOneLine: the reason of a rollback is kept as one line the record accepts, however long or
// broken the health check's words.
func TestOneLine(t *testing.T) {
	long := strings.Repeat("é", store.MaxReason) // two bytes each
	for in, want := range map[string]string{
		"not healthy after 8s":        "not healthy after 8s",
		"HTTP 500\r\nSet-Cookie: x\t": "HTTP 500  Set-Cookie: x ",
		"a\u2028b\xffc":               "a b c",
		long:                          long[:store.MaxReason],
	} {
		if got := oneLine(in); got != want {
			t.Errorf("oneLine(%.40q) = %.40q, want %.40q", in, got, want)
		}
	}
}
