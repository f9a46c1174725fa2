package dns_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/onionpod/onionpod/dns"
	"github.com/onionpod/onionpod/dns/dnstest"
)

// damages are the ways a state file is found broken: cut short (a disk that
// lost the tail) and garbled (bytes overwritten, here the whole first half,
// serial included).
var damages = []struct {
	name string
	do   func([]byte) []byte
}{
	{"truncated", func(b []byte) []byte { return b[:len(b)/2] }},
	{"garbled", func(b []byte) []byte {
		b = slices.Clone(b)
		for i := range len(b) / 2 {
			b[i] ^= 0x5a
		}
		return b
	}},
}

func damageFile(t *testing.T, path string, do func([]byte) []byte) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, do(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

// wantQuarantined checks that the damaged file was kept aside, as damaged.
func wantQuarantined(t *testing.T, path string, do func([]byte) []byte, orig []byte) {
	t.Helper()
	kept, _ := filepath.Glob(path + ".damaged-*")
	if len(kept) != 1 {
		t.Fatalf("damaged copies of %s: %v", path, kept)
	}
	if data, _ := os.ReadFile(kept[0]); string(data) != string(do(orig)) {
		t.Fatalf("%s does not hold the damaged file", kept[0])
	}
}

func waitAt(t *testing.T, port int, name, want string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, _ := dnstest.Dig(context.Background(), "@127.0.0.1", "-p", strconv.Itoa(port), "+short", name, "AAAA")
		if strings.TrimSpace(out) == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s AAAA at port %d: %q, want %q", name, port, out, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestServerDamagedState: a truncated or garbled zone.json neither stops
// the server nor loses the secondaries. After a busy day (150 changes ran
// the serial ahead of the date) the state file is damaged; NewServer moves
// it aside, reports it, starts with no records and a serial the BIND
// secondary still takes (when the file no longer shows the serial, the
// server asks the secondary for its serial and moves past it), and the
// next Set reaches the secondary.
func TestServerDamagedState(t *testing.T) {
	dnstest.NeedDig(t)
	for _, d := range damages {
		t.Run(d.name, func(t *testing.T) {
			key := dnstest.RandomKey("secondary-key.", "hmac-sha256")
			srvPort, err := dnstest.FreePort()
			if err != nil {
				t.Fatal(err)
			}
			secPort, err := dnstest.FreePort()
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			cfg := dns.ServerConfig{
				Zone: zone, Listen: []string{"127.0.0.1:" + strconv.Itoa(srvPort)}, StateDir: dir,
				TSIGKeys:    []dns.TSIGKey{key},
				Secondaries: []dns.Secondary{{Addr: "127.0.0.1:" + strconv.Itoa(secPort), KeyName: key.Name}},
			}
			s1, err := dns.NewServer(cfg)
			if err != nil {
				t.Fatal(err)
			}
			for i := range 150 {
				mustSet(t, s1, rec("blog.box.example", fmt.Sprintf("2001:db8:1::%x", i+1)))
			}
			if err := s1.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			named := dnstest.New(t, dnstest.NamedOptions{
				Zone: zone, Port: secPort, Keys: []dns.TSIGKey{key},
				Primary: net.JoinHostPort("127.0.0.1", strconv.Itoa(srvPort)),
			})
			waitAt(t, secPort, "blog.box.example", "2001:db8:1::96")
			old := s1.Serial()
			_ = s1.Close()

			path := filepath.Join(dir, "zone.json")
			orig, _ := os.ReadFile(path)
			damageFile(t, path, d.do)
			s2, err := dns.NewServer(cfg)
			if err != nil {
				t.Fatalf("NewServer with a %s zone.json: %v", d.name, err)
			}
			if err := s2.Damaged(); !errors.Is(err, dns.ErrDamaged) || !strings.Contains(s2.Status().Damaged, "zone.json.damaged-") {
				t.Fatalf("damage not reported: %v / %q", err, s2.Status().Damaged)
			}
			wantQuarantined(t, path, d.do, orig)
			if len(s2.Records()) != 0 {
				t.Fatalf("records after a damaged state: %v", s2.Records())
			}
			if err := s2.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = s2.Close() })
			mustSet(t, s2, rec("blog.box.example", "2001:db8:1::99"), rec("wiki.box.example", "2001:db8:1::20"))
			waitAt(t, srvPort, "blog.box.example", "2001:db8:1::99")
			waitAt(t, secPort, "blog.box.example", "2001:db8:1::99")
			waitAt(t, secPort, "wiki.box.example", "2001:db8:1::20")
			if n := s2.Serial(); n == old || n-old >= 1<<31 {
				t.Fatalf("serial %d after recovery is not ahead of %d", n, old)
			}
			if got, err := named.Serial(context.Background()); err != nil || got != s2.Serial() {
				t.Fatalf("secondary serial %d (%v), primary %d", got, err, s2.Serial())
			}
			// The state is whole again: a restart keeps it.
			_ = s2.Close()
			s3, err := dns.NewServer(cfg)
			if err != nil || s3.Damaged() != nil || len(s3.Records()) != 2 || s3.Serial() != s2.Serial() {
				t.Fatalf("restart after recovery: %v, damaged %v, %v serial %d", err, s3.Damaged(), s3.Records(), s3.Serial())
			}
		})
	}
}

