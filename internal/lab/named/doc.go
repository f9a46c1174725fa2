// Package named runs BIND9's named on a loopback port with TSIG keys and a dynamic zone (or as
// a secondary of another server), and dig: a real DNS peer for the tests (dns/dnstest wraps it
// for a *testing.T) and the DNS benchmark.
package named
