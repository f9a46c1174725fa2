// Package dns publishes onionpod's address records: a built-in authoritative
// server (the default, nothing else to install) and an RFC 2136 dynamic-update
// publisher with TSIG for a primary the owner already runs (BIND, Knot, ...).
//
// Both backends are declarative: Set(ctx, records) makes the zone hold exactly
// these onionpod records, and Set with no records removes all of them. Records
// are plain values (a fully qualified name and an address); no type of the
// underlying DNS library is exported.
//
// The built-in Server answers from packets packed ahead of time on every Set
// (a copy-on-write snapshot swapped atomically), so a query costs a map lookup
// and a copy, with no allocation and no lock. UDP is served in batches
// (recvmmsg/sendmmsg) on one SO_REUSEPORT socket per CPU, each datagram
// steered to the socket of the CPU that processed it and answered by a thread
// bound to that CPU (dns/internal/udpbatch); on the wildcard address each
// answer leaves from the address its query came to (IP_PKTINFO and
// IPV6_PKTINFO), as a client on a multi-homed box requires. TCP connections are bounded per
// source and evict the longest idle one when full. It offers AXFR (and sends
// NOTIFY) only to configured secondaries that sign with TSIG, and at start
// moves its serial past any a secondary holds.
//
// A damaged state file (zone.json, an RFC 2136 ledger) never stops either
// backend: it is moved aside as NAME.damaged-TIME and reported in
// Status.Damaged and by Damaged(), and the backend carries on (see NewServer
// and NewRFC2136 for what each can still guarantee). The RFC2136 publisher keeps a ledger of what it
// published, so deletes never depend on AXFR and a restart neither duplicates
// nor forgets records; updates that cannot be delivered are retried by Run.
package dns