// TestRFC2136DamagedLedger: a truncated or garbled ledger neither stops the
// publisher nor leaves records it published behind. With the ledger's copy
// intact, every name onionpod published is cleaned up at the next Set;
// with the copy damaged too, the names of the next Set are replaced whole
// (never a stale address beside the new one).
func TestRFC2136DamagedLedger(t *testing.T) {
	dnstest.NeedDig(t)
	named := dnstest.New(t, dnstest.NamedOptions{})
	i := 0
	for _, d := range damages {
		for _, copyToo := range []bool{false, true} {
			i++
			name := d.name
			if copyToo {
				name += " and its copy"
			}
			t.Run(name, func(t *testing.T) {
				a, b := fmt.Sprintf("a%d.box.example.", i), fmt.Sprintf("b%d.box.example.", i)
				ledger := filepath.Join(t.TempDir(), "ledger.json")
				p1 := newPublisher(t, named, ledger, nil)
				mustSet(t, p1, rec(a, "2001:db8::a"), rec(b, "2001:db8::b"))

				orig, _ := os.ReadFile(ledger)
				damageFile(t, ledger, d.do)
				if copyToo {
					damageFile(t, ledger+".copy", d.do)
				}
				p2, err := dns.NewRFC2136(dns.RFC2136Config{
					Server: named.Addr(), Zone: named.Zone(), TSIG: named.Key(), LedgerPath: ledger, Timeout: 2 * time.Second,
				})
				if err != nil {
					t.Fatalf("NewRFC2136 with a %s ledger: %v", name, err)
				}
				if err := p2.Damaged(); !errors.Is(err, dns.ErrDamaged) || !strings.Contains(p2.Status().Damaged, "ledger.json.damaged-") {
					t.Fatalf("damage not reported: %v / %q", err, p2.Status().Damaged)
				}
				wantQuarantined(t, ledger, d.do, orig)

				mustSet(t, p2, rec(a, "2001:db8::a2"))
				waitLookup(t, named, a, "2001:db8::a2")
				if !copyToo {
					waitLookup(t, named, b) // known from the copy: removed
				}
				if st := p2.Status(); st.Pending || len(st.Published) != 1 {
					t.Fatalf("status after recovery %+v", st)
				}
				// The ledger is whole again.
				p3 := newPublisher(t, named, ledger, nil)
				if p3.Damaged() != nil || len(p3.Published()) != 1 {
					t.Fatalf("restart after recovery: damaged %v, published %v", p3.Damaged(), p3.Published())
				}
				mustSet(t, p3)
				waitLookup(t, named, a)
			})
		}
	}
}
