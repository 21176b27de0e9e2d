package console

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"golang.org/x/crypto/argon2"

	"credfed/certs"
	"credfed/internal/atomicfile"
)

// Errors of the account store; each is wrapped with what was wrong.
var (
	ErrNoAccount    = errors.New("console: no such account")
	ErrExists       = errors.New("console: the account exists")
	ErrBadAccount   = errors.New("console: bad account")
	ErrBadPassword  = errors.New("console: wrong account name or password")
	ErrTokenUnknown = errors.New("console: unknown login link")
	ErrTokenUsed    = errors.New("console: this login link has been used")
	ErrTokenExpired = errors.New("console: this login link has expired")
)

// Roles are the roles a console account may have: the people who run a
// platform. A data subject's portal is another system.
var Roles = []certs.Role{certs.Department, certs.Coordinator, certs.Operator}

// MinPassword is the shortest password an account may have, in characters.
const MinPassword = 12

// Account is a console login, bound to a role and an institution exactly
// as a certificate would be; its region is the node's.
type Account struct {
	Name        string     `json:"name"`
	Role        certs.Role `json:"role"`
	Institution string     `json:"institution"`
	// Hash is the argon2id hash of the password in the PHC string format.
	Hash     string    `json:"hash"`
	Created  time.Time `json:"created"`
	Disabled bool      `json:"disabled,omitempty"`
}

// Identity is the identity the account acts as on the node of region.
func (a Account) Identity(federation, region string) certs.Identity {
	return certs.Identity{Federation: federation, Role: a.Role, Region: region, Institution: a.Institution}
}

// argon2id parameters: OWASP's first recommendation (19 MiB, two passes).
const (
	argonTime    = 2
	argonMemory  = 19 * 1024 // KiB
	argonThreads = 1
	argonKeyLen  = 32
)

// HashPassword returns the argon2id hash of password with a fresh salt.
func HashPassword(password string) (string, error) {
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	key := argon2.IDKey([]byte(password), salt, argonTime, argonMemory, argonThreads, argonKeyLen)
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, argonMemory, argonTime, argonThreads,
		b64.EncodeToString(salt), b64.EncodeToString(key)), nil
}

// VerifyPassword says whether password matches hash (HashPassword's).
func VerifyPassword(hash, password string) bool {
	parts := strings.Split(hash, "$")
	if len(parts) != 6 || parts[1] != "argon2id" {
		return false
	}
	var m, t uint32
	var p uint8
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &m, &t, &p); err != nil || m == 0 || m > 256*1024 || t == 0 || t > 10 || p == 0 {
		return false
	}
	b64 := base64.RawStdEncoding
	salt, err1 := b64.DecodeString(parts[4])
	want, err2 := b64.DecodeString(parts[5])
	if err1 != nil || err2 != nil || len(want) == 0 || len(want) > 64 {
		return false
	}
	got := argon2.IDKey([]byte(password), salt, t, m, p, uint32(len(want)))
	return subtle.ConstantTimeCompare(got, want) == 1
}

// CheckPassword refuses a password too short to be one.
func CheckPassword(password string) error {
	if n := utf8.RuneCountInString(password); n < MinPassword {
		return fmt.Errorf("%w: a password needs at least %d characters, this one has %d", ErrBadAccount, MinPassword, n)
	}
	if len(password) > 1024 {
		return fmt.Errorf("%w: a password has at most 1024 bytes", ErrBadAccount)
	}
	return nil
}

// Store keeps a node's console accounts in DIR/accounts.json and its
// one-time login links in DIR/links/. The node reads it; `credfed console
// user` writes it, whether the node runs or not: writers hold an flock on
// DIR/accounts.lock, readers see a file replaced whole.
type Store struct {
	dir string
	mu  sync.Mutex
	// cached is the accounts as of the file's mtime and size.
	cached []Account
	stamp  fileStamp
}

type fileStamp struct {
	mod  time.Time
	size int64
}

// OpenStore returns the store in dir (created when first written).
func OpenStore(dir string) *Store { return &Store{dir: dir} }

// Dir is the store's directory.
func (s *Store) Dir() string { return s.dir }

func (s *Store) path() string { return filepath.Join(s.dir, "accounts.json") }

// List returns the accounts, by name.
func (s *Store) List() ([]Account, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.loadLocked()
}

