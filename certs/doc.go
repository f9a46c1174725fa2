// Package certs obtains and renews the apps' TLS certificates from an ACME CA (Let's Encrypt, or
// a private one) with DNS-01 challenges published through onionpod's own DNS: the built-in
// server, or signed updates to the owner's primary. It uses lego (github.com/go-acme/lego/v5) for
// the ACME protocol and keeps everything else in its own hands:
//
//   - storage: one account per CA directory and one PEM bundle (private key and chain) per app,
//     0600 in a 0700 directory, written atomically, so a key and its certificate never part;
//   - schedule: a certificate is renewed once two thirds of its lifetime have passed (30 days
//     before the end of a 90-day one), one app at a time; a failure is retried with a backoff
//     that doubles from a fraction of the lifetime (one minute for a 90-day certificate, seconds
//     for the test CA's short-lived ones) up to an hour, and the certificate in place goes on
//     being served until it is replaced;
//   - DNS: the TXT records of pending challenges are one declarative set (ChallengePublisher,
//     declared here, implemented by the daemon over the dns package), and before the CA is told
//     to look, the authoritative servers onionpod knows (CheckServers) are asked until they
//     serve the record;
//   - status: per app, issuer, validity, next renewal, last success and the last error.
//
// lego keeps two process-wide settings (its logger and the DNS client of its CNAME lookups);
// New sets both (to the given logger at warning level, and to CheckServers), so the daemon runs
// one Manager.
package certs
