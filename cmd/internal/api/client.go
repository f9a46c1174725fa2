package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"syscall"
	"time"

	"github.com/onionpod/onionpod/cmd/internal/appbackup"
	"github.com/onionpod/onionpod/cmd/internal/store"
	"github.com/onionpod/onionpod/internal/errkind"
)

// Client talks to the daemon's unix socket.
type Client struct {
	socket string
	http   *http.Client
}

// NewClient returns a client for the daemon listening on socket.
func NewClient(socket string) *Client {
	return &Client{
		socket: socket,
		http: &http.Client{Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", socket)
			},
		}},
	}
}

func (c *Client) do(ctx context.Context, method, path string, query url.Values, body, out any) error {
	resp, err := c.send(ctx, method, path, query, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		return err
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("api: %s %s: bad answer from the daemon: %w", method, path, err)
	}
	return nil
}

func (c *Client) send(ctx context.Context, method, path string, query url.Values, body any) (*http.Response, error) {
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case io.Reader:
		rd = b
	default:
		data, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("api: %w", err)
		}
		rd = bytes.NewReader(data)
	}
	u := "http://onionpod" + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, fmt.Errorf("api: %w", err)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("%w (no one listens on %s): start it with `systemctl start onionpod` or `onionpod daemon`", ErrNoDaemon, c.socket)
		}
		if errors.Is(err, fs.ErrPermission) {
			return nil, fmt.Errorf("api: %s: permission denied: run as root or as a member of the api.group of the config", c.socket)
		}
		return nil, fmt.Errorf("api: %w", err)
	}
	if resp.StatusCode < 300 {
		return resp, nil
	}
	defer resp.Body.Close()
	var eb errorBody
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if json.Unmarshal(data, &eb) != nil || eb.Error == "" {
		eb.Error = fmt.Sprintf("%s %s: %s", method, path, resp.Status)
	}
	switch resp.StatusCode {
	case http.StatusNotFound:
		return nil, errkind.NotFoundf("%s", eb.Error)
	case http.StatusBadRequest, http.StatusRequestEntityTooLarge:
		return nil, errkind.BadInputf("%s", eb.Error)
	case http.StatusConflict:
		return nil, errkind.Conflictf("%s", eb.Error)
	case http.StatusTooManyRequests:
		return nil, busyError(eb.Error)
	}
	return nil, errors.New(eb.Error)
}

// Apps lists every app with its status.
func (c *Client) Apps(ctx context.Context) ([]AppStatus, error) {
	var out []AppStatus
	return out, c.do(ctx, http.MethodGet, "/v1/apps", nil, nil, &out)
}

// AppList returns every app with only what ls prints (ListEntry.Status).
func (c *Client) AppList(ctx context.Context) ([]AppStatus, error) {
	var entries []ListEntry
	if err := c.do(ctx, http.MethodGet, "/v1/apps", url.Values{"view": {"list"}}, nil, &entries); err != nil {
		return nil, err
	}
	out := make([]AppStatus, len(entries))
	for i, e := range entries {
		out[i] = e.Status()
	}
	return out, nil
}

// App returns one app's status.
func (c *Client) App(ctx context.Context, name string) (AppStatus, error) {
	var out AppStatus
	return out, c.do(ctx, http.MethodGet, "/v1/apps/"+url.PathEscape(name), nil, nil, &out)
}

// Put creates or replaces an app's desired state. app.Generation is the generation of the record
// the change is based on (0: the app is new); when the record changed meanwhile (or was created
// or removed), the daemon refuses with ErrConflict: read it again and re-apply the change. The
// status returned carries the new generation (App.Generation), to Wait for.
func (c *Client) Put(ctx context.Context, app store.App) (AppStatus, error) {
	var out AppStatus
	return out, c.do(ctx, http.MethodPut, "/v1/apps/"+url.PathEscape(app.Name), nil, app, &out)
}

// Plan says what storing app would do, without storing it or doing anything: the daemon checks
// it as Put would (ErrBadInput, ErrConflict) and returns the steps the app would get.
func (c *Client) Plan(ctx context.Context, app store.App) (PlannedChange, error) {
	var out PlannedChange
	return out, c.do(ctx, http.MethodPut, "/v1/apps/"+url.PathEscape(app.Name), url.Values{"dry_run": {"true"}}, app, &out)
}

// Image reports whether the daemon's image store has the image of this ID ("sha256:...", an
// ImageInfo.ID): ErrNotFound when it does not.
func (c *Client) Image(ctx context.Context, id string) (ImageInfo, error) {
	var out ImageInfo
	return out, c.do(ctx, http.MethodGet, "/v1/images/"+url.PathEscape(id), nil, nil, &out)
}

// LoadImage sends an image archive (a `docker save` tarball or an OCI archive, read by the
// caller as the user who named it) to the daemon, which loads it into its image store. The
// returned ID is what an app's record names as its image.
func (c *Client) LoadImage(ctx context.Context, archive io.Reader) (ImageInfo, error) {
	var out ImageInfo
	return out, c.do(ctx, http.MethodPost, "/v1/images", nil, archive, &out)
}

// Images lists the images in the daemon's image store, the most recently used first.
func (c *Client) Images(ctx context.Context) ([]Image, error) {
	var out []Image
	return out, c.do(ctx, http.MethodGet, "/v1/images", nil, nil, &out)
}

// PruneImages removes the images no app uses (see PruneReport).
func (c *Client) PruneImages(ctx context.Context) (PruneReport, error) {
	var out PruneReport
	return out, c.do(ctx, http.MethodPost, "/v1/images/prune", nil, nil, &out)
}

