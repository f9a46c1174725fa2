// Package oniontest starts real tor processes for tests and for `onionpod lab`: an offline tor
// (DisableNetwork 1) with a unix control socket, and a private Tor network on loopback
// (three directory authorities, relays and a client) that onion services can join.
//
// The core API needs no *testing.T: Start, StartOffline and StartNetwork return values with a
// Close method. NewOffline and NewNetwork wrap them for tests: they skip with a reason when
// tor is missing or the test does not run as root, and register Close with t.Cleanup.
//
// Safety: every tor started here is checked first: its torrc must say DisableNetwork 1, or
// be a TestingTorNetwork whose directory authorities are all on 127.0.0.1 with the default
// fallback directories off. Processes are stopped by PID only, and by default they exit
// with the process that started them (__OwningControllerProcess).
package oniontest
