// Package dnstest starts real DNS servers and tools for tests: a thin *testing.T wrapper over
// internal/lab/named (BIND9's named on a loopback port with a TSIG key and a dynamic zone, or
// as a secondary of another server, and dig), in this package's types (dns.TSIGKey).
//
// StartNamed and Dig need no *testing.T; New, NeedDig and DigT skip with a reason when a tool
// is missing.
package dnstest
