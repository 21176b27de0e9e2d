package localfed

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"credfed/certs"
	"credfed/console"
	"credfed/internal/atomicfile"
	"credfed/node"
)

// ConsoleAccount is one of the demo's console accounts (demo.json
// "console_accounts"): where it logs in, as what, with which password, and
// a one-time login link.
type ConsoleAccount struct {
	Node     string `json:"node"`
	Role     string `json:"role"`
	Name     string `json:"name"`
	Password string `json:"password"`
	Login    string `json:"login,omitempty"`
}

// consoleAccountsFile keeps the demo accounts' passwords across restarts.
const consoleAccountsFile = "console-accounts.json"

// LoginLinkTTL is how long the demo's one-time login links are good.
const LoginLinkTTL = 24 * time.Hour

// ConsoleAccounts makes the demo's console accounts once (a department
// officer at the first district, a coordinator at the first city, an
// operator at the province, each with the institution of the demo's
// certificate for that role) and returns them, each with a fresh
// one-time login link. It writes the nodes' account stores directly, so
// it works whether the nodes run in this process, as processes, or not
// yet.
func ConsoleAccounts(dir string, l Layout) ([]ConsoleAccount, error) {
	var prev []ConsoleAccount
	if b, err := os.ReadFile(filepath.Join(dir, consoleAccountsFile)); err == nil {
		if err := json.Unmarshal(b, &prev); err != nil {
			return nil, fmt.Errorf("localfed: %s: %w", consoleAccountsFile, err)
		}
	}
	type want struct {
		node  Node
		role  certs.Role
		files ClientFiles
	}
	var wants []want
	var firstCity, firstDistrict *Node
	for i := range l.Nodes {
		n := &l.Nodes[i]
		if n.Role == certs.City && firstCity == nil {
			firstCity = n
		}
		if n.Role == certs.District && firstDistrict == nil {
			firstDistrict = n
		}
	}
	if firstDistrict != nil {
		wants = append(wants, want{*firstDistrict, certs.Department, l.Departments[firstDistrict.Name]})
	}
	if firstCity != nil {
		wants = append(wants, want{*firstCity, certs.Coordinator, l.Coordinators[firstCity.Name]})
	}
	wants = append(wants, want{l.Nodes[0], certs.Operator, l.Operator})
	var out []ConsoleAccount
	for _, w := range wants {
		id, err := certs.ParseIdentity(w.files.Identity)
		if err != nil {
			return nil, fmt.Errorf("localfed: the %s certificate: %w", w.role, err)
		}
		cfg, err := node.LoadConfig(w.node.ConfigPath)
		if err != nil {
			return nil, err
		}
		store := console.OpenStore(node.ConsoleDir(cfg))
		acc := ConsoleAccount{Node: w.node.Name, Role: string(w.role), Name: string(w.role) + "-" + w.node.Name}
		for _, p := range prev {
			if p.Name == acc.Name && p.Node == acc.Node {
				acc.Password = p.Password
			}
		}
		if _, err := store.Get(acc.Name); errors.Is(err, console.ErrNoAccount) || acc.Password == "" {
			if acc.Password == "" {
				acc.Password = randomPassword()
			}
			_ = store.Remove(acc.Name) // an account whose password was lost gets a new one
			if err := store.Add(console.Account{Name: acc.Name, Role: w.role, Institution: id.Institution}, acc.Password, time.Now()); err != nil {
				return nil, err
			}
		} else if err != nil {
			return nil, err
		}
		tok, err := store.IssueLink(acc.Name, LoginLinkTTL, time.Now())
		if err != nil {
			return nil, err
		}
		acc.Login = "https://" + w.node.API + "/console/login?token=" + tok
		out = append(out, acc)
	}
	keep := make([]ConsoleAccount, len(out))
	for i, a := range out {
		keep[i] = a
		keep[i].Login = ""
	}
	b, _ := json.MarshalIndent(keep, "", "  ")
	if err := atomicfile.Write(filepath.Join(dir, consoleAccountsFile), append(b, '\n'), 0o600); err != nil {
		return nil, err
	}
	return out, nil
}

// randomPassword is 26 base32 characters (130 bits).
func randomPassword() string { return rand.Text() }
