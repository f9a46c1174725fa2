// Package dnstest starts real DNS servers and tools for tests and for the
// onionpod lab: BIND9's named on a loopback port with a TSIG key and a
// dynamic zone (or as a secondary of another server), and dig.
//
// The core API (StartNamed, Dig) needs no *testing.T; New and DigT are thin
// testing.TB wrappers that skip with a reason when a tool is missing.
package dnstest
