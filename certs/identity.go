package certs

import (
	"fmt"
	"net/url"
	"strings"
)

// Role is what an identity may do in the federation.
type Role string

// Node roles: the platforms that run a node.
const (
	Province Role = "province"
	City     Role = "city"
	District Role = "district"
)

// User roles: people and systems that call a node's local API.
const (
	Operator    Role = "operator"
	Coordinator Role = "coordinator"
	Department  Role = "department"
	Portal      Role = "portal"
)

// Roles lists every role, node roles first.
var Roles = []Role{Province, City, District, Operator, Coordinator, Department, Portal}

// IsNode reports whether r is a node role.
func (r Role) IsNode() bool { return r == Province || r == City || r == District }

// IsUser reports whether r is a user role.
func (r Role) IsUser() bool {
	return r == Operator || r == Coordinator || r == Department || r == Portal
}

// IsCoordinatorNode reports whether r is a coordinator node role (province or
// city): the nodes that vote in Raft and hold the pseudonym key.
func (r Role) IsCoordinatorNode() bool { return r == Province || r == City }

// Valid reports whether r is one of the known roles.
func (r Role) Valid() bool { return r.IsNode() || r.IsUser() }

// ParseRole returns the role named s.
func ParseRole(s string) (Role, error) {
	r := Role(s)
	if !r.Valid() {
		return "", fmt.Errorf("%w: unknown role %q (want one of %s)", ErrBadIdentity, s, roleList())
	}
	return r, nil
}

func roleList() string {
	names := make([]string, len(Roles))
	for i, r := range Roles {
		names[i] = string(r)
	}
	return strings.Join(names, ", ")
}

// Identity is who a certificate speaks for.
//
// Region is a slash-separated path from the province-level region down
// ("zhejiang", "zhejiang/quzhou", "zhejiang/quzhou/kecheng"); Institution is
// empty for node roles and required for user roles.
type Identity struct {
	Federation  string `json:"federation" cbor:"1,keyasint"`
	Role        Role   `json:"role" cbor:"2,keyasint"`
	Region      string `json:"region" cbor:"3,keyasint"`
	Institution string `json:"institution,omitempty" cbor:"4,keyasint,omitempty"`
}

// maxRegionDepth bounds region paths: province, city, district and one
// level below for street-level platforms.
const maxRegionDepth = 4

// Validate checks every part of the identity.
func (id Identity) Validate() error {
	if err := checkName("federation", id.Federation); err != nil {
		return err
	}
	if !id.Role.Valid() {
		return fmt.Errorf("%w: unknown role %q (want one of %s)", ErrBadIdentity, id.Role, roleList())
	}
	if err := CheckRegion(id.Region); err != nil {
		return err
	}
	switch {
	case id.Role.IsNode() && id.Institution != "":
		return fmt.Errorf("%w: a %s node has no institution", ErrBadIdentity, id.Role)
	case id.Role.IsUser():
		if id.Institution == "" {
			return fmt.Errorf("%w: a %s identity needs an institution", ErrBadIdentity, id.Role)
		}
		if err := checkName("institution", id.Institution); err != nil {
			return err
		}
	}
	return nil
}

// CheckFederation validates a federation name.
func CheckFederation(name string) error { return checkName("federation", name) }

// CheckRegion validates a region path.
func CheckRegion(region string) error {
	if region == "" {
		return fmt.Errorf("%w: region path is empty", ErrBadIdentity)
	}
	parts := strings.Split(region, "/")
	if len(parts) > maxRegionDepth {
		return fmt.Errorf("%w: region path %q has %d levels, at most %d", ErrBadIdentity, region, len(parts), maxRegionDepth)
	}
	for _, p := range parts {
		if err := checkName("region", p); err != nil {
			return err
		}
	}
	return nil
}

