package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"golang.org/x/net/websocket"

	"github.com/onionpod/onionpod/internal/netnsfile"
)

// wsEchoImage builds the wsecho test app (static) into an image archive in the lab dir.
func wsEchoImage(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(labDir, "wsecho")
	build := exec.Command("go", "build", "-o", bin, "./testapps/wsecho")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build wsecho: %v\n%s", err, out)
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	tw.WriteHeader(&tar.Header{Name: "wsecho", Mode: 0o755, Size: int64(len(data)), ModTime: time.Unix(0, 0), Typeflag: tar.TypeReg})
	tw.Write(data)
	tw.Close()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(layer.Bytes())), nil })
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, l)
	if err == nil {
		img, err = mutate.Config(img, v1.Config{Entrypoint: []string{"/wsecho"}})
	}
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(labDir, "wsecho.tar")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := tarball.Write(name.MustParseReference("onionpod.example/wsecho:1").(name.Tag), img, f); err != nil {
		t.Fatal(err)
	}
	return path
}

// wsEcho opens a WebSocket to wss://host/ws from the lab's LAN client (a socket made in its
// namespace), verifying the server's certificate against root, and checks the echo.
func wsEcho(t *testing.T, addr netip.Addr, host, rootFile string) {
	t.Helper()
	pem, err := os.ReadFile(rootFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	var raw net.Conn
	err = netnsfile.Do(theLab.State().Client, func() error {
		var err error
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		raw, err = (&net.Dialer{}).DialContext(ctx, "tcp", netip.AddrPortFrom(addr, 443).String())
		return err
	})
	if err != nil {
		t.Fatalf("connect from the LAN client: %v", err)
	}
	conn := tls.Client(raw, &tls.Config{RootCAs: pool, ServerName: host, NextProtos: []string{"http/1.1"}})
	cfg, _ := websocket.NewConfig("wss://"+host+"/ws", "https://"+host)
	ws, err := websocket.NewClient(cfg, conn)
	if err != nil {
		t.Fatalf("websocket through the front: %v", err)
	}
	defer ws.Close()
	for _, msg := range []string{"hello", "through the pod's front"} {
		if err := websocket.Message.Send(ws, msg); err != nil {
			t.Fatal(err)
		}
		var echo string
		if err := websocket.Message.Receive(ws, &echo); err != nil || echo != msg {
			t.Errorf("echo %q %v, want %q", echo, err, msg)
		}
	}
}
