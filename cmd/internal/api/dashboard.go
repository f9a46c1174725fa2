package api

import (
	"context"
	"net/http"
	"net/url"
	"time"
)

// DashboardStatus is what `onionpod dashboard status` shows: where the dashboard is served and
// its onion service.
type DashboardStatus struct {
	Listen []string `json:"listen"` // the LAN side, behind the login
	// Onion is the dashboard's own onion service (client authorization only).
	Onion DashboardOnion `json:"onion"`
}

// DashboardOnion is the dashboard's onion service.
type DashboardOnion struct {
	Enabled   bool      `json:"enabled"`
	Address   string    `json:"address,omitempty"`
	Clients   []string  `json:"clients"`
	Added     bool      `json:"added"`     // tor has it
	Published bool      `json:"published"` // its descriptor was uploaded
	Since     time.Time `json:"since,omitzero"`
	Error     string    `json:"error,omitempty"`
}

// DashboardClient is a device newly allowed to reach the dashboard's .onion: the only time its
// private key exists. AuthPrivate is the line of a tor client's .auth_private file; PrivateKey
// is what Tor Browser asks for.
type DashboardClient struct {
	Name        string `json:"name"`
	Address     string `json:"address"`
	AuthPrivate string `json:"auth_private"`
	PrivateKey  string `json:"private_key"`
}

// DashboardLogin is the login key of the dashboard's LAN side.
type DashboardLogin struct {
	Key    string   `json:"key"`
	Listen []string `json:"listen"`
}

// DashboardStatus reports the dashboard.
func (c *Client) DashboardStatus(ctx context.Context) (DashboardStatus, error) {
	var out DashboardStatus
	return out, c.do(ctx, http.MethodGet, "/v1/dashboard", nil, nil, &out)
}

// DashboardEnable turns the dashboard's onion service on (making its key the first time) and
// adds client as its first device unless it has clients; the credential is empty when no
// client was added.
func (c *Client) DashboardEnable(ctx context.Context, client string) (DashboardStatus, DashboardClient, error) {
	var out struct {
		Status DashboardStatus `json:"status"`
		Client DashboardClient `json:"client"`
	}
	err := c.do(ctx, http.MethodPost, "/v1/dashboard/enable", url.Values{"client": {client}}, nil, &out)
	return out.Status, out.Client, err
}

// DashboardDisable takes the dashboard's onion service down (its key and clients are kept).
func (c *Client) DashboardDisable(ctx context.Context) error {
	return c.do(ctx, http.MethodPost, "/v1/dashboard/disable", nil, nil, nil)
}

// DashboardAddClient allows one more device to reach the dashboard's .onion.
func (c *Client) DashboardAddClient(ctx context.Context, name string) (DashboardClient, error) {
	var out DashboardClient
	return out, c.do(ctx, http.MethodPost, "/v1/dashboard/clients/"+url.PathEscape(name), nil, nil, &out)
}

// DashboardRemoveClient revokes a device.
func (c *Client) DashboardRemoveClient(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, "/v1/dashboard/clients/"+url.PathEscape(name), nil, nil, nil)
}

// DashboardLogin returns the LAN login key; rotate makes a new one (every login ends).
func (c *Client) DashboardLogin(ctx context.Context, rotate bool) (DashboardLogin, error) {
	q := url.Values{}
	if rotate {
		q.Set("rotate", "true")
	}
	var out DashboardLogin
	return out, c.do(ctx, http.MethodPost, "/v1/dashboard/login", q, nil, &out)
}
