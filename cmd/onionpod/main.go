// Command onionpod hosts web apps on one box, reachable as v3 onion services and over IPv6 with DNS.
// Run `onionpod --help`; the README explains the rest.
package main

import (
	"os"

	"github.com/onionpod/onionpod/cmd/internal/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:]))
}
