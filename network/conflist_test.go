package network

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/containernetworking/cni/libcni"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

func TestConflistGolden(t *testing.T) {
	tests := []struct {
		name, uplink, app, dhcpSocket string
	}{
		{"lan-ipv6", "eth0", "blog", ""},
		{"lan-ipv4", "enp3s0", "wiki", "/run/onionpod/dhcp.sock"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Conflist(tt.uplink, PredictMAC(tt.app), tt.dhcpSocket)
			golden := filepath.Join("testdata", tt.name+".golden")
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("conflist differs from %s (run with -update if intended):\n%s", golden, got)
			}
			// libcni must accept what we render.
			list, err := libcni.ConfListFromBytes(got)
			if err != nil {
				t.Fatal(err)
			}
			if list.CNIVersion != "1.0.0" || len(list.Plugins) != 1 || list.Plugins[0].Network.Type != "macvlan" {
				t.Errorf("unexpected parse: %+v", list)
			}
		})
	}
}