// Get returns the account of name.
func (s *Store) Get(name string) (Account, error) {
	all, err := s.List()
	if err != nil {
		return Account{}, err
	}
	for _, a := range all {
		if a.Name == name {
			return a, nil
		}
	}
	return Account{}, fmt.Errorf("%w: %q", ErrNoAccount, name)
}

// loadLocked reads the file again if it changed since it was read.
func (s *Store) loadLocked() ([]Account, error) {
	fi, err := os.Stat(s.path())
	if errors.Is(err, os.ErrNotExist) {
		s.cached, s.stamp = nil, fileStamp{}
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	st := fileStamp{fi.ModTime(), fi.Size()}
	if st == s.stamp && s.cached != nil {
		return slices.Clone(s.cached), nil
	}
	if fi.Size() > 16<<20 {
		return nil, fmt.Errorf("console: %s is larger than 16 MiB", s.path())
	}
	b, err := os.ReadFile(s.path())
	if err != nil {
		return nil, err
	}
	var f struct {
		Accounts []Account `json:"accounts"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("console: %s: %w", s.path(), err)
	}
	s.cached, s.stamp = f.Accounts, st
	return slices.Clone(f.Accounts), nil
}

// update changes the accounts under the store's lock file.
func (s *Store) update(change func([]Account) ([]Account, error)) error {
	unlock, err := s.lock()
	if err != nil {
		return err
	}
	defer unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stamp = fileStamp{} // read it whole: another process may have written it within the mtime's grain
	all, err := s.loadLocked()
	if err != nil {
		return err
	}
	next, err := change(all)
	if err != nil {
		return err
	}
	slices.SortFunc(next, func(a, b Account) int { return strings.Compare(a.Name, b.Name) })
	b, err := json.MarshalIndent(struct {
		Accounts []Account `json:"accounts"`
	}{next}, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.Write(s.path(), append(b, '\n'), 0o600); err != nil {
		return err
	}
	s.stamp = fileStamp{}
	return nil
}

func (s *Store) lock() (func(), error) {
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(s.dir, "accounts.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return func() { _ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() }, nil
}

// CheckName refuses an account name that is not 1–64 letters, digits,
// '.', '-', '_' or '@'.
func CheckName(name string) error {
	if name == "" || len(name) > 64 {
		return fmt.Errorf("%w: an account name has 1 to 64 characters", ErrBadAccount)
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune(".-_@", r)) {
			return fmt.Errorf("%w: an account name has only letters, digits, '.', '-', '_' and '@'", ErrBadAccount)
		}
	}
	return nil
}

// Add creates an account; now is its creation time.
func (s *Store) Add(a Account, password string, now time.Time) error {
	if err := CheckName(a.Name); err != nil {
		return err
	}
	if !slices.Contains(Roles, a.Role) {
		return fmt.Errorf("%w: role %q (a console account is one of %s)", ErrBadAccount, a.Role, roleNames())
	}
	probe := certs.Identity{Federation: "probe", Role: a.Role, Region: "probe", Institution: a.Institution}
	if err := probe.Validate(); err != nil {
		return fmt.Errorf("%w: %v", ErrBadAccount, err)
	}
	if err := CheckPassword(password); err != nil {
		return err
	}
	h, err := HashPassword(password)
	if err != nil {
		return err
	}
	a.Hash, a.Created, a.Disabled = h, now.UTC(), false
	return s.update(func(all []Account) ([]Account, error) {
		for _, o := range all {
			if o.Name == a.Name {
				return nil, fmt.Errorf("%w: %q", ErrExists, a.Name)
			}
		}
		return append(all, a), nil
	})
}

// SetPassword replaces an account's password; the account's open
// sessions end at their next request.
func (s *Store) SetPassword(name, password string) error {
	if err := CheckPassword(password); err != nil {
		return err
	}
	h, err := HashPassword(password)
	if err != nil {
		return err
	}
	return s.change(name, func(a *Account) { a.Hash = h })
}

// SetDisabled disables or enables an account: a disabled account cannot
// log in, and its open sessions end at their next request.
func (s *Store) SetDisabled(name string, disabled bool) error {
	return s.change(name, func(a *Account) { a.Disabled = disabled })
}

// Remove deletes an account.
func (s *Store) Remove(name string) error {
	return s.update(func(all []Account) ([]Account, error) {
		i := slices.IndexFunc(all, func(a Account) bool { return a.Name == name })
		if i < 0 {
			return nil, fmt.Errorf("%w: %q", ErrNoAccount, name)
		}
		return slices.Delete(all, i, i+1), nil
	})
}

func (s *Store) change(name string, fn func(*Account)) error {
	return s.update(func(all []Account) ([]Account, error) {
		i := slices.IndexFunc(all, func(a Account) bool { return a.Name == name })
		if i < 0 {
			return nil, fmt.Errorf("%w: %q", ErrNoAccount, name)
		}
		fn(&all[i])
		return all, nil
	})
}

func roleNames() string {
	n := make([]string, len(Roles))
	for i, r := range Roles {
		n[i] = string(r)
	}
	return strings.Join(n, ", ")
}

// link is a one-time login link's file: DIR/links/SHA256(token).json,
// renamed to .used when it is used.
type link struct {
	Account string    `json:"account"`
	Expires time.Time `json:"expires"`
	// Created is the account's: a link does not log into another
	// account given the name of a removed one.
	Created time.Time `json:"created,omitzero"`
}

func (s *Store) linkPath(token, ext string) (string, bool) {
	if len(token) < 20 || len(token) > 100 {
		return "", false
	}
	sum := sha256.Sum256([]byte(token))
	return filepath.Join(s.dir, "links", hex.EncodeToString(sum[:])+ext), true
}

// IssueLink returns a one-time login token for the account, good until
// now+ttl. Only its hash is kept.
func (s *Store) IssueLink(name string, ttl time.Duration, now time.Time) (string, error) {
	a, err := s.Get(name)
	if err != nil {
		return "", err
	}
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	token := base64.RawURLEncoding.EncodeToString(b)
	p, _ := s.linkPath(token, ".json")
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return "", err
	}
	s.sweepLinks(now)
	data, _ := json.Marshal(link{Account: name, Expires: now.Add(ttl).UTC(), Created: a.Created})
	if err := atomicfile.Write(p, data, 0o600); err != nil {
		return "", err
	}
	return token, nil
}

// PeekLink returns the account a login token is for, without using it.
func (s *Store) PeekLink(token string, now time.Time) (Account, error) {
	return s.readLink(token, ".json", now)
}

// UseLink uses a one-time login token: one caller wins, any later one is
// told the link was used.
func (s *Store) UseLink(token string, now time.Time) (Account, error) {
	p, ok := s.linkPath(token, ".json")
	if !ok {
		return Account{}, ErrTokenUnknown
	}
	used, _ := s.linkPath(token, ".used")
	a, err := s.readLink(token, ".json", now)
	if err != nil {
		return Account{}, err
	}
	if err := os.Rename(p, used); err != nil { // one rename of the file wins
		if errors.Is(err, os.ErrNotExist) {
			return Account{}, ErrTokenUsed
		}
		return Account{}, err
	}
	return a, nil
}

func (s *Store) readLink(token, ext string, now time.Time) (Account, error) {
	p, ok := s.linkPath(token, ext)
	if !ok {
		return Account{}, ErrTokenUnknown
	}
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		if used, _ := s.linkPath(token, ".used"); fileExists(used) {
			return Account{}, ErrTokenUsed
		}
		return Account{}, ErrTokenUnknown
	}
	if err != nil {
		return Account{}, err
	}
	var l link
	if err := json.Unmarshal(b, &l); err != nil {
		return Account{}, ErrTokenUnknown
	}
	if !now.Before(l.Expires) {
		return Account{}, ErrTokenExpired
	}
	a, err := s.Get(l.Account)
	if err == nil && !l.Created.IsZero() && !a.Created.Equal(l.Created) {
		return Account{}, fmt.Errorf("%w: the link's account was removed", ErrNoAccount)
	}
	return a, err
}

// sweepLinks deletes links that expired more than a day ago.
func (s *Store) sweepLinks(now time.Time) {
	dir := filepath.Join(s.dir, "links")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for i, e := range ents {
		if i >= 10000 {
			break
		}
		p := filepath.Join(dir, e.Name())
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		var l link
		if json.Unmarshal(b, &l) == nil && now.Sub(l.Expires) > 24*time.Hour {
			os.Remove(p)
		}
	}
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
