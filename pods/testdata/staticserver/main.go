// Command staticserver stands in for `onionpod serve-static` in the pods tests: a statically
// linked binary that runs pods.ServeStatic.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/onionpod/onionpod/pods"
)

func main() {
	if len(os.Args) < 2 || os.Args[1] != "serve-static" {
		fmt.Fprintln(os.Stderr, "usage: staticserver serve-static --dir DIR --listen ADDR")
		os.Exit(2)
	}
	fs := flag.NewFlagSet("serve-static", flag.ExitOnError)
	dir := fs.String("dir", "", "directory to serve")
	listen := fs.String("listen", "", "address to listen on")
	_ = fs.Parse(os.Args[2:])
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := pods.ServeStatic(ctx, *dir, *listen); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
