package network

import (
	"slices"
	"strings"
	"testing"
)

func TestWirelessInterfaces(t *testing.T) {
	const procNetWireless = `Inter-| sta-|   Quality        |   Discarded packets               | Missed | WE
 face | tus | link level noise |  nwid  crypt   frag  retry   misc | beacon | 22
wlp2s0: 0000   58.  -52.  -256        0      0      0      0    143        0
 wlan1: 0000    0.    0.     0        0      0      0      0      0        0
`
	got, err := wirelessInterfaces(strings.NewReader(procNetWireless))
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"wlp2s0", "wlan1"}; !slices.Equal(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
}
