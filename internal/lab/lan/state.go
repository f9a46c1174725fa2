package lan

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/onionpod/onionpod/internal/atomicfile"
)

// lanState is what Reopen needs to take a LAN over from the process that started it (the lab's
// "up" and "down" are separate commands). Stored as WorkDir/lan.json.
type lanState struct {
	Version  int            `json:"version"`
	Name     string         `json:"name"`
	WorkDir  string         `json:"workDir"`
	OwnWork  bool           `json:"ownWork"`
	NetnsDir string         `json:"netnsDir"`
	OwnDir   bool           `json:"ownDir"`
	LAN      string         `json:"lanNetns"`
	Client   string         `json:"clientNetns"`
	Box      string         `json:"boxNetns"`
	OwnBox   bool           `json:"ownBox"`
	Uplink   string         `json:"uplink"`
	MadeLink bool           `json:"madeLink"`
	IPv4     bool           `json:"ipv4"`
	Prefix   netip.Prefix   `json:"prefix"`
	Retired  []netip.Prefix `json:"retired,omitempty"`
	Radvd    *daemon        `json:"radvd"`
	Dnsmasq  *daemon        `json:"dnsmasq,omitempty"`
}

const stateVersion = 1

func (l *LAN) statePath() string { return filepath.Join(l.workDir, "lan.json") }

// saveState writes the state file (call with l.mu held).
func (l *LAN) saveState() error {
	b, err := json.MarshalIndent(lanState{
		Version: stateVersion, Name: l.name, WorkDir: l.workDir, OwnWork: l.ownWork,
		NetnsDir: l.netnsDir, OwnDir: l.ownDir, LAN: l.lanNS, Client: l.client, Box: l.box,
		OwnBox: l.ownBox, Uplink: l.uplink, MadeLink: l.madeLink, IPv4: l.ipv4,
		Prefix: l.prefix, Retired: l.retired, Radvd: l.radvd, Dnsmasq: l.dnsmasq,
	}, "", "  ")
	if err != nil {
		return err
	}
	_, err = atomicfile.WriteFile(l.statePath(), b, 0o600)
	return err
}

// WorkDir is the LAN's directory of configs, logs, leases and state: what Reopen takes.
func (l *LAN) WorkDir() string { return l.workDir }

// Reopen takes over a running LAN started (by Start) in another process, from its work dir: its
// methods then work as in the starting process, and its Close stops the daemons (recognised by
// their command lines, never by PID alone) and removes everything.
func Reopen(workDir string) (*LAN, error) {
	b, err := os.ReadFile(filepath.Join(workDir, "lan.json"))
	if err != nil {
		return nil, fmt.Errorf("lan: reopen: %w", err)
	}
	var st lanState
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("lan: reopen %s: %w", workDir, err)
	}
	if st.Version != stateVersion || st.Radvd == nil {
		return nil, fmt.Errorf("lan: reopen %s: unknown state version %d", workDir, st.Version)
	}
	for _, d := range []*daemon{st.Radvd, st.Dnsmasq} {
		if d != nil {
			d.dir = st.WorkDir
		}
	}
	return &LAN{
		name: st.Name, workDir: st.WorkDir, ownWork: st.OwnWork, netnsDir: st.NetnsDir,
		ownDir: st.OwnDir, lanNS: st.LAN, client: st.Client, box: st.Box, ownBox: st.OwnBox,
		uplink: st.Uplink, madeLink: st.MadeLink, ipv4: st.IPv4, prefix: st.Prefix,
		retired: st.Retired, radvd: st.Radvd, dnsmasq: st.Dnsmasq,
	}, nil
}
