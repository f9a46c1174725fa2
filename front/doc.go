// Package front is what stands between the clearnet and an app: the TLS front of one pod, the
// IPv4 edge router of the box, and the feed that hands them what they need from the daemon.
//
// # The front (one per clearnet app, in the pod's network namespace)
//
// A Server runs as its own unit (`onionpod internal front APP`) inside the pod's network
// namespace, not in the daemon and not as one process for every pod, because:
//
//   - a visitor over IPv6 connects to the pod's own LAN address: only a process in the pod's
//     namespace sees that connection, with the visitor's real address, and no host-side NAT or
//     PROXY header is needed for it;
//   - one front holds one app's key: a flaw in TLS or HTTP parsing exposes one certificate, not
//     all of them, and never the daemon (root, every onion key). The unit runs as a dynamic
//     user with no capability, a read-only file system and nothing of the state dir in view;
//   - it comes and goes with the pod's namespace, and the app keeps every port it had: the pod's
//     firewall redirects the LAN's :443 and :80 to the front's own ports (TLSPort, HTTPPort), so
//     the app may go on listening on 80 itself, and the .onion (tor connects from the host's ULA,
//     which the firewall never redirects) keeps plain HTTP straight to the app.
//
// It terminates TLS with the app's certificate (Certs, swapped atomically when the daemon sends a
// renewed one: connections in flight keep the certificate they started with), answers plain HTTP
// with a redirect to https:// while it holds a valid certificate (and proxies plain HTTP when it
// does not: an expired or missing certificate never makes the app unreachable), and proxies to
// the app on localhost (HTTP/1.1 and HTTP/2 from the visitor, WebSockets, streamed bodies), adding
// X-Forwarded-For/-Proto/-Host and Forwarded with the visitor's address, and Onion-Location (the
// same path on the app's .onion) when the app has an onion service.
//
// # The edge (one per box, on the box's own IPv4 address)
//
// A box usually has one IPv4 address for every app. A Router listens on it: on :443 it reads the
// TLS ClientHello's server name without terminating TLS, on :80 the first request's Host header,
// and splices the connection to that app's front over the host's ULA path, preceded by a PROXY
// protocol v2 header carrying the visitor's address. A front trusts that header only from the
// host's ULA address (the only place the edge connects from), and requires it from there.
//
// # The feed (daemon to fronts and edge)
//
// The daemon owns the certificates (root-only files) and the routes. A Feed serves both over one
// unix socket that is bind-mounted into the fronts' and the edge's sandboxes: who connects is
// known from the kernel (the peer's cgroup names its unit, onionpod-front-APP.service or
// onionpod-edge.service), so a front receives its own app's certificate and nothing else, and
// whenever it changes. At start a unit also gets the last certificate or routes as a systemd
// credential (LoadCredential=), so fronts and edge serve at boot before the daemon is up, and go
// on serving while it restarts.
package front
