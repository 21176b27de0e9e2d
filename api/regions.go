package api

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/url"
	"strings"
	"time"
)

// RegionAddRequest is POST /v1/regions: register a region that has not
// joined yet and give it a one-time join token.
type RegionAddRequest struct {
	Path string `json:"path"`
	Role string `json:"role"` // province, city or district
	Name string `json:"name,omitempty"`
	Code string `json:"code,omitempty"`
	// TokenLife is how long the token is valid (Go duration; default
	// 24h, at most 168h).
	TokenLife string `json:"token_life,omitempty"`
}

// RegionAdded is the answer of POST /v1/regions: the token, to hand to the
// new node's operator (credfed node --join TOKEN). It is shown once.
type RegionAdded struct {
	Region  string    `json:"region"`
	Role    string    `json:"role"`
	Token   string    `json:"token"`
	Expires time.Time `json:"expires"`
}

// RegionChanged is the answer of region promote and remove.
type RegionChanged struct {
	Region string `json:"region"`
	Change string `json:"change"` // "promoted", "removed"
	Detail string `json:"detail,omitempty"`
}

// JoinRequest is POST /v1/join, made by a new node without a certificate.
type JoinRequest struct {
	Token string `json:"token"`
	// CSR is a PEM certificate signing request over the node's new key.
	CSR string `json:"csr"`
	// Exchange is the node's exchange address (host:port) for other
	// nodes; API its HTTPS base URL.
	Exchange string `json:"exchange"`
	API      string `json:"api,omitempty"`
	// Hosts are the DNS names and IP addresses for the certificate (the
	// exchange address's host is always one).
	Hosts []string `json:"hosts,omitempty"`
}

// JoinAnswer is what a joining node receives: its certificate (PEM, then
// the intermediate), the federation CA (PEM), and for a coordinator the
// pseudonym key (hex).
type JoinAnswer struct {
	Region       string `json:"region"`
	Certificate  string `json:"certificate"`
	CA           string `json:"ca"`
	PseudonymKey string `json:"pseudonym_key,omitempty"`
	// PseudonymKeys are the pseudonym key versions 2 and up that key
	// rotations distributed (version → hex), for a coordinator: it needs
	// them to open the index sealed under them.
	PseudonymKeys map[string]string `json:"pseudonym_keys,omitempty"`
}

// JoinToken is what a join token carries: who may join, where, and what
// CA the coordinator that serves the join must prove it belongs to. Its
// text form is "credfed-join-1." and the base64url (unpadded) of its JSON.
type JoinToken struct {
	Federation string `json:"f"`
	Region     string `json:"r"`
	Role       string `json:"o"`
	// Secret is 32 random bytes; the federation keeps only its SHA-256.
	Secret []byte `json:"s"`
	// API is the base URL of the coordinator that serves the join.
	API string `json:"a"`
	// CA is the federation CA certificate (DER): the joining node trusts
	// it, and nothing else, to reach the coordinator (no connection is made
	// before the node knows whom it may trust).
	CA []byte `json:"c"`
	// Node is the identity URI of the coordinator that serves the join:
	// the joining node sends the token to that node only.
	Node string `json:"n,omitempty"`
}

// joinTokenPrefix starts every join token.
const joinTokenPrefix = "credfed-join-1."

// MaxJoinToken bounds a join token's text.
const MaxJoinToken = 4096

// ErrBadJoinToken: the text is not a join token.
var ErrBadJoinToken = errors.New("api: not a credfed join token")

// String encodes the token.
func (t JoinToken) String() string {
	data, _ := json.Marshal(t)
	return joinTokenPrefix + base64.RawURLEncoding.EncodeToString(data)
}

// ParseJoinToken decodes a token's text.
func ParseJoinToken(s string) (JoinToken, error) {
	s = strings.TrimSpace(s)
	var t JoinToken
	rest, ok := strings.CutPrefix(s, joinTokenPrefix)
	if !ok || len(s) > MaxJoinToken {
		return t, ErrBadJoinToken
	}
	data, err := base64.RawURLEncoding.DecodeString(rest)
	if err != nil {
		return t, ErrBadJoinToken
	}
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&t); err != nil {
		return t, ErrBadJoinToken
	}
	if t.Federation == "" || t.Region == "" || t.Role == "" || len(t.Secret) != 32 || len(t.CA) < 64 || len(t.CA) > 2048 {
		return t, ErrBadJoinToken
	}
	if u, err := url.Parse(t.API); err != nil || u.Scheme != "https" || u.Host == "" {
		return t, ErrBadJoinToken
	}
	if !strings.HasPrefix(t.Node, "spiffe://"+t.Federation+"/") {
		return t, ErrBadJoinToken // it names the coordinator to send it to
	}
	return t, nil
}

// AddRegion registers a region and returns its join token (operator).
func (c *Client) AddRegion(ctx context.Context, req RegionAddRequest) (*RegionAdded, error) {
	var out RegionAdded
	_, err := c.Do(ctx, "POST", "/v1/regions", "", req, &out)
	return &out, err
}

// PromoteRegion makes a joined coordinator region a Raft voter (operator).
func (c *Client) PromoteRegion(ctx context.Context, path string) (*RegionChanged, error) {
	var out RegionChanged
	_, err := c.Do(ctx, "POST", "/v1/regions/promote", "", map[string]string{"path": path}, &out)
	return &out, err
}

// RemoveRegion removes a region: its node leaves Raft, its index entries
// are no longer read, its node certificate is suspended (operator).
func (c *Client) RemoveRegion(ctx context.Context, path string) (*RegionChanged, error) {
	var out RegionChanged
	_, err := c.Do(ctx, "DELETE", "/v1/regions?path="+url.QueryEscape(path), "", nil, &out)
	return &out, err
}

// Join presents a join token (no client certificate needed).
func (c *Client) Join(ctx context.Context, req JoinRequest) (*JoinAnswer, error) {
	var out JoinAnswer
	_, err := c.Do(ctx, "POST", "/v1/join", "", req, &out)
	return &out, err
}

// CA fetches the federation CA certificate (PEM) the node trusts.
func (c *Client) CA(ctx context.Context) (string, error) {
	var out struct {
		CA string `json:"ca"`
	}
	_, err := c.Do(ctx, "GET", "/v1/ca", "", nil, &out)
	return out.CA, err
}