// Start asks for a stopped app to run again; the status carries the new generation.
func (c *Client) Start(ctx context.Context, name string) (AppStatus, error) {
	var out AppStatus
	return out, c.do(ctx, http.MethodPost, "/v1/apps/"+url.PathEscape(name)+"/start", nil, nil, &out)
}

// Stop stops an app's pod; its key, address and record stay.
func (c *Client) Stop(ctx context.Context, name string) (AppStatus, error) {
	var out AppStatus
	return out, c.do(ctx, http.MethodPost, "/v1/apps/"+url.PathEscape(name)+"/stop", nil, nil, &out)
}

// Remove deletes an app (a damaged one too) and everything of it; its onion key is kept unless
// purgeKey. It fails, saying what, while anything of the app remains after the removal.
func (c *Client) Remove(ctx context.Context, name string, purgeKey bool) error {
	q := url.Values{}
	if purgeKey {
		q.Set("purge_key", "true")
	}
	return c.do(ctx, http.MethodDelete, "/v1/apps/"+url.PathEscape(name), q, nil, nil)
}

// Wait blocks until the app, at generation (or a later one; 0: any), reaches the state named by
// what (WaitRunning or WaitPublished), fails, or the timeout passes (the daemon bounds it); it
// returns the last status seen. Success or failure is only ever that of the generation waited
// for: an earlier spec's failure is not reported.
func (c *Client) Wait(ctx context.Context, name, what string, generation int64, timeout time.Duration) (AppStatus, error) {
	q := url.Values{"for": {what}, "timeout": {timeout.String()}}
	if generation > 0 {
		q.Set("generation", strconv.FormatInt(generation, 10))
	}
	var out AppStatus
	return out, c.do(ctx, http.MethodGet, "/v1/apps/"+url.PathEscape(name)+"/wait", q, nil, &out)
}

// Logs copies the app's journal to w (all its containers', or one container's when container
// is not ""), following it while ctx lasts when follow is set. A container the app does not have
// is ErrBadInput.
func (c *Client) Logs(ctx context.Context, name, container string, follow bool, w io.Writer) error {
	q := url.Values{}
	if follow {
		q.Set("follow", "true")
	}
	if container != "" {
		q.Set("container", container)
	}
	resp, err := c.send(ctx, http.MethodGet, "/v1/apps/"+url.PathEscape(name)+"/logs", q, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, err = io.Copy(w, resp.Body)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// DNS reports what is published and where.
func (c *Client) DNS(ctx context.Context) (DNSStatus, error) {
	var out DNSStatus
	return out, c.do(ctx, http.MethodGet, "/v1/dns", nil, nil, &out)
}

// Sync asks the daemon to re-read the state dir now (after an offline key change).
func (c *Client) Sync(ctx context.Context) error {
	return c.do(ctx, http.MethodPost, "/v1/sync", nil, nil, nil)
}

// RenewTLS obtains a new certificate for an app now (tls.mode = "acme").
func (c *Client) RenewTLS(ctx context.Context, name string) (AppStatus, error) {
	var st AppStatus
	err := c.do(ctx, http.MethodPost, "/v1/apps/"+url.PathEscape(name)+"/tls/renew", nil, nil, &st)
	return st, err
}

// busyError is a 429 answer: it matches ErrBusy and says what the daemon said.
type busyError string

func (e busyError) Error() string        { return string(e) }
func (e busyError) Is(target error) bool { return target == ErrBusy }

// Update updates an app to the images its registries serve now (see UpdateRequest). It returns
// once the app is healthy on the new images or rolled back; a rollback is no error (the result
// says so). A reference that names nothing is an error, the app untouched.
func (c *Client) Update(ctx context.Context, name string, req UpdateRequest) (UpdateResult, error) {
	var out UpdateResult
	return out, c.do(ctx, http.MethodPost, "/v1/apps/"+url.PathEscape(name)+"/update", nil, req, &out)
}

// Rollback puts an app's previous images back and waits until it is healthy on them.
func (c *Client) Rollback(ctx context.Context, name string, req RollbackRequest) (UpdateResult, error) {
	var out UpdateResult
	return out, c.do(ctx, http.MethodPost, "/v1/apps/"+url.PathEscape(name)+"/rollback", nil, req, &out)
}

// Backup writes a whole-app backup of req.Apps to w (see BackupRequest) and returns what it holds.
// An error after some of the backup was written means w holds an incomplete backup (which a
// restore refuses): remove it.
func (c *Client) Backup(ctx context.Context, req BackupRequest, w io.Writer) ([]appbackup.AppReport, error) {
	resp, err := c.send(ctx, http.MethodPost, "/v1/backup", nil, req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(w, resp.Body); err != nil {
		return nil, fmt.Errorf("api: backup: %w", err)
	}
	if msg := resp.Trailer.Get(TrailerError); msg != "" {
		return nil, errors.New(msg)
	}
	var reps []appbackup.AppReport
	if err := json.Unmarshal([]byte(resp.Trailer.Get(TrailerReport)), &reps); err != nil {
		return nil, fmt.Errorf("api: backup: the daemon did not say it finished the backup: %w", err)
	}
	return reps, nil
}

// Restore sends a backup (read from r) to the daemon, which brings its apps back, all or none.
func (c *Client) Restore(ctx context.Context, req RestoreRequest, r io.Reader) ([]appbackup.AppReport, error) {
	line, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("api: %w", err)
	}
	body := io.MultiReader(bytes.NewReader(append(line, '\n')), r)
	var out []appbackup.AppReport
	return out, c.do(ctx, http.MethodPost, "/v1/restore", nil, body, &out)
}
