package dns

// Modes of Status.
const (
	ModeBuiltin = "builtin"
	ModeRFC2136 = "rfc2136"
)

// Status is what a publisher has published and where, for `onionpod dns ls`.
type Status struct {
	// Mode is ModeBuiltin or ModeRFC2136.
	Mode string `json:"mode"`
	// Zone is the canonical zone apex.
	Zone string `json:"zone"`
	// Servers: the built-in server's bound addresses ("udp/[::]:53"), or
	// the RFC 2136 primary ("192.0.2.1:53").
	Servers []string `json:"servers"`
	// Serial is the SOA serial served (built-in server only).
	Serial uint32 `json:"serial,omitempty"`
	// Published are the records the zone holds from onionpod.
	Published []Record `json:"published"`
	// Desired are the records of the last Set; they differ from Published
	// while an update is pending or rejected.
	Desired []Record `json:"desired"`
	// Pending: an update is waiting to be applied (retried by Run).
	Pending bool `json:"pending"`
	// Rejected: the server refused the last update for good (TSIG or
	// permission error); it is not retried until the next different Set.
	Rejected bool `json:"rejected,omitempty"`
	// LastError is the last failure, empty after a success.
	LastError string `json:"last_error,omitempty"`
	// Damaged tells of a damaged state file found at start (zone.json or
	// the ledger): where it was moved, and what the backend did instead.
	// It stays set until the process ends.
	Damaged string `json:"damaged,omitempty"`
	// Secondaries and their NOTIFY state (built-in server only).
	Secondaries []SecondaryStatus `json:"secondaries,omitempty"`
}

// SecondaryStatus is the NOTIFY state of one secondary.
type SecondaryStatus struct {
	Addr string `json:"addr"`
	Key  string `json:"key"`
	// Notified is the last serial the secondary acknowledged a NOTIFY for.
	Notified  uint32 `json:"notified,omitempty"`
	LastError string `json:"last_error,omitempty"`
}
