// Command wsecho is a test app: a WebSocket echo on /ws and a greeting elsewhere, on [::]:8080
// (or -listen), for the end-to-end tests of the HTTPS front.
package main

import (
	"flag"
	"io"
	"log"
	"net/http"

	"golang.org/x/net/websocket"
)

func main() {
	listen := flag.String("listen", "[::]:8080", "address to serve on")
	flag.Parse()
	mux := http.NewServeMux()
	mux.Handle("/ws", websocket.Handler(func(c *websocket.Conn) { io.Copy(c, c) }))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "wsecho\n") })
	log.Fatal(http.ListenAndServe(*listen, mux))
}
