package systemtest

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"credfed/certs"
	"credfed/credit"
	"credfed/exchange"
	"credfed/localfed"
	"credfed/lookup"
	"credfed/node"
	"credfed/pseudonym"
)

// lookupRequest is lookup.Op's body, with the same CBOR keys as the
// unexported type of package lookup: what a coordinator node sends.
type lookupRequest struct {
	Subject   string           `cbor:"1,keyasint"`
	Pseudonym credit.Pseudonym `cbor:"2,keyasint"`
	Requester certs.Identity   `cbor:"3,keyasint"`
}

type lookupReply struct {
	Records []credit.Record `cbor:"1,keyasint"`
}

type pseudonymRequest struct {
	IDs []string `cbor:"1,keyasint"`
}

type pseudonymReply struct {
	Pseudonyms []credit.Pseudonym `cbor:"1,keyasint"`
}

// bareEndpoint starts an exchange endpoint, outside any node, presenting
// cert: what an attacker holding a node certificate runs.
func bareEndpoint(t *testing.T, f *localfed.Federation, cert tls.Certificate) *exchange.Endpoint {
	t.Helper()
	ca, err := certs.LoadCA(f.Dir)
	if err != nil {
		t.Fatal(err)
	}
	ep, err := exchange.New(exchange.Config{Certificate: cert,
		Verifier: certs.NewVerifier(ca.Cert, ca.Federation, nil), Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ep.Close() })
	return ep
}

