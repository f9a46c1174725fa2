// Package oniontest starts real tor processes for tests: a thin *testing.T wrapper over
// internal/lab/tornet (the engine `onionpod lab` uses too): an offline tor (DisableNetwork 1)
// with a unix control socket, and a private Tor network on loopback (three directory
// authorities, relays and a client) that onion services can join.
//
// Start, StartOffline and StartNetwork are the engine's and need no *testing.T. NewOffline
// and SharedNetwork wrap them for tests: they skip with a reason when tor is missing or the
// test does not run as root, and stop what they started when the test ends.
//
// Safety: every tor started here is checked first (CheckTorrc): its torrc must say
// DisableNetwork 1, or be a TestingTorNetwork whose directory authorities are all on
// 127.0.0.1 with the default fallback directories off.
package oniontest
