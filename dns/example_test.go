package dns_test

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/onionpod/onionpod/dns"
)

// The built-in server serving an app's addresses; the same Set works on
// an RFC2136 publisher.
func ExampleServer() {
	s, err := dns.NewServer(dns.ServerConfig{Zone: "box.example", Listen: []string{"127.0.0.1:0"}})
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	if err := s.Start(ctx); err != nil {
		panic(err)
	}
	defer s.Close()
	recs, _ := dns.AppRecords("blog", "box.example", netip.MustParseAddr("2001:db8:1::10"), netip.MustParseAddr("192.0.2.10"))
	if err := s.Set(ctx, recs); err != nil {
		panic(err)
	}
	for _, r := range s.Status().Published {
		fmt.Println(r)
	}
	// Output:
	// blog.box.example. A 192.0.2.10
	// blog.box.example. AAAA 2001:db8:1::10
}
