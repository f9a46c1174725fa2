package onion

import (
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"
)

// Service is one onion service the Manager keeps in tor.
type Service struct {
	App string
	Key *Key
	// Ports maps virtual ports of the .onion to targets. Several are allowed.
	Ports []Port
	// Clients turns on v3 client authorization: only these clients can reach the service.
	// Empty means open to everyone.
	Clients []AuthorizedClient
}

// Port is one virtual port and where tor forwards it.
type Port struct {
	Virtual uint16
	// Target is "IPv4:port", "[IPv6]:port" or "unix:/absolute/path".
	Target string
}

func (p Port) validate() error {
	if p.Virtual == 0 {
		return fmt.Errorf("virtual port 0: %w", ErrBadInput)
	}
	if path, ok := strings.CutPrefix(p.Target, "unix:"); ok {
		if !strings.HasPrefix(path, "/") || strings.ContainsAny(path, " \t\r\n,\"\\") {
			return fmt.Errorf("target %q: want unix:/absolute/path without spaces, commas or quotes: %w", p.Target, ErrBadInput)
		}
		return nil
	}
	ap, err := netip.ParseAddrPort(p.Target)
	if err != nil || ap.Port() == 0 || ap.Addr().Zone() != "" {
		return fmt.Errorf("target %q: want IPv4:port, [IPv6]:port or unix:/path: %w", p.Target, ErrBadInput)
	}
	return nil
}

// validate checks a service and returns its signature: ports and clients in a canonical
// form (no secret), to tell whether a live service needs to be re-added.
func (s *Service) validate() (string, error) {
	if err := checkAppName(s.App); err != nil {
		return "", err
	}
	if s.Key == nil {
		return "", fmt.Errorf("onion: service %q: no key: %w", s.App, ErrBadInput)
	}
	if len(s.Ports) == 0 {
		return "", fmt.Errorf("onion: service %q: no ports: %w", s.App, ErrBadInput)
	}
	var b strings.Builder
	for _, p := range s.Ports {
		if err := p.validate(); err != nil {
			return "", fmt.Errorf("onion: service %q: %w", s.App, err)
		}
		b.WriteString(strconv.Itoa(int(p.Virtual)))
		b.WriteByte(',')
		b.WriteString(p.Target)
		b.WriteByte(' ')
	}
	if err := checkClientList(s.Clients); err != nil {
		return "", fmt.Errorf("onion: service %q: %w", s.App, err)
	}
	keys := make([]string, len(s.Clients))
	seen := map[[32]byte]bool{}
	for i, c := range s.Clients {
		if seen[c.PublicKey] {
			return "", fmt.Errorf("onion: service %q: client %q: same key as another client: %w", s.App, c.Name, ErrBadInput)
		}
		seen[c.PublicKey] = true
		keys[i] = authKeyEncoding.EncodeToString(c.PublicKey[:])
	}
	sort.Strings(keys)
	b.WriteString("|")
	b.WriteString(strings.Join(keys, " "))
	return b.String(), nil
}

// addOnionCommand is the ADD_ONION line for the service. It holds the secret key.
func (s *Service) addOnionCommand() string {
	var b strings.Builder
	b.WriteString("ADD_ONION ")
	b.WriteString(s.Key.addOnionBlob())
	b.WriteString(" Flags=Detach")
	if len(s.Clients) > 0 {
		b.WriteString(",V3Auth")
	}
	for _, p := range s.Ports {
		fmt.Fprintf(&b, " Port=%d,%s", p.Virtual, p.Target)
	}
	for _, c := range s.Clients {
		b.WriteString(" ClientAuthV3=")
		b.WriteString(authKeyEncoding.EncodeToString(c.PublicKey[:]))
	}
	return b.String()
}
