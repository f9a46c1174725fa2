package tornet

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"strings"
)

// CheckTorrc refuses a torrc that could make tor contact the public Tor network: it must
// contain "DisableNetwork 1", or "TestingTorNetwork 1" with "UseDefaultFallbackDirs 0", at
// least one DirAuthority, and every DirAuthority and FallbackDir on 127.0.0.1, and no
// bridges.
func CheckTorrc(torrc []byte) error {
	var disabled, testing, noFallbacks bool
	var auths int
	sc := bufio.NewScanner(bytes.NewReader(torrc))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		key, val, _ := strings.Cut(line, " ")
		val = strings.TrimSpace(val)
		switch strings.ToLower(key) {
		case "disablenetwork":
			disabled = val == "1"
		case "testingtornetwork":
			testing = val == "1"
		case "usedefaultfallbackdirs":
			noFallbacks = val == "0"
		case "dirauthority", "alternatedirauthority", "fallbackdir":
			if !onlyLoopback(val) {
				return fmt.Errorf("tornet: unsafe torrc: %s not on 127.0.0.1: %q", key, line)
			}
			if strings.ToLower(key) != "fallbackdir" {
				auths++
			}
		case "bridge":
			return fmt.Errorf("tornet: unsafe torrc: %q", line)
		case "usebridges":
			if val != "0" {
				return fmt.Errorf("tornet: unsafe torrc: %q", line)
			}
		}
	}
	if disabled {
		return nil
	}
	if testing && noFallbacks && auths > 0 {
		return nil
	}
	return errors.New("tornet: unsafe torrc: want DisableNetwork 1, or TestingTorNetwork 1 with UseDefaultFallbackDirs 0 and DirAuthority lines on 127.0.0.1")
}

// onlyLoopback reports whether every address:port field of a DirAuthority/FallbackDir value
// is on 127.0.0.1 (orport= and ipv6= keywords are checked too).
func onlyLoopback(val string) bool {
	found := false
	for _, f := range strings.Fields(val) {
		if strings.HasPrefix(f, "ipv6=") {
			return false
		}
		if strings.Count(f, ":") == 1 && strings.Contains(f, ".") {
			host, _, _ := strings.Cut(f, ":")
			host = strings.TrimPrefix(host, "address=")
			if host != "127.0.0.1" {
				return false
			}
			found = true
		}
	}
	return found
}