// checkName accepts lowercase letters, digits and inner hyphens, 1 to 63
// characters: the DNS label rule, so names survive URIs and file names.
func checkName(what, s string) error {
	if s == "" || len(s) > 63 {
		return fmt.Errorf("%w: %s %q must be 1 to 63 characters", ErrBadIdentity, what, s)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		ok := c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' && i > 0 && i < len(s)-1
		if !ok {
			return fmt.Errorf("%w: %s %q may hold only a-z, 0-9 and inner hyphens", ErrBadIdentity, what, s)
		}
	}
	return nil
}

// URI returns the identity's SPIFFE URI.
func (id Identity) URI() *url.URL {
	path := "/" + string(id.Role) + "/" + id.Region
	if id.Institution != "" {
		path += "/" + id.Institution
	}
	return &url.URL{Scheme: "spiffe", Host: id.Federation, Path: path}
}

// String returns the identity's SPIFFE URI as text: URI().String(), built
// without a url.URL when no part needs escaping (every identity ParseURI
// accepts), since every request's revocation check and audit entry render
// it (about 3 % of a province's CPU under lookups through net/url).
func (id Identity) String() string {
	if id.Federation == "" || !plainURIPart(id.Federation, false) || !plainURIPart(string(id.Role), false) ||
		!plainURIPart(id.Region, true) || !plainURIPart(id.Institution, true) {
		return id.URI().String()
	}
	var b strings.Builder
	b.Grow(len("spiffe://") + len(id.Federation) + 2 + len(id.Role) + len(id.Region) + 1 + len(id.Institution))
	b.WriteString("spiffe://")
	b.WriteString(id.Federation)
	b.WriteByte('/')
	b.WriteString(string(id.Role))
	b.WriteByte('/')
	b.WriteString(id.Region)
	if id.Institution != "" {
		b.WriteByte('/')
		b.WriteString(id.Institution)
	}
	return b.String()
}

// plainURIPart reports whether s has only characters that net/url writes
// as they are in a host (letters, digits, '-', '.', '_') or, if inPath,
// also '/' in a path.
func plainURIPart(s string, inPath bool) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '.', c == '_':
		case c == '/' && inPath:
		default:
			return false
		}
	}
	return true
}

// Name is the last element of the identity: the institution for users, the
// last region element for nodes. Certificate files are named after it.
func (id Identity) Name() string {
	if id.Institution != "" {
		return id.Institution
	}
	return id.Region[strings.LastIndexByte(id.Region, '/')+1:]
}

// ParentRegion returns the region path one level up, or "" for a top-level
// region.
func ParentRegion(region string) string {
	i := strings.LastIndexByte(region, '/')
	if i < 0 {
		return ""
	}
	return region[:i]
}

// InRegion reports whether region equals ancestor or lies below it.
func InRegion(region, ancestor string) bool {
	return region == ancestor || strings.HasPrefix(region, ancestor+"/")
}

// ParseIdentity parses and validates a SPIFFE identity URI.
func ParseIdentity(s string) (Identity, error) {
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "spiffe" || u.Opaque != "" || u.User != nil ||
		u.RawQuery != "" || u.Fragment != "" || u.Port() != "" {
		return Identity{}, fmt.Errorf("%w: %q is not a spiffe://<federation>/<role>/<region> URI", ErrBadIdentity, s)
	}
	parts := strings.Split(strings.TrimPrefix(u.Path, "/"), "/")
	if len(parts) < 2 {
		return Identity{}, fmt.Errorf("%w: %q names no role and region", ErrBadIdentity, s)
	}
	id := Identity{Federation: u.Host, Role: Role(parts[0])}
	rest := parts[1:]
	if id.Role.IsUser() {
		if len(rest) < 2 {
			return Identity{}, fmt.Errorf("%w: a %s identity needs a region and an institution", ErrBadIdentity, id.Role)
		}
		id.Institution = rest[len(rest)-1]
		rest = rest[:len(rest)-1]
	}
	id.Region = strings.Join(rest, "/")
	if err := id.Validate(); err != nil {
		return Identity{}, err
	}
	return id, nil
}