// issueNode issues a node certificate of the federation's CA, valid for
// 127.0.0.1, for any region, registered or not.
func issueNode(t *testing.T, f *localfed.Federation, role certs.Role, region string) tls.Certificate {
	t.Helper()
	ca, err := certs.LoadCA(f.Dir)
	if err != nil {
		t.Fatal(err)
	}
	is, err := ca.Issue(certs.IssueRequest{Identity: certs.Identity{Federation: ca.Federation, Role: role, Region: region},
		Hosts: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	return is.TLSCertificate()
}

// nodeCertificate is the certificate a running node of the federation
// presents (its files in the federation's directory).
func nodeCertificate(t *testing.T, f *localfed.Federation, name string) tls.Certificate {
	t.Helper()
	dir := filepath.Join(f.Dir, "nodes", name)
	pair, err := certs.LoadKeyPair(filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	return pair
}

// peerOf is how a caller reaches node name over the exchange.
func peerOf(t *testing.T, f *localfed.Federation, name string) exchange.Peer {
	t.Helper()
	ln, ok := f.Layout.Node(name)
	if !ok {
		t.Fatalf("no node %s", name)
	}
	id := certs.Identity{Federation: f.Layout.Federation, Role: ln.Role, Region: ln.Region}
	return exchange.Peer{Name: name, Addr: ln.Exchange, Identity: &id}
}

// wantNotRegistered checks a refusal: forbidden, saying that the region is
// not registered and naming it, and nothing else of the subject.
func wantNotRegistered(t *testing.T, what string, err error, region, subject string) {
	t.Helper()
	var we *exchange.Error
	if !errors.Is(err, exchange.ErrForbidden) || !errors.As(err, &we) {
		t.Fatalf("%s: %v, want forbidden", what, err)
	}
	if !strings.Contains(we.Message, "region "+region+" is not registered") {
		t.Errorf("%s: message %q does not say that region %s is not registered", what, we.Message, region)
	}
	if subject != "" && strings.Contains(we.Message, subject) {
		t.Errorf("%s: message %q holds the subject", what, we.Message)
	}
}

// TestOnlyRegisteredPeersAreAnswered: a node certificate the federation's
// CA issued for a region that is not in the registry passed the
// district's checks (chain, role, requester in the caller's region) and
// got the subject's full records. The exchange now admits only peers
// whose region is registered with their certificate's role: the same
// request from an unregistered city, from a city certificate for a
// district's registered region, and a pseudonym request from an
// unregistered district are refused on their first request, naming the
// region; the registered city's certificate is still answered.
func TestOnlyRegisteredPeersAreAnswered(t *testing.T) {
	f := startFed(t, localfed.Spec{Districts: 1}, node.Options{})
	district := f.Districts()[0]
	subject := credit.SyntheticPerson(5151, credit.NewDate(1971, 1, 5))
	submit(t, f, district, record("RP-1", subject, "FOOD-DRUG-PENALTY", "只有登记的节点才能查询"))
	waitIndexed(t, f, subject, 1)
	meta := exchange.Meta{Purpose: "ADMIN-LICENSING", User: "赵六", Reference: "R-peers"}
	pseud := pseudonymOf(t, f, subject)
	ask := func(ep *exchange.Endpoint, requesterRegion string) (lookupReply, error) {
		req := lookupRequest{Subject: subject, Pseudonym: pseud, Requester: certs.Identity{Federation: f.Layout.Federation,
			Role: certs.Coordinator, Region: requesterRegion, Institution: localfed.CoordinatorInstitution}}
		var rep lookupReply
		err := ep.Call(ctxT(t, 10*time.Second), peerOf(t, f, district), lookup.Op, meta, req, &rep)
		return rep, err
	}

	// The attack: a city certificate for a region nobody registered.
	rogueCity := "zhejiang/rogue"
	rogue := bareEndpoint(t, f, issueNode(t, f, certs.City, rogueCity))
	rep, err := ask(rogue, rogueCity)
	if len(rep.Records) > 0 {
		t.Fatalf("the district answered %d records to a city that is not registered", len(rep.Records))
	}
	wantNotRegistered(t, "lookup from an unregistered city", err, rogueCity, subject)

	// A city certificate for the district's own, registered, region path.
	districtRegion := regionOf(f, district)
	impostor := bareEndpoint(t, f, issueNode(t, f, certs.City, districtRegion))
	rep, err = ask(impostor, districtRegion)
	var we *exchange.Error
	if len(rep.Records) > 0 || !errors.As(err, &we) || we.Code != exchange.CodeForbidden ||
		!strings.Contains(we.Message, "region "+districtRegion+" is registered for a district node, not a city node") {
		t.Fatalf("lookup from a city certificate for a district's region: %d records, %v", len(rep.Records), err)
	}

	// A district certificate for an unregistered region asks a coordinator
	// for pseudonyms (the city's own custody check would refuse it too; the
	// exchange refuses it first, without reading the request).
	rogueDistrict := "zhejiang/quzhou/rogue"
	rogueD := bareEndpoint(t, f, issueNode(t, f, certs.District, rogueDistrict))
	var ps pseudonymReply
	err = rogueD.Call(ctxT(t, 10*time.Second), peerOf(t, f, "quzhou"), pseudonym.Op, exchange.Meta{}, pseudonymRequest{IDs: []string{subject}}, &ps)
	if len(ps.Pseudonyms) > 0 {
		t.Fatal("a coordinator pseudonymized for a district that is not registered")
	}
	wantNotRegistered(t, "pseudonyms for an unregistered district", err, rogueDistrict, subject)
	// And its lookup, whatever the role check says.
	if _, err := ask(rogueD, rogueDistrict); !errors.Is(err, exchange.ErrForbidden) {
		t.Fatalf("lookup from an unregistered district: %v", err)
	}

	// The control: the registered city's own certificate, on a bare
	// endpoint like the attacker's, is answered.
	city := bareEndpoint(t, f, nodeCertificate(t, f, "quzhou"))
	rep, err = ask(city, "zhejiang/quzhou")
	if err != nil || len(rep.Records) != 1 {
		t.Fatalf("lookup from the registered city: %d records, %v", len(rep.Records), err)
	}
}

// dialLayer is a raft.StreamLayer over a bare endpoint: what an attacker
// with a node certificate would use to speak Raft to the nodes.
type dialLayer struct{ ep *exchange.Endpoint }

func (l dialLayer) Accept() (net.Conn, error) { return l.ep.RaftListener().Accept() }
func (l dialLayer) Close() error              { return l.ep.RaftListener().Close() }
func (l dialLayer) Addr() net.Addr            { return l.ep.Addr() }
func (l dialLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return l.ep.DialRaft(ctx, string(addr))
}

// TestRaftStreamsOnlyFromRegisteredVoters: hashicorp/raft takes an
// AppendEntries of a higher term from anyone: the receiver adopts the term
// and steps down, so a node certificate was enough to depose the leader
// (and to append entries to a follower). Raft streams are now accepted
// from registered voters only: an unregistered city and a registered
// district (a non-voter) are refused, and the leader's term does not move.
func TestRaftStreamsOnlyFromRegisteredVoters(t *testing.T) {
	f := startFed(t, localfed.Spec{Districts: 1}, node.Options{})
	prov := f.Node(f.Province())
	term := func() uint64 {
		v, _ := strconv.ParseUint(prov.Replica().Stats()["term"], 10, 64)
		return v
	}
	before := term()
	attackTerm := before + 1000
	for _, tc := range []struct {
		name string
		cert tls.Certificate
	}{
		{"an unregistered city", issueNode(t, f, certs.City, "zhejiang/rogue")},
		{"a registered district", nodeCertificate(t, f, f.Districts()[0])},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ep := bareEndpoint(t, f, tc.cert)
			self, err := certs.IdentityOf(tc.cert.Leaf)
			if err != nil {
				t.Fatal(err)
			}
			trans := raft.NewNetworkTransport(dialLayer{ep}, 1, 5*time.Second, io.Discard)
			defer trans.Close()
			req := raft.AppendEntriesRequest{
				RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte(self.Region),
					Addr: []byte(ep.Addr().String())},
				Term: attackTerm,
			}
			var resp raft.AppendEntriesResponse
			err = trans.AppendEntries(raft.ServerID(f.Province()), raft.ServerAddress(prov.ExchangeAddr()), &req, &resp)
			if err == nil {
				t.Errorf("the province answered an AppendEntries of term %d (response term %d)", attackTerm, resp.Term)
			}
			if got := term(); got >= attackTerm {
				t.Fatalf("the province took the attacker's term: %d", got)
			}
		})
	}
	// The federation still works: the province leads (or a voter does)
	// and writes are applied.
	subject := credit.SyntheticPerson(5252, credit.NewDate(1972, 2, 6))
	submit(t, f, f.Districts()[0], record("RV-1", subject, "FOOD-DRUG-PENALTY", "raft"))
	waitIndexed(t, f, subject, 1)
}
