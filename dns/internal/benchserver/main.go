// Command benchserver runs the built-in authoritative server for
// e2e/bench/dns.sh: it serves the records of a file ("NAME ADDRESS" per
// line) until SIGINT or SIGTERM. With -echo it is instead a UDP echo
// server on the same sockets and batched I/O (dns/internal/udpbatch) that
// only sets the response bit of each request: the floor the benchmark
// quotes, what this machine and dnsperf measure with no DNS work at all.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"

	"github.com/onionpod/onionpod/dns"
	"github.com/onionpod/onionpod/dns/internal/udpbatch"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "benchserver:", err)
		os.Exit(1)
	}
}

func run() error {
	listen := flag.String("listen", "127.0.0.1:0", "address to serve on (UDP and TCP)")
	zone := flag.String("zone", "bench.example.", "zone")
	records := flag.String("records", "", "file of NAME ADDRESS lines")
	sockets := flag.Int("sockets", 0, "UDP sockets (SO_REUSEPORT); 0: one per CPU, steered by CPU")
	ns := flag.String("ns-addr", "127.0.0.1", "address of ns1.ZONE")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile to this file")
	echo := flag.Bool("echo", false, "echo each request with the response bit set, no DNS")
	flag.Parse()
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *echo {
		return serveEcho(ctx, *listen, *sockets)
	}

	var recs []dns.Record
	if *records != "" {
		f, err := os.Open(*records)
		if err != nil {
			return err
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) != 2 {
				continue
			}
			a, err := netip.ParseAddr(fields[1])
			if err != nil {
				return err
			}
			recs = append(recs, dns.Record{Name: fields[0], Addr: a})
		}
		_ = f.Close()
	}
	nsAddr, err := netip.ParseAddr(*ns)
	if err != nil {
		return err
	}
	s, err := dns.NewServer(dns.ServerConfig{
		Zone:       *zone,
		NS:         []dns.NameServer{{Host: "ns1." + *zone, Addrs: []netip.Addr{nsAddr}}},
		Listen:     []string{*listen},
		UDPSockets: *sockets,
	})
	if err != nil {
		return err
	}
	if err := s.Set(ctx, recs); err != nil {
		return err
	}
	if err := s.Start(ctx); err != nil {
		return err
	}
	fmt.Println("ready", s.Addrs()[0], len(recs), "records")
	<-ctx.Done()
	return s.Close()
}

// echoHandler answers a request with itself, the response bit set.
type echoHandler struct{}

func (echoHandler) Answer(req, _ []byte) []byte {
	if len(req) < 12 {
		return nil
	}
	req[2] |= 0x80
	return req
}

// serveEcho runs the echo floor on a socket group bound as the built-in
// server binds its own.
func serveEcho(ctx context.Context, listen string, sockets int) error {
	g, err := udpbatch.Listen(listen, sockets)
	if err != nil {
		return err
	}
	defer g.Close()
	g.Serve(func() udpbatch.Handler { return echoHandler{} })
	fmt.Println("ready", g.Addr(), "echo,", g.Sockets(), "sockets")
	<-ctx.Done()
	return nil
}
