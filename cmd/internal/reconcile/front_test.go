package reconcile

import (
	"slices"
	"testing"

	"github.com/onionpod/onionpod/cmd/internal/store"
	"github.com/onionpod/onionpod/front"
	"github.com/onionpod/onionpod/network"
)

// TestNetAttachmentWithFront: with an HTTPS front, the LAN's :80 and :443 go to the front's
// ports and every other published port stays the app's; without, nothing changes.
func TestNetAttachmentWithFront(t *testing.T) {
	app := store.App{Name: "blog", Ports: []store.Port{{Public: 80, Target: 8080}, {Public: 2222, Target: 22}}}
	plain := NetAttachment(app, false).Ports
	if !slices.Equal(plain, []network.PortMap{{Public: 80, Target: 8080}, {Public: 2222, Target: 22}}) {
		t.Errorf("without a front: %v", plain)
	}
	got := NetAttachment(app, true).Ports
	want := []network.PortMap{{Public: 2222, Target: 22}, {Public: 80, Target: front.HTTPPort}, {Public: 443, Target: front.TLSPort}}
	if !slices.Equal(got, want) {
		t.Errorf("with a front: %v, want %v", got, want)
	}
}
