// Package onion gives every onionpod app a v3 onion service whose address never changes.
//
// It has three parts:
//
//   - Keys: [Key], parsed from Tor's own HiddenServiceDir files, from the ADD_ONION blob, or
//     generated, and a [KeyStore] that keeps one HiddenServiceDir per app (a directory a plain
//     tor serves as is), with v3 client authorization, import, export, and encrypted
//     [Backup]/[Restore] with age.
//   - [Manager]: one goroutine that owns a Tor control connection and keeps tor's detached
//     onion services equal to the desired set given to [Manager.Set], re-adding them all when
//     tor restarts.
//   - [ManagedTor]: the tor that onionpod runs itself: its torrc ([ManagedTorrc]), and how
//     systemd runs it, as the tor package's unprivileged user in a sandbox that sees nothing
//     of onionpod's state but its data directory and torrc.
//
// Secret keys never appear in errors, logs or fmt output: [Key], [ClientCredential] and
// [ControlConfig] print in a redacted form, and errors about a key source, a backup or a
// recipient never quote the input (it may be a key given by mistake, with a typo).
package onion
