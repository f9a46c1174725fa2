package appbackup

import (
	"bytes"
	"encoding/json"
	"slices"
	"testing"
)

// TestImagesRoundTrip: the images an app runs that no registry serves (sent to its box as
// archives) are in its backup (one larger than a chunk), and a restore loads those the box lacks
// before it commits the app's record: on a fresh box both, on a box that has one of them only the
// other.
func TestImagesRoundTrip(t *testing.T) {
	src := newTestBox(t)
	src.addApp(t, "up", []Volume{{Name: "data"}})
	big, small := src.addImage(t, 2*dumpChunkBytes+7), src.addImage(t, 1000)
	rec, err := json.Marshal(testRecord{Image: big, Volumes: []Volume{{Name: "data"}}, Images: []string{big, small}})
	if err != nil {
		t.Fatal(err)
	}
	src.records["up"] = rec

	rcpt, id := x25519(t)
	archive, reps := src.backup(t, rcpt, "up")
	if want := []ImageReport{{big, 2*dumpChunkBytes + 7}, {small, 1000}}; len(reps) != 1 || !slices.Equal(reps[0].Images, want) {
		t.Fatalf("backup reports %+v, want the images %+v", reps, want)
	}

	fresh := newTestBox(t)
	got, err := Restore(t.Context(), bytes.NewReader(archive), fresh, fresh.keys, false, id)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(fresh.images[big], src.images[big]) || !bytes.Equal(fresh.images[small], src.images[small]) {
		t.Errorf("the fresh box has images of %d and %d bytes, want %d and %d", len(fresh.images[big]), len(fresh.images[small]), len(src.images[big]), len(src.images[small]))
	}
	if want := []string{"quiesce up", "load image " + big[:12], "load image " + small[:12], "commit up", "resume up"}; !slices.Equal(fresh.events, want) {
		t.Errorf("events %q, want %q", fresh.events, want)
	}
	if len(got) != 1 || len(got[0].Images) != 2 {
		t.Errorf("restore reports %+v", got)
	}

	half := newTestBox(t)
	half.images[small] = src.images[small]
	got, err = Restore(t.Context(), bytes.NewReader(archive), half, half.keys, false, id)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(half.images[big], src.images[big]) || slices.Contains(half.events, "load image "+small[:12]) {
		t.Errorf("on a box with one image: events %q, %d bytes of the other", half.events, len(half.images[big]))
	}
	if want := []ImageReport{{big, 2*dumpChunkBytes + 7}}; len(got) != 1 || !slices.Equal(got[0].Images, want) {
		t.Errorf("restore reports %+v, want the images %+v", got, want)
	}
}
