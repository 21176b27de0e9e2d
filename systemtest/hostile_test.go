package systemtest

// Hostile tests of the trust and privacy claims of issues 8 and 9, run on
// real local federations (127.0.0.1). Each test is named after an attack
// and asserts that the defence holds: it passes when the defence works and
// fails when it does not. The attackers: a district operator holding its
// node's certificate and data directory, stolen user certificates, a node
// certificate of an unregistered region, a hostile peer speaking the
// exchange directly, a client sending hostile HTTP bodies, and a crash at a
// bad moment.

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftwal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"
	"github.com/quic-go/quic-go"
	"gopkg.in/yaml.v3"

	"credfed/api"
	"credfed/certs"
	"credfed/consensus"
	"credfed/credit"
	"credfed/exchange"
	"credfed/internal/wait"
	"credfed/localfed"
	"credfed/node"
	"credfed/pseudonym"
	"credfed/storage"
)

// ---------------------------------------------------------------------------
// Helpers of the hostile tests.

// startFedConfigured creates a local federation, lets mutate change each
// node's configuration file before the first start, and starts it.
func startFedConfigured(t *testing.T, spec localfed.Spec, opts node.Options, mutate func(name string, c *node.Config)) *localfed.Federation {
	t.Helper()
	if spec.Dir == "" {
		spec.Dir = t.TempDir()
	}
	l, err := localfed.Create(spec)
	if err != nil {
		t.Fatal(err)
	}
	for _, ln := range l.Nodes {
		c, err := node.LoadConfig(ln.ConfigPath)
		if err != nil {
			t.Fatal(err)
		}
		mutate(ln.Name, &c)
		data, err := yaml.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(ln.ConfigPath, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return startFed(t, spec, opts)
}

// syntheticIDs returns n distinct valid test identifiers nobody submitted.
func syntheticIDs(base, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = credit.SyntheticPerson(base+i, credit.NewDate(1961, 3, 3))
	}
	return out
}

// askPseudonyms asks a coordinator node for pseudonyms over a bare
// endpoint: what a district operator holding its node certificate does.
func askPseudonyms(t *testing.T, ep *exchange.Endpoint, peer exchange.Peer, ids []string) ([]credit.Pseudonym, error) {
	t.Helper()
	var rep pseudonymReply
	err := ep.Call(ctxT(t, 20*time.Second), peer, pseudonym.Op, exchange.Meta{}, pseudonymRequest{IDs: ids}, &rep)
	return rep.Pseudonyms, err
}

// indexForward is consensus.index's body, indexAnswer its answer (the
// CBOR shapes of the unexported types of package consensus).
type indexForward struct {
	Updates []consensus.IndexUpdate `cbor:"1,keyasint"`
}

type wireRefusal struct {
	Reason  string `cbor:"1,keyasint"`
	Message string `cbor:"2,keyasint"`
}

type indexAnswer struct {
	Refused   *wireRefusal `cbor:"1,keyasint,omitempty"`
	Unknown   bool         `cbor:"2,keyasint,omitempty"`
	NotLeader bool         `cbor:"3,keyasint,omitempty"`
}

// forwardIndex hands index updates to the current leader over a bare
// endpoint, as a district's publisher does.
func forwardIndex(t *testing.T, f *localfed.Federation, ep *exchange.Endpoint, updates []consensus.IndexUpdate) {
	t.Helper()
	wait.Until(t, 30*time.Second, "the leader to take the forged index updates", func() bool {
		region, _ := f.Node(f.Province()).Replica().Leader()
		name := ""
		for _, ln := range f.Layout.Nodes {
			if ln.Region == region {
				name = ln.Name
			}
		}
		if name == "" {
			return false
		}
		var rep indexAnswer
		err := ep.Call(ctxT(t, 10*time.Second), peerOf(t, f, name), "consensus.index", exchange.Meta{}, indexForward{Updates: updates}, &rep)
		if err == nil && rep.Refused != nil {
			t.Fatalf("the leader refused the updates: %+v", rep.Refused)
		}
		return err == nil && !rep.NotLeader && !rep.Unknown
	})
}

// custodyOf reads GET /v1/custody at a coordinator node as its coordinator.
func custodyOf(t *testing.T, f *localfed.Federation, name string) map[string]api.CustodyAccount {
	t.Helper()
	var c api.Custody
	if _, err := clientOf(t, f, name, f.Layout.Coordinators[name]).Do(ctxT(t, 10*time.Second), "GET", "/v1/custody", "", nil, &c); err != nil {
		t.Fatal(err)
	}
	out := map[string]api.CustodyAccount{}
	for _, a := range c.Districts {
		out[a.District] = a
	}
	return out
}

// auditEntries returns every entry of a node's audit log.
func auditEntries(t *testing.T, f *localfed.Federation, name string) []storage.AuditEntry {
	t.Helper()
	var out []storage.AuditEntry
	a := f.Node(name).Store().Audit()
	head, _ := a.Head()
	if head == 0 {
		return nil
	}
	if err := a.Range(1, head, func(e storage.AuditEntry) error {
		out = append(out, e)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// craftCert signs a certificate with the federation CA's key from a
// template the test controls (extended key usages, SANs): what the CA never
// issues, to check that nodes refuse it.
func craftCert(t *testing.T, f *localfed.Federation, id certs.Identity, eku []x509.ExtKeyUsage, ips []net.IP) tls.Certificate {
	t.Helper()
	ca, err := certs.LoadCA(f.Dir)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(id.String())
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 100))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: id.Region},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: eku, URIs: []*url.URL{u}, IPAddresses: ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// The raw exchange protocol (docs/exchange.md), for requests the exchange
// package would never send: a user certificate, a malformed body.
type rawMeta struct {
	Purpose       string `cbor:"1,keyasint,omitempty"`
	User          string `cbor:"2,keyasint,omitempty"`
	Reference     string `cbor:"3,keyasint,omitempty"`
	Authorization string `cbor:"4,keyasint,omitempty"`
}

type rawRequest struct {
	Version uint64  `cbor:"1,keyasint"`
	Op      string  `cbor:"2,keyasint"`
	ID      uint64  `cbor:"3,keyasint"`
	Meta    rawMeta `cbor:"5,keyasint"`
	Body    []byte  `cbor:"6,keyasint,omitempty"`
}

type rawWireError struct {
	Code    string `cbor:"1,keyasint"`
	Message string `cbor:"2,keyasint,omitempty"`
}

type rawResponse struct {
	Version uint64        `cbor:"1,keyasint"`
	ID      uint64        `cbor:"3,keyasint"`
	Body    []byte        `cbor:"6,keyasint,omitempty"`
	Error   *rawWireError `cbor:"7,keyasint,omitempty"`
}

// rawDial opens a QUIC connection to addr presenting cert, whatever it is.
func rawDial(t *testing.T, f *localfed.Federation, addr string, cert tls.Certificate, alpn string) (*quic.Conn, error) {
	t.Helper()
	pool, err := certs.LoadPool(f.Layout.CA)
	if err != nil {
		t.Fatal(err)
	}
	host, _, _ := net.SplitHostPort(addr)
	conf := &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, ServerName: host,
		NextProtos: []string{alpn}, MinVersion: tls.VersionTLS13}
	conn, err := quic.DialAddr(ctxT(t, 10*time.Second), addr, conf, &quic.Config{HandshakeIdleTimeout: 5 * time.Second})
	if err == nil {
		t.Cleanup(func() { conn.CloseWithError(0, "") })
	}
	return conn, err
}

// rawCall sends one request frame with an arbitrary body on conn.
func rawCall(t *testing.T, conn *quic.Conn, op string, meta rawMeta, body []byte) (rawResponse, error) {
	t.Helper()
	env, err := cbor.Marshal(rawRequest{Version: 1, Op: op, ID: 7, Meta: meta, Body: body})
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t, 15*time.Second)
	str, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return rawResponse{}, err
	}
	str.SetDeadline(time.Now().Add(12 * time.Second))
	frame := binary.BigEndian.AppendUint32(nil, uint32(len(env)))
	if _, err := str.Write(append(frame, env...)); err != nil {
		return rawResponse{}, err
	}
	str.Close()
	b, err := io.ReadAll(str)
	if err != nil {
		return rawResponse{}, err
	}
	if len(b) < 4 || int(binary.BigEndian.Uint32(b)) != len(b)-4 {
		return rawResponse{}, fmt.Errorf("answer of %d bytes is not one frame", len(b))
	}
	var resp rawResponse
	if err := cbor.Unmarshal(b[4:], &resp); err != nil {
		return rawResponse{}, err
	}
	return resp, nil
}

// nodeAudit returns the number of entries of a node's audit log.
func auditHead(f *localfed.Federation, name string) uint64 {
	h, _ := f.Node(name).Store().Audit().Head()
	return h
}

// ---------------------------------------------------------------------------
// Pseudonymization custody.

// custodyConfig gives every coordinator a small, testable custody: 100
// identifiers a second per district (a burst of 1,000, one full request)
// and a one-second window before the check.
func custodyConfig(name string, c *node.Config) {
	if c.Role.IsCoordinatorNode() {
		c.PseudonymCustody.Rate = 100
		c.PseudonymCustody.Window = node.Duration(time.Second)
	}
}

// TestHostileDistrictSweepAcrossCoordinatorsIsRateLimitedPerDistrict: a
// district operator with its node certificate asks every coordinator of
// the federation — not only its own city — for pseudonyms. The limit is
// "identifiers per district": what the district gets in one burst must not
// grow with the number of coordinators it can reach.
func TestHostileDistrictSweepAcrossCoordinatorsIsRateLimitedPerDistrict(t *testing.T) {
	f := startFedConfigured(t, localfed.Spec{Districts: 1}, node.Options{}, custodyConfig)
	district := f.Districts()[0]
	ep := bareEndpoint(t, f, nodeCertificate(t, f, district))
	start := time.Now()
	granted := 0
	perCoordinator := map[string]int{}
	base := 100000
	for round := 0; round < 2; round++ {
		for _, name := range []string{f.Province(), "quzhou", "hangzhou"} {
			ps, err := askPseudonyms(t, ep, peerOf(t, f, name), syntheticIDs(base, pseudonym.MaxBatch))
			base += pseudonym.MaxBatch
			if err == nil {
				granted += len(ps)
				perCoordinator[name] += len(ps)
			} else if code := exchange.CodeOf(err); code != exchange.CodeTooManyRequests && code != exchange.CodeForbidden {
				// Refused: past the district's rate, or by a coordinator
				// that does not serve the district (another city).
				t.Fatalf("%s: %v", name, err)
			}
		}
	}
	elapsed := time.Since(start)
	// One district's allowance: the burst (1,000) and what refills meanwhile.
	allowed := pseudonym.MaxBatch + int(100*elapsed.Seconds()) + 100
	t.Logf("the district got %d pseudonyms in %v (%v by coordinator); its allowance is %d", granted, elapsed.Round(time.Millisecond), perCoordinator, allowed)
	if granted > allowed {
		t.Fatalf("the district got %d pseudonyms in %v by asking %d coordinators: the limit is per coordinator, not per district (allowance %d)",
			granted, elapsed.Round(time.Millisecond), len(perCoordinator), allowed)
	}
}

// TestHostileDistrictSweepHiddenByPublishingEmptyEntriesIsFlagged: a
// district operator sweeps identifiers it holds no records of, then — to
// hide the sweep from the custody check, which only asks whether the
// pseudonyms show up in the district's index entries — forwards an empty
// index entry (counts nothing, so no lookup ever reaches it) for each of
// them. A control district that sweeps without hiding is flagged; the
// hiding one must be flagged too.
func TestHostileDistrictSweepHiddenByPublishingEmptyEntriesIsFlagged(t *testing.T) {
	skipUnderRace(t, "waits for the custody check's runs over a hostile district's publishing")
	f := startFedConfigured(t, localfed.Spec{Districts: 2}, node.Options{}, custodyConfig)
	kecheng, xihu := f.Districts()[0], f.Districts()[1]
	hider := bareEndpoint(t, f, nodeCertificate(t, f, kecheng))
	control := bareEndpoint(t, f, nodeCertificate(t, f, xihu))

	swept, err := askPseudonyms(t, hider, peerOf(t, f, "quzhou"), syntheticIDs(200000, 200))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := askPseudonyms(t, control, peerOf(t, f, "hangzhou"), syntheticIDs(300000, 200)); err != nil {
		t.Fatal(err)
	}
	updates := make([]consensus.IndexUpdate, len(swept))
	for i, p := range swept {
		updates[i] = consensus.IndexUpdate{Pseudonym: p, District: regionOf(f, kecheng), Seq: 1<<40 + uint64(i)}
	}
	forwardIndex(t, f, hider, updates)

	var hiding, plain api.CustodyAccount
	wait.Until(t, 60*time.Second, "both coordinators to check their notes", func() bool {
		hiding = custodyOf(t, f, "quzhou")[regionOf(f, kecheng)]
		plain = custodyOf(t, f, "hangzhou")[regionOf(f, xihu)]
		return hiding.Checked >= 20 && plain.Checked >= 20
	})
	t.Logf("the hiding district: %+v; the control: %+v", hiding, plain)
	if !plain.Flagged {
		t.Fatalf("the control district swept %d identifiers and was not flagged: %+v", 200, plain)
	}
	if !hiding.Flagged {
		t.Fatalf("a district swept 200 identifiers it holds no records of and hid the sweep by forwarding an empty index entry for each: "+
			"checked %d, unmatched %d, not flagged", hiding.Checked, hiding.Unmatched)
	}
}

// TestHostileDistrictPlantingEntriesToWatchLookupsIsDetected: with the
// pseudonym of a victim it holds nothing about, a district forwards an
// index entry that claims a record: coordinators then send it every lookup
// of the victim (identifier, purpose, end user, case reference), and the
// custody check sees nothing wrong, since the pseudonym shows up in the
// district's index updates. That cannot be told in advance (a district's
// index entries are its own word), but it is seen after: every lookup the
// planted entry draws gets an answer without records from a district the
// index says holds some — a phantom answer, counted by district at the
// coordinator and noted in its audit log — while the district that holds
// the victim's record answers it and is not counted.
func TestHostileDistrictPlantingEntriesToWatchLookupsIsDetected(t *testing.T) {
	f := startFed(t, localfed.Spec{Districts: 2}, node.Options{})
	kecheng, xihu := f.Districts()[0], f.Districts()[1]
	victim := credit.SyntheticPerson(4711, credit.NewDate(1970, 7, 7))
	// The victim's records are at xihu only.
	submit(t, f, xihu, record("V-1", victim, "FOOD-DRUG-PENALTY", "victim"))
	waitIndexed(t, f, victim, 1)

	spy := bareEndpoint(t, f, nodeCertificate(t, f, kecheng))
	ps, err := askPseudonyms(t, spy, peerOf(t, f, "quzhou"), []string{victim})
	if err != nil {
		t.Fatal(err)
	}
	forwardIndex(t, f, spy, []consensus.IndexUpdate{{Pseudonym: ps[0], District: regionOf(f, kecheng),
		Summary: credit.IndexSummary{Negative: 1, Serious: 1, OnDishonestyList: true}, Seq: 1 << 41}})
	waitIndexed(t, f, victim, 2)

	ans, err := lookupUntil(t, coordinator(t, f), api.LookupRequest{Subject: victim, Purpose: "ADMIN-LICENSING", User: "被监视的查询人",
		Reference: "秘密案件-1", Consistency: api.ConsistencyStrong})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range ans.Districts {
		t.Logf("lookup answer: %s %s, %d records", d.District, d.Status, len(d.Records))
	}
	if st := statusOf(ans, regionOf(f, xihu)); st != api.DistrictOK {
		t.Fatalf("the district holding the victim's record answered %s", st)
	}
	metrics, err := httpGet("http://" + f.Node(f.Province()).MetricsAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	phantoms := func(district string) string {
		prefix := `credfed_lookup_phantom_answers_total{district="` + district + `"} `
		for _, line := range strings.Split(metrics, "\n") {
			if strings.HasPrefix(line, prefix) {
				return strings.TrimPrefix(line, prefix)
			}
		}
		return "absent"
	}
	if got := phantoms(regionOf(f, kecheng)); got != "1" {
		t.Errorf("the planting district's phantom answers at the coordinator: %s, want 1", got)
	}
	if got := phantoms(regionOf(f, xihu)); got != "absent" {
		t.Errorf("the honest district's phantom answers at the coordinator: %s, want none", got)
	}
	var noted []storage.AuditEntry
	for _, e := range auditEntries(t, f, f.Province()) {
		if e.Operation == "lookup.phantom_answer" {
			noted = append(noted, e)
		}
	}
	kechengID := certs.Identity{Federation: f.Layout.Federation, Role: certs.District, Region: regionOf(f, kecheng)}
	if len(noted) != 1 || noted[0].District != regionOf(f, kecheng) || noted[0].Subject != ps[0].String() ||
		noted[0].Caller != kechengID.String() || noted[0].Reference != "秘密案件-1" {
		t.Fatalf("the coordinator's audit log notes %d phantom answers, want one of %s for the victim's lookup: %+v", len(noted), kecheng, noted)
	}
}

func statusOf(ans *api.LookupAnswer, district string) string {
	for _, d := range ans.Districts {
		if d.District == district {
			return d.Status
		}
	}
	return "absent"
}

// TestHostileCustodyViewIsForReviewersOnly: GET /v1/custody says which
// districts asked for how many pseudonyms and which are flagged. The
// reviewed party — a district's own operator — and a coordinator of
// another city must not read a city's accounts; nor may departments and
// portals, and GET /v1/federation (any certificate) must not show the
// custody check's findings either.
func TestHostileCustodyViewIsForReviewersOnly(t *testing.T) {
	f := startFed(t, localfed.Spec{Districts: 1}, node.Options{})
	district := f.Districts()[0]
	subject := credit.SyntheticPerson(6161, credit.NewDate(1984, 4, 4))
	submit(t, f, district, record("CV-1", subject, "FOOD-DRUG-PENALTY", "custody view"))
	waitIndexed(t, f, subject, 1)
	ctx := ctxT(t, time.Minute)
	for _, c := range []struct {
		who   string
		files localfed.ClientFiles
	}{
		{"the department", f.Layout.Departments[district]},
		{"the portal", f.Layout.Portals[district]},
	} {
		if _, err := clientOf(t, f, "quzhou", c.files).Do(ctx, "GET", "/v1/custody", "", nil, nil); api.Code(err) != api.CodeForbidden {
			t.Errorf("%s reads the city's custody accounts: %v", c.who, err)
		}
	}
	var broken []string
	for _, c := range []struct {
		who   string
		files localfed.ClientFiles
	}{
		{"the district's own operator", issueUser(t, f, "operator", regionOf(f, district), "district-ops")},
		{"the other city's coordinator", f.Layout.Coordinators["hangzhou"]},
	} {
		var got api.Custody
		if _, err := clientOf(t, f, "quzhou", c.files).Do(ctx, "GET", "/v1/custody", "", nil, &got); api.Code(err) != api.CodeForbidden {
			broken = append(broken, fmt.Sprintf("%s reads quzhou's custody accounts (%v): %+v", c.who, err, got.Districts))
		}
	}
	// Any certificate reads GET /v1/federation: the custody job's progress
	// (checked, unmatched, flagged) is there for a portal to see.
	v, err := clientOf(t, f, "quzhou", f.Layout.Portals[district]).Federation(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, j := range v.Jobs {
		if j.Name == pseudonym.CheckJobName {
			broken = append(broken, fmt.Sprintf("a portal reads the custody check's findings in GET /v1/federation: %v", j.Progress))
		}
	}
	if len(broken) > 0 {
		t.Fatal(strings.Join(broken, "\n"))
	}
}

// ---------------------------------------------------------------------------
// Hostile HTTP bodies.

// TestHostileRefusedLookupStoresNoOversizedFieldsInTheAudit: POST
// /v1/lookups admits any certificate so that refusals are audited. A
// portal (or a coordinator) sends a case reference of hundreds of
// kilobytes with a bidirectional override; the lookup is refused, and the
// refusal's audit entry must not keep what the edge refused: bad input
// changes nothing.
func TestHostileRefusedLookupStoresNoOversizedFieldsInTheAudit(t *testing.T) {
	f := startFed(t, localfed.Spec{Districts: 1}, node.Options{})
	district := f.Districts()[0]
	subject := credit.SyntheticPerson(8080, credit.NewDate(1975, 5, 5))
	p := pseudonymOf(t, f, subject).String()
	huge := strings.Repeat("案", 300_000) + "\u202e\u0007"
	cases := []struct {
		who   string
		files localfed.ClientFiles
		req   api.LookupRequest
		code  string
	}{
		{"a portal", f.Layout.Portals[district], api.LookupRequest{Subject: subject, Purpose: "ADMIN-LICENSING", User: "u", Reference: huge}, api.CodeForbidden},
		{"a department", f.Layout.Departments[district], api.LookupRequest{Subject: subject, Purpose: huge[:600_000], User: "u", Reference: "r"}, api.CodeForbidden},
		{"the coordinator", f.Layout.Coordinator, api.LookupRequest{Subject: subject, Purpose: "ADMIN-LICENSING", User: "u", Reference: huge[:100_000] + "\u202e"}, api.CodeBadRequest},
		{"the coordinator, with a 600 KB purpose", f.Layout.Coordinator, api.LookupRequest{Subject: subject, Purpose: strings.Repeat("P", 600_000), User: "u", Reference: "r"}, api.CodeForbidden},
	}
	for _, c := range cases {
		_, err := clientOf(t, f, f.Province(), c.files).Lookup(ctxT(t, 30*time.Second), c.req)
		if api.Code(err) != c.code {
			t.Fatalf("%s: %v, want %s", c.who, err, c.code)
		}
		if se, ok := err.(*api.StatusError); ok && len(se.Err.Message) > 1024 {
			t.Errorf("%s: the refusal's message is %d bytes: it echoes the oversized field", c.who, len(se.Err.Message))
		}
	}
	entries, err := f.Node(f.Province()).Store().Audit().BySubject(p)
	if err != nil {
		t.Fatal(err)
	}
	var broken []string
	for _, e := range entries {
		for _, fl := range []struct{ name, v string }{{"user", e.User}, {"purpose", e.Purpose}, {"reference", e.Reference}, {"authorization", e.Authorization}} {
			if len(fl.v) > 256 || strings.ContainsAny(fl.v, "\u202e\u0007") {
				broken = append(broken, fmt.Sprintf("%s (%s): the refused lookup's audit entry keeps a %s of %d bytes (bidi override or BEL kept: %v)",
					e.Caller, e.Decision, fl.name, len(fl.v), strings.ContainsAny(fl.v, "\u202e\u0007")))
			}
		}
	}
	if len(broken) > 0 {
		t.Fatal(strings.Join(broken, "\n"))
	}
}

// TestHostileInvisibleCharactersInRecordTextAreRefused: record text that
// reads differently from what it holds is refused naming the field:
// control characters, bidirectional overrides and isolates (which the code
// refuses) and the other invisible format characters (tag characters,
// which smuggle hidden ASCII; the soft hyphen; invisible operators; line
// and paragraph separators; Hangul fillers).
func TestHostileInvisibleCharactersInRecordTextAreRefused(t *testing.T) {
	f := startFed(t, localfed.Spec{Districts: 1}, node.Options{})
	district := f.Districts()[0]
	dept := department(t, f, district)
	subject := credit.SyntheticPerson(9393, credit.NewDate(1979, 9, 3))
	cases := []struct{ name, text string }{
		{"NUL", "罚款\x00五千元"},
		{"BEL", "罚款\a五千元"},
		{"ESC sequence", "罚款\x1b[2J五千元"},
		{"right-to-left override", "罚款\u202e元千五"},
		{"first strong isolate", "罚款\u2068五千元"},
		{"zero-width space", "罚\u200b款"},
		{"tag characters (hidden ASCII)", "罚款五千元\U000E0049\U000E0047\U000E004E\U000E004F\U000E0052\U000E0045"},
		{"soft hyphen", "罚\u00ad款"},
		{"invisible separator", "罚\u2063款"},
		{"line separator", "罚款\u2028五千元"},
		{"Hangul filler", "罚\u3164款"},
		{"Mongolian vowel separator", "罚\u180e款"},
	}
	before := f.Node(district).Store().CountRecords()
	var accepted []string
	for i, c := range cases {
		ans, _, err := dept.SubmitRecords(ctxT(t, 30*time.Second), []api.RecordInput{record(fmt.Sprintf("INV-%d", i), subject, "FOOD-DRUG-PENALTY", c.text)})
		switch {
		case api.Code(err) == api.CodeBadRequest:
			var se *api.StatusError
			errors.As(err, &se)
			t.Logf("%s: refused: %s", c.name, se.Err.Message)
		case err != nil:
			t.Fatalf("%s: %v", c.name, err)
		case ans.Results[0].Status == api.StatusAccepted:
			accepted = append(accepted, c.name)
		default:
			r := ans.Results[0]
			if r.Error == nil || r.Error.Field != "summary" {
				t.Errorf("%s: %+v: the refusal does not name the field", c.name, r)
			}
		}
	}
	t.Logf("%d records stored before, %d after", before, f.Node(district).Store().CountRecords())
	if len(accepted) > 0 {
		t.Fatalf("record text holding these invisible characters was accepted: %s", strings.Join(accepted, ", "))
	}
}

// TestHostileOversizedRecordsChangeNothing: a record over 64 KiB in an
// array, in NDJSON and alone, and 10,001 records, are refused with a
// typed error while being read, and nothing of the request is stored (not
// even the good records before the huge one).
func TestHostileOversizedRecordsChangeNothing(t *testing.T) {
	f := startFed(t, localfed.Spec{Districts: 1}, node.Options{})
	district := f.Districts()[0]
	dept := department(t, f, district)
	subject := credit.SyntheticPerson(7171, credit.NewDate(1970, 1, 7))
	good := func(i int) []byte {
		b, _ := jsonMarshal(record(fmt.Sprintf("OV-%d", i), subject, "FOOD-DRUG-PENALTY", "ok"))
		return b
	}
	// 100 KiB of whitespace inside the object: the record is still one
	// valid JSON value, larger than the cap.
	huge := append([]byte(`{"id": "OV-HUGE",`+strings.Repeat(" ", 100<<10)), good(99)[1:]...)
	array := []byte("[" + string(good(1)) + "," + string(good(2)) + "," + string(good(3)) + "," + string(huge) + "]")
	ndjson := []byte(string(good(1)) + "\n" + string(good(2)) + "\n" + string(huge) + "\n")
	var many bytes.Buffer
	many.WriteString("[")
	for i := 0; i < 10_001; i++ {
		if i > 0 {
			many.WriteString(",")
		}
		many.WriteString(`{"id":"M"}`)
	}
	many.WriteString("]")
	before := f.Node(district).Store().CountRecords()
	for _, c := range []struct {
		name, contentType string
		body              []byte
	}{
		{"array with a 100 KiB record", "application/json", array},
		{"NDJSON with a 100 KiB line", "application/x-ndjson", ndjson},
		{"one 100 KiB record", "application/json", huge},
		{"10,001 records", "application/json", many.Bytes()},
	} {
		_, err := dept.Do(ctxT(t, 30*time.Second), "POST", "/v1/records", c.contentType, c.body, nil)
		var se *api.StatusError
		if !errors.As(err, &se) || se.Status != 400 || se.Err.Code != api.CodeBadRequest {
			t.Errorf("%s: %v, want 400 bad_request", c.name, err)
			continue
		}
		t.Logf("%s: %s", c.name, se.Err.Message)
	}
	if after := f.Node(district).Store().CountRecords(); after != before {
		t.Fatalf("%d records stored before the oversized requests, %d after", before, after)
	}
}

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }

// TestHostileBodiesJustUnderTheLargeThresholdAreBounded: bulk bodies over
// 1 MiB are read two at a time, so that what a node holds of bodies being
// read is bounded. A stolen department certificate opens 200 connections,
// each announcing a body just under 1 MiB (below the threshold, so no
// slot is taken), sends all of it but the last bytes, and waits (the bulk
// read timeout is two minutes). What the node then holds must stay within
// the bound for large bodies (two of 64 MiB).
func TestHostileBodiesJustUnderTheLargeThresholdAreBounded(t *testing.T) {
	f := startFed(t, localfed.Spec{Districts: 1}, node.Options{})
	district := f.Districts()[0]
	conf := tlsConfig(t, f, f.Layout.Departments[district])
	conf.NextProtos = []string{"http/1.1"}
	subject := credit.SyntheticPerson(5555, credit.NewDate(1985, 5, 5))
	one, _ := jsonMarshal(record("X", subject, "FOOD-DRUG-PENALTY", "s"))
	var body bytes.Buffer
	body.WriteString("[")
	for i := 0; body.Len()+len(one)+2 < 1_000_000 && i < 10_000; i++ {
		if i > 0 {
			body.WriteString(",")
		}
		body.Write(one)
	}
	announced := body.Len() + 1 // the closing ']' never comes
	head := fmt.Sprintf("POST /v1/records HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", announced)
	base := heapInUse()
	const conns = 200
	var open []net.Conn
	defer func() {
		for _, c := range open {
			c.Close()
		}
	}()
	deadline := time.Now().Add(60 * time.Second)
	for i := 0; i < conns && time.Now().Before(deadline); i++ {
		c, err := tls.Dial("tcp", f.Node(district).APIAddr(), conf)
		if err != nil {
			t.Fatal(err)
		}
		open = append(open, c)
		if _, err := io.WriteString(c, head); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write(body.Bytes()); err != nil {
			t.Fatal(err)
		}
	}
	// The node has read what was sent once its heap stops growing.
	last := heapInUse()
	_ = wait.For(ctxT(t, 10*time.Second), 250*time.Millisecond, func() bool {
		now := heapInUse()
		settled := now-last < 1<<20
		last = now
		return settled
	})
	held := heapInUse() - base
	t.Logf("%d connections, each with %d of %d announced bytes sent: the heap grew by %d MiB", len(open), body.Len(), announced, held>>20)
	// And the node still answers the department?
	if _, err := department(t, f, district).Federation(ctxT(t, 10*time.Second)); err != nil {
		t.Logf("the node does not answer meanwhile: %v", err)
	}
	if bound := int64(2 * 64 << 20); held > bound {
		t.Fatalf("bodies below the 1 MiB threshold are read without a slot: %d of them made the node hold %d MiB, beyond the %d MiB "+
			"bound of large bodies (and a node takes 4,096 connections)", len(open), held>>20, bound>>20)
	}
}

func heapInUse() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}

// TestHostileIdleConnectionsDoNotLockOutTheAPI: the API takes at most
// 4,096 connections at once. Anyone who reaches the port — no
// certificate needed — opens 4,100 TCP connections and sends nothing (a
// TLS handshake that never starts is dropped after 10 s, so an attacker
// reopens 410 a second). A department with a certificate must still be
// answered, or at least told why not.
func TestHostileIdleConnectionsDoNotLockOutTheAPI(t *testing.T) {
	f := startFed(t, localfed.Spec{Districts: 1}, node.Options{})
	district := f.Districts()[0]
	addr := f.Node(district).APIAddr()
	var open []net.Conn
	closeAll := func() {
		for _, c := range open {
			c.Close()
		}
		open = nil
	}
	defer closeAll()
	deadline := time.Now().Add(60 * time.Second)
	for i := 0; i < 4100 && time.Now().Before(deadline); i++ {
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		open = append(open, c)
	}
	// Every connection accepted by the API before the department asks.
	wait.Until(t, 10*time.Second, "the API to hold the idle connections", func() bool {
		return gaugeOf(t, f.Node(district), "credfed_api_open_connections") >= float64(min(len(open), 4096)-16)
	})
	start := time.Now()
	_, err := department(t, f, district).Federation(ctxT(t, 5*time.Second))
	took := time.Since(start)
	n := len(open)
	closeAll()
	if _, err := department(t, f, district).Federation(ctxT(t, 30*time.Second)); err != nil {
		t.Fatalf("the API does not answer even after the idle connections closed: %v", err)
	}
	if err != nil {
		t.Fatalf("%d idle TCP connections without a certificate locked a department out of the API: %v after %v", n, err, took.Round(time.Millisecond))
	}
}

// ---------------------------------------------------------------------------
// Hostile peers on the exchange.

// applyForward is consensus.apply's body (the CBOR shape of the
// unexported applyRequest).
type applyForward struct {
	Type  consensus.CommandType `cbor:"1,keyasint"`
	Actor certs.Identity        `cbor:"2,keyasint"`
	Body  cbor.RawMessage       `cbor:"3,keyasint"`
}

type applyAnswer struct {
	Refused   *wireRefusal `cbor:"1,keyasint,omitempty"`
	Unknown   bool         `cbor:"2,keyasint,omitempty"`
	NotLeader bool         `cbor:"3,keyasint,omitempty"`
}

// leaderName is the node name of the current Raft leader.
func leaderName(t *testing.T, f *localfed.Federation) string {
	t.Helper()
	name := ""
	wait.Until(t, 30*time.Second, "a leader", func() bool {
		for _, ln := range f.Layout.Nodes {
			if n := f.Node(ln.Name); n != nil && n.Replica().IsLeader() {
				name = ln.Name
				return true
			}
		}
		return false
	})
	return name
}

// TestHostileMalformedCBORGetsBadRequestAndChangesNothing: a registered
// city sends a district undecodable lookup bodies, and a registered
// district sends a coordinator undecodable pseudonym requests and the
// leader undecodable index forwards: each is answered bad_request, the
// connection goes on serving, and no audit entry, custody account or log
// entry changes.
func TestHostileMalformedCBORGetsBadRequestAndChangesNothing(t *testing.T) {
	f := startFed(t, localfed.Spec{Districts: 1}, node.Options{})
	district := f.Districts()[0]
	subject := credit.SyntheticPerson(1212, credit.NewDate(1972, 12, 12))
	submit(t, f, district, record("CB-1", subject, "FOOD-DRUG-PENALTY", "cbor"))
	waitIndexed(t, f, subject, 1)
	leader := leaderName(t, f)
	relayer := "quzhou"
	if leader == relayer {
		relayer = f.Province()
	}
	bodies := map[string][]byte{
		"a lone break byte":               {0xff},
		"a map cut short":                 {0xa2, 0x01},
		"an array claiming 2^32 elements": {0x9a, 0xff, 0xff, 0xff, 0xff, 0x00},
		"an indefinite-length map":        {0xbf, 0x01, 0x61, 0x61, 0xff},
		"duplicate keys":                  {0xa2, 0x01, 0x61, 0x61, 0x01, 0x61, 0x62},
		"nesting 40 deep":                 append(bytes.Repeat([]byte{0x81}, 40), 0x00),
		"a valid item and trailing bytes": {0xa0, 0x00, 0x00},
		"invalid UTF-8 text":              {0xa1, 0x01, 0x81, 0x62, 0xff, 0xfe},
		"a 70 KiB byte string":            append([]byte{0xa1, 0x01, 0x5a, 0x00, 0x01, 0x18, 0x00}, make([]byte, 70<<10)...),
		"an empty body":                   nil,
	}
	targets := []struct {
		name, op, to string
		cert         tls.Certificate
	}{
		{"a city to a district's lookup", "lookup", district, nodeCertificate(t, f, "quzhou")},
		{"a district to a coordinator's pseudonymize", pseudonym.Op, "quzhou", nodeCertificate(t, f, district)},
		{"a district to the leader's consensus.index", "consensus.index", leader, nodeCertificate(t, f, district)},
		// consensus.apply admits province and city callers only (a district
		// is refused forbidden before its body is read): a coordinator
		// other than the leader sends the garbage.
		{"a coordinator to the leader's consensus.apply", "consensus.apply", leader, nodeCertificate(t, f, relayer)},
	}
	auditBefore := map[string]uint64{district: auditHead(f, district), "quzhou": auditHead(f, "quzhou")}
	custodyBefore := custodyOf(t, f, "quzhou")
	lastLog := f.Node(leader).Replica().Stats()["last_log_index"]
	meta := rawMeta{Purpose: "ADMIN-LICENSING", User: "u", Reference: "r"}
	for _, tg := range targets {
		ln, _ := f.Layout.Node(tg.to)
		conn, err := rawDial(t, f, ln.Exchange, tg.cert, exchange.ALPN)
		if err != nil {
			t.Fatalf("%s: dial: %v", tg.name, err)
		}
		for what, body := range bodies {
			resp, err := rawCall(t, conn, tg.op, meta, body)
			if err != nil {
				t.Fatalf("%s, %s: no answer: %v", tg.name, what, err)
			}
			if resp.Error == nil || resp.Error.Code != "bad_request" {
				t.Errorf("%s, %s: answered %+v, want bad_request", tg.name, what, resp.Error)
			}
			if resp.Error != nil && strings.Contains(resp.Error.Message, subject) {
				t.Errorf("%s, %s: the message holds the subject", tg.name, what)
			}
		}
	}
	if got := auditHead(f, district); got != auditBefore[district] {
		t.Errorf("the district's audit log grew from %d to %d entries", auditBefore[district], got)
	}
	for d, a := range custodyOf(t, f, "quzhou") {
		if a.Issued != custodyBefore[d].Issued {
			t.Errorf("custody account of %s changed: %+v -> %+v", d, custodyBefore[d], a)
		}
	}
	t.Logf("quzhou's audit log: %d entries before, %d after (undecodable pseudonym requests are not audited)", auditBefore["quzhou"], auditHead(f, "quzhou"))
	// A pseudonym is 16 bytes: one of 3 bytes or of 24 is not a pseudonym.
	conn, err := rawDial(t, f, peerOf(t, f, leader).Addr, nodeCertificate(t, f, district), exchange.ALPN)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{3, 24} {
		upd, _ := cbor.Marshal(map[int]any{1: []any{[]any{bytes.Repeat([]byte{7}, n), regionOf(f, district), map[int]int{2: 1}, uint64(1 << 42)}}})
		resp, err := rawCall(t, conn, "consensus.index", rawMeta{}, upd)
		if err != nil {
			t.Fatal(err)
		}
		if resp.Error == nil {
			t.Errorf("an index update with a %d-byte pseudonym was taken (answer %x): a typed error was due", n, resp.Body)
		}
	}
	if got := f.Node(leader).Replica().Stats()["last_log_index"]; got != lastLog {
		t.Logf("the leader's log moved from %s to %s (other traffic?)", lastLog, got)
	}
}

// TestHostileDistrictCannotFillTheRaftLogWithRefusedCommands: consensus.apply
// takes any registered node's command and leaves authorization to the
// FSM, after the entry is committed. A district operator relays
// operator commands it may not issue, 3 MiB each: every one is refused,
// and none may enter the replicated log of every node.
func TestHostileDistrictCannotFillTheRaftLogWithRefusedCommands(t *testing.T) {
	f := startFed(t, localfed.Spec{Districts: 1}, node.Options{})
	district := f.Districts()[0]
	leader := leaderName(t, f)
	ep := bareEndpoint(t, f, nodeCertificate(t, f, district))
	op := certs.Identity{Federation: f.Layout.Federation, Role: certs.Operator, Region: "zhejiang", Institution: "operations"}
	junk, err := cbor.Marshal(bytes.Repeat([]byte{'j'}, 3<<20))
	if err != nil {
		t.Fatal(err)
	}
	prov := f.Node(f.Province())
	before, _ := prov.Replica().Stats()["last_log_index"], 0
	const n = 5
	refused := 0
	for i := 0; i < n; i++ {
		var rep applyAnswer
		err := ep.Call(ctxT(t, 30*time.Second), peerOf(t, f, leader), "consensus.apply", exchange.Meta{},
			applyForward{Type: consensus.CmdRegionPut, Actor: op, Body: junk}, &rep)
		if err != nil {
			t.Logf("apply %d: %v", i, err)
			continue
		}
		if rep.Refused != nil {
			refused++
		}
		if i == 0 {
			t.Logf("the leader's answer: %+v", rep.Refused)
		}
	}
	after := prov.Replica().Stats()["last_log_index"]
	var b, a uint64
	fmt.Sscan(before, &b)
	fmt.Sscan(after, &a)
	t.Logf("%d of %d commands refused; the log went from %d to %d entries", refused, n, b, a)
	if a >= b+uint64(refused) && refused > 0 {
		t.Fatalf("a district had %d refused 3 MiB commands committed to every node's Raft log (last index %d -> %d): "+
			"the relay is checked by the FSM after commit, not by the leader before proposing", refused, b, a)
	}
}

// TestHostileUserCertificateCannotPoseAsANode: a stolen user certificate
// (a coordinator's) speaks the exchange directly, and certificates the CA
// signed without the extended key usages their role needs (no EKU,
// clientAuth only, anyExtendedKeyUsage, a user certificate with
// serverAuth) are presented to the exchange, to the HTTPS API and as a
// server: every one is refused.
func TestHostileUserCertificateCannotPoseAsANode(t *testing.T) {
	f := startFed(t, localfed.Spec{Districts: 1}, node.Options{})
	district := f.Districts()[0]
	fed := f.Layout.Federation
	loop := []net.IP{net.ParseIP("127.0.0.1")}
	both := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	dID := certs.Identity{Federation: fed, Role: certs.District, Region: regionOf(f, district)}
	coordFiles := f.Layout.Coordinators["quzhou"]
	coordPair, err := certs.LoadKeyPair(coordFiles.Cert, coordFiles.Key)
	if err != nil {
		t.Fatal(err)
	}
	cID := certs.Identity{Federation: fed, Role: certs.Coordinator, Region: "zhejiang/quzhou", Institution: "credit-office"}
	exchangeCases := []struct {
		name string
		cert tls.Certificate
	}{
		{"the city coordinator's user certificate", coordPair},
		{"a coordinator certificate with serverAuth and an IP SAN", craftCert(t, f, cID, both, loop)},
		{"a district certificate without extended key usage", craftCert(t, f, dID, nil, loop)},
		{"a district certificate with clientAuth only", craftCert(t, f, dID, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, loop)},
		{"a district certificate with anyExtendedKeyUsage", craftCert(t, f, dID, []x509.ExtKeyUsage{x509.ExtKeyUsageAny}, loop)},
	}
	ids := []string{credit.SyntheticPerson(31, credit.NewDate(1990, 1, 1))}
	reqBody, _ := cbor.Marshal(pseudonymRequest{IDs: ids})
	for _, c := range exchangeCases {
		for _, alpn := range []string{exchange.ALPN, exchange.RaftALPN} {
			ln, _ := f.Layout.Node("quzhou")
			conn, err := rawDial(t, f, ln.Exchange, c.cert, alpn)
			if err != nil {
				t.Logf("%s (%s): refused at the handshake: %v", c.name, alpn, err)
				continue
			}
			if alpn == exchange.RaftALPN {
				str, err := conn.OpenStreamSync(ctxT(t, 5*time.Second))
				if err == nil {
					str.SetDeadline(time.Now().Add(5 * time.Second))
					_, _ = str.Write([]byte{0})
					_, err = str.Read(make([]byte, 1))
				}
				if err == nil {
					t.Errorf("%s: a raft stream was accepted", c.name)
				}
				continue
			}
			resp, err := rawCall(t, conn, pseudonym.Op, rawMeta{}, reqBody)
			if err == nil && resp.Error == nil {
				t.Errorf("%s: answered %d bytes of pseudonyms", c.name, len(resp.Body))
			} else if err == nil {
				t.Logf("%s: answered %s %q", c.name, resp.Error.Code, resp.Error.Message)
			}
		}
	}
	// The HTTPS API.
	depID := certs.Identity{Federation: fed, Role: certs.Department, Region: regionOf(f, district), Institution: localfed.Department}
	for _, c := range []struct {
		name string
		cert tls.Certificate
	}{
		{"a department certificate with serverAuth", craftCert(t, f, depID, both, nil)},
		{"a department certificate without extended key usage", craftCert(t, f, depID, nil, nil)},
		{"a department certificate with anyExtendedKeyUsage", craftCert(t, f, depID, []x509.ExtKeyUsage{x509.ExtKeyUsageAny}, nil)},
	} {
		pool, _ := certs.LoadPool(f.Layout.CA)
		conn, err := tls.Dial("tcp", f.Node(district).APIAddr(), &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{c.cert},
			MinVersion: tls.VersionTLS13, NextProtos: []string{"http/1.1"}})
		if err != nil {
			continue
		}
		io.WriteString(conn, "GET /v1/records/CB-1 HTTP/1.1\r\nHost: x\r\n\r\n")
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		b, _ := io.ReadAll(io.LimitReader(conn, 4096))
		conn.Close()
		if bytes.HasPrefix(b, []byte("HTTP/1.1 200")) || bytes.HasPrefix(b, []byte("HTTP/1.1 404")) {
			t.Errorf("%s: the API served it: %q", c.name, b[:min(len(b), 80)])
		}
	}
	// A user certificate as a server: a node dialing an address where a
	// coordinator's certificate answers refuses it.
	for _, c := range []struct {
		name string
		cert tls.Certificate
	}{
		{"a coordinator certificate with serverAuth", craftCert(t, f, cID, both, loop)},
		{"a district certificate with clientAuth only", craftCert(t, f, dID, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, loop)},
	} {
		ln, err := quic.ListenAddr("127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{c.cert}, NextProtos: []string{exchange.ALPN},
			ClientAuth: tls.RequireAnyClientCert, MinVersion: tls.VersionTLS13}, nil)
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			for {
				conn, err := ln.Accept(context.Background())
				if err != nil {
					return
				}
				go func() {
					str, err := conn.AcceptStream(context.Background())
					if err != nil {
						return
					}
					io.Copy(io.Discard, str)
					env, _ := cbor.Marshal(rawResponse{Version: 1, ID: 1, Body: []byte{0xa1, 0x01, 0x80}})
					str.Write(append(binary.BigEndian.AppendUint32(nil, uint32(len(env))), env...))
					str.Close()
				}()
			}
		}()
		ep := bareEndpoint(t, f, nodeCertificate(t, f, district))
		var rep pseudonymReply
		err = ep.Call(ctxT(t, 10*time.Second), exchange.Peer{Name: "fake", Addr: ln.Addr().String()}, pseudonym.Op, exchange.Meta{}, pseudonymRequest{IDs: ids}, &rep)
		ln.Close()
		if err == nil {
			t.Errorf("%s: a node accepted it as a server", c.name)
		}
	}
}

// operatorOf is the province's operator, the actor of revocations and
// suspensions.
func operatorOf(f *localfed.Federation) certs.Identity {
	return certs.Identity{Federation: f.Layout.Federation, Role: certs.Operator, Region: "zhejiang", Institution: "operations"}
}

// applyAsOperator applies an operator command through the province node.
func applyAsOperator(t *testing.T, f *localfed.Federation, typ consensus.CommandType, body any) {
	t.Helper()
	wait.Until(t, 20*time.Second, "the command to be applied", func() bool {
		_, err := f.Node(f.Province()).Replica().Apply(ctxT(t, 10*time.Second), typ, operatorOf(f), body)
		if err != nil {
			var re *consensus.RefusedError
			if errors.As(err, &re) {
				t.Fatalf("refused: %v", err)
			}
		}
		return err == nil
	})
}

// TestHostileSuspendedCertificateIsRefusedOnOpenConnections: suspension
// (by identity) must cut like revocation: a coordinator's HTTPS keep-alive
// connection, and a district node's live QUIC connection to its city, are
// refused on their very next request once the node has the suspension;
// reinstated, they work again.
func TestHostileSuspendedCertificateIsRefusedOnOpenConnections(t *testing.T) {
	f := startFed(t, localfed.Spec{Districts: 1}, node.Options{})
	district := f.Districts()[0]
	subject := credit.SyntheticPerson(2323, credit.NewDate(1983, 2, 3))
	coord := coordinator(t, f)
	req := api.LookupRequest{Subject: subject, Purpose: "ADMIN-LICENSING", User: "钱七", Reference: "R-susp"}
	if _, err := coord.Lookup(ctxT(t, 30*time.Second), req); err != nil {
		t.Fatal(err)
	}
	ep := bareEndpoint(t, f, nodeCertificate(t, f, district))
	ids := []string{subject}
	if _, err := askPseudonyms(t, ep, peerOf(t, f, "quzhou"), ids); err != nil {
		t.Fatal(err)
	}
	coordID := f.Layout.Coordinator.Identity
	districtID := certs.Identity{Federation: f.Layout.Federation, Role: certs.District, Region: regionOf(f, district)}.String()
	for _, id := range []string{coordID, districtID} {
		applyAsOperator(t, f, consensus.CmdSuspend, certs.Suspension{Identity: id, Reason: "investigation"})
	}
	cert, _ := certs.LoadCertFile(f.Layout.Coordinator.Cert)
	cid, _ := certs.IdentityOf(cert)
	dcert := nodeCertificate(t, f, district).Leaf
	did, _ := certs.IdentityOf(dcert)
	wait.Until(t, 20*time.Second, "the province and the city to hold the suspensions", func() bool {
		return f.Node(f.Province()).Replica().State().Revocations().Check(cert, cid) != nil &&
			f.Node("quzhou").Replica().State().Revocations().Check(dcert, did) != nil
	})
	_, err := coord.Lookup(ctxT(t, 30*time.Second), req)
	if api.Code(err) != api.CodeUnauthenticated {
		t.Errorf("a suspended coordinator's lookup on its keep-alive connection: %v", err)
	}
	if _, err := askPseudonyms(t, ep, peerOf(t, f, "quzhou"), ids); err == nil {
		t.Errorf("a suspended district got pseudonyms on its live connection")
	}
	for _, id := range []string{coordID, districtID} {
		applyAsOperator(t, f, consensus.CmdReinstate, consensus.Reinstate{Identity: id})
	}
	wait.Until(t, 20*time.Second, "the reinstated coordinator to be served", func() bool {
		_, err := coord.Lookup(ctxT(t, 30*time.Second), req)
		return err == nil
	})
}

// TestHostileRevokedCityIsCutOnItsLiveQUICConnection: a city certificate
// (a second one for the registered city, as a thief would hold) looks a
// subject up at a district over one QUIC connection, hammering it while
// the certificate is revoked: no request that arrives after the district
// holds the revocation may be answered.
func TestHostileRevokedCityIsCutOnItsLiveQUICConnection(t *testing.T) {
	f := startFed(t, localfed.Spec{Districts: 1}, node.Options{})
	district := f.Districts()[0]
	subject := credit.SyntheticPerson(3434, credit.NewDate(1974, 3, 4))
	submit(t, f, district, record("RQ-1", subject, "FOOD-DRUG-PENALTY", "revoked city"))
	waitIndexed(t, f, subject, 1)
	stolen := issueNode(t, f, certs.City, "zhejiang/quzhou")
	ep := bareEndpoint(t, f, stolen)
	meta := exchange.Meta{Purpose: "ADMIN-LICENSING", User: "赵六", Reference: "R-rev"}
	req := lookupRequest{Subject: subject, Pseudonym: pseudonymOf(t, f, subject), Requester: certs.Identity{Federation: f.Layout.Federation,
		Role: certs.Coordinator, Region: "zhejiang/quzhou", Institution: localfed.CoordinatorInstitution}}
	ask := func() (int, error) {
		var rep lookupReply
		err := ep.Call(ctxT(t, 10*time.Second), peerOf(t, f, district), "lookup", meta, req, &rep)
		return len(rep.Records), err
	}
	if n, err := ask(); err != nil || n != 1 {
		t.Fatalf("before the revocation: %d records, %v", n, err)
	}
	dn := f.Node(district)
	var revokedAt time.Time
	var mu sync.Mutex
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = wait.For(ctxT(t, 20*time.Second), 200*time.Microsecond, func() bool {
			if dn.Replica().State().Revocations().Check(stolen.Leaf, certs.Identity{Federation: f.Layout.Federation, Role: certs.City, Region: "zhejiang/quzhou"}) == nil {
				return false
			}
			mu.Lock()
			revokedAt = time.Now()
			mu.Unlock()
			return true
		})
	}()
	go func() {
		_ = wait.For(ctxT(t, 20*time.Second), 50*time.Millisecond, func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := f.Node(f.Province()).Replica().Apply(ctx, consensus.CmdRevoke, operatorOf(f),
				certs.Revocation{Serial: certs.SerialString(stolen.Leaf.SerialNumber), Reason: "stolen"})
			return err == nil
		})
	}()
	late, calls := 0, 0
	for end := time.Now().Add(15 * time.Second); time.Now().Before(end) && calls < 20000; calls++ {
		sent := time.Now()
		n, err := ask()
		mu.Lock()
		at := revokedAt
		mu.Unlock()
		if err == nil && n > 0 && !at.IsZero() && sent.After(at) {
			late++
		}
		if err != nil && !at.IsZero() {
			break
		}
	}
	<-done
	if revokedAt.IsZero() {
		t.Fatal("the district never held the revocation")
	}
	if n, err := ask(); err == nil {
		t.Fatalf("after the revocation the stolen city certificate still gets %d records", n)
	}
	t.Logf("%d lookups over one connection while the revocation landed; %d answered after the district held it", calls, late)
	if late > 0 {
		t.Fatalf("%d lookups sent after the district held the revocation were answered with records (%d calls)", late, calls)
	}
}

// TestHostileRaftStreamsFromNonVotersAndRemovedRegionsAreRefused: an
// AppendEntries of a far higher term, sent to a district (a follower that
// votes not) and to a city (a voting follower), from a registered
// district's certificate, from an unregistered city's, and — once the
// region is removed from the registry — from a removed city's, is refused:
// no node's term moves. The removed city's own running node loses its
// place: districts refuse its lookups.
func TestHostileRaftStreamsFromNonVotersAndRemovedRegionsAreRefused(t *testing.T) {
	f := startFed(t, localfed.Spec{Districts: 2}, node.Options{})
	kecheng, xihu := f.Districts()[0], f.Districts()[1]
	subject := credit.SyntheticPerson(4545, credit.NewDate(1965, 4, 5))
	submit(t, f, kecheng, record("RR-1", subject, "FOOD-DRUG-PENALTY", "raft"))
	waitIndexed(t, f, subject, 1)
	termOf := func(name string) uint64 {
		var v uint64
		fmt.Sscan(f.Node(name).Replica().Stats()["term"], &v)
		return v
	}
	attack := func(t *testing.T, cert tls.Certificate, target string) error {
		ep := bareEndpoint(t, f, cert)
		self, _ := certs.IdentityOf(cert.Leaf)
		trans := raftTransport(ep)
		defer trans.Close()
		return appendEntries(trans, self.Region, ep.Addr().String(), target, peerOf(t, f, target).Addr, termOf(target)+1000)
	}
	attackers := []struct {
		name string
		cert tls.Certificate
	}{
		{"a registered district", nodeCertificate(t, f, xihu)},
		{"an unregistered city", issueNode(t, f, certs.City, "zhejiang/rogue")},
	}
	for _, a := range attackers {
		for _, target := range []string{kecheng, "quzhou"} {
			before := termOf(target)
			err := attack(t, a.cert, target)
			if err == nil || termOf(target) > before+100 {
				t.Errorf("%s against %s: %v, term %d -> %d", a.name, target, err, before, termOf(target))
			}
		}
	}
	// Remove xihu, then hangzhou (its city) from the registry; hangzhou's
	// node keeps running with its certificate and its pseudonym key.
	applyAsOperator(t, f, consensus.CmdRegionRemove, consensus.RegionRemove{Path: regionOf(f, xihu)})
	applyAsOperator(t, f, consensus.CmdRegionRemove, consensus.RegionRemove{Path: "zhejiang/hangzhou"})
	wait.Until(t, 20*time.Second, "every node to apply the removal", func() bool {
		for _, name := range []string{f.Province(), "quzhou", kecheng} {
			if _, ok := f.Node(name).Replica().State().Region("zhejiang/hangzhou"); ok {
				return false
			}
		}
		return true
	})
	removed := nodeCertificate(t, f, "hangzhou")
	for _, target := range []string{f.Province(), "quzhou", kecheng} {
		before := termOf(target)
		if err := attack(t, removed, target); err == nil || termOf(target) > before+100 {
			t.Errorf("the removed city against %s: %v, term %d -> %d", target, err, before, termOf(target))
		}
	}
	ep := bareEndpoint(t, f, removed)
	var rep lookupReply
	err := ep.Call(ctxT(t, 10*time.Second), peerOf(t, f, kecheng), "lookup", exchange.Meta{Purpose: "ADMIN-LICENSING", User: "u", Reference: "r"},
		lookupRequest{Subject: subject, Pseudonym: pseudonymOf(t, f, subject), Requester: certs.Identity{Federation: f.Layout.Federation,
			Role: certs.Coordinator, Region: "zhejiang/hangzhou", Institution: localfed.CoordinatorInstitution}}, &rep)
	if !errors.Is(err, exchange.ErrForbidden) || len(rep.Records) > 0 {
		t.Errorf("a removed city's lookup at a district: %d records, %v", len(rep.Records), err)
	}
	// The removed city's own coordinator, through its still-running node.
	ans, err := clientOf(t, f, "hangzhou", f.Layout.Coordinators["hangzhou"]).Lookup(ctxT(t, 30*time.Second),
		api.LookupRequest{Subject: subject, Purpose: "ADMIN-LICENSING", User: "u", Reference: "r"})
	if err == nil {
		for _, d := range ans.Districts {
			if len(d.Records) > 0 {
				t.Errorf("the removed city's coordinator got %d records of %s", len(d.Records), d.District)
			}
			t.Logf("the removed city's lookup: %s %s %s", d.District, d.Status, d.Error)
		}
	} else {
		t.Logf("the removed city's lookup: %v", err)
	}
	// The federation goes on.
	other := credit.SyntheticPerson(4546, credit.NewDate(1965, 4, 5))
	submit(t, f, kecheng, record("RR-2", other, "FOOD-DRUG-PENALTY", "raft"))
	waitIndexed(t, f, other, 1)
}

func raftTransport(ep *exchange.Endpoint) *raft.NetworkTransport {
	return raft.NewNetworkTransport(dialLayer{ep}, 1, 5*time.Second, io.Discard)
}

func appendEntries(trans *raft.NetworkTransport, selfID, selfAddr, target, addr string, term uint64) error {
	req := raft.AppendEntriesRequest{
		RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte(selfID), Addr: []byte(selfAddr)},
		Term:      term,
	}
	var resp raft.AppendEntriesResponse
	return trans.AppendEntries(raft.ServerID(target), raft.ServerAddress(addr), &req, &resp)
}

// ---------------------------------------------------------------------------
// Lookups: forged answers, the district's own pseudonym, strong reads.

// TestHostileForgedDistrictAnswersAreDropped: a district node (its
// certificate and its exchange address) answers a coordinator's lookup
// with records that name another district, and with a record of its own
// district about another person: the coordinator shows neither, nor
// registers them as seen.
func TestHostileForgedDistrictAnswersAreDropped(t *testing.T) {
	f := startFed(t, localfed.Spec{Districts: 2}, node.Options{})
	kecheng, xihu := f.Districts()[0], f.Districts()[1]
	subject := credit.SyntheticPerson(5656, credit.NewDate(1968, 6, 5))
	other := credit.SyntheticPerson(5657, credit.NewDate(1968, 6, 5))
	for i, d := range []string{kecheng, xihu} {
		submit(t, f, d, record(fmt.Sprintf("FG-%d", i), subject, "FOOD-DRUG-PENALTY", "genuine"))
	}
	waitIndexed(t, f, subject, 2)
	if err := f.StopNode(ctxT(t, 30*time.Second), xihu); err != nil {
		t.Fatal(err)
	}
	ca, err := certs.LoadCA(f.Dir)
	if err != nil {
		t.Fatal(err)
	}
	ln, _ := f.Layout.Node(xihu)
	var fake *exchange.Endpoint
	wait.Until(t, 10*time.Second, "the fake district to bind xihu's port", func() bool {
		fake, err = exchange.New(exchange.Config{Certificate: nodeCertificate(t, f, xihu),
			Verifier: certs.NewVerifier(ca.Cert, ca.Federation, nil), Addr: ln.Exchange})
		return err == nil
	})
	t.Cleanup(func() { fake.Close() })
	forged := credit.Record{ID: "FORGED-1", Subject: subject, CatalogItem: "FOOD-DRUG-PENALTY", Department: localfed.Department,
		District: regionOf(f, kecheng), Summary: "forged in another district's name", Polarity: credit.Negative, Status: credit.StatusActive,
		OccurredOn: recentDecision - 8, DecidedOn: recentDecision, Version: 1}
	misattributed := forged
	misattributed.ID, misattributed.District, misattributed.Subject, misattributed.Summary = "OTHER-1", regionOf(f, xihu), other, "another person's record"
	var answer atomic.Value
	fake.Handle("lookup", func(ctx context.Context, req *exchange.Request) (any, error) {
		return lookupReply{Records: []credit.Record{answer.Load().(credit.Record)}}, nil
	})
	coord := coordinator(t, f)
	req := api.LookupRequest{Subject: subject, Purpose: "ADMIN-LICENSING", User: "张三", Reference: "R-forged"}
	var broken []string
	for _, c := range []struct {
		name string
		rec  credit.Record
	}{{"a record naming another district", forged}, {"a record of another person", misattributed}} {
		answer.Store(c.rec)
		ans, err := lookupUntil(t, coord, req)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range ans.Districts {
			for _, r := range d.Records {
				if r.ID == c.rec.ID {
					broken = append(broken, fmt.Sprintf("%s: the coordinator shows it under %s (status %s): subject %s, %q",
						c.name, d.District, d.Status, credit.MaskIdentifier(r.Subject), r.Summary))
				}
			}
		}
		for _, e := range auditEntries(t, f, f.Province()) {
			for _, r := range e.Records {
				if strings.HasSuffix(r, "/"+c.rec.ID) {
					broken = append(broken, fmt.Sprintf("%s: the coordinator's audit entry registers it as seen: %s", c.name, r))
				}
			}
		}
	}
	if len(broken) > 0 {
		t.Fatal(strings.Join(broken, "\n"))
	}
}

// TestHostileCityCannotKeepALookupOutOfTheSubjectsAccessLog: a registered
// city sends a district lookups with another subject's pseudonym, a zero
// pseudonym, and a requester of another region: each is refused, and every
// one is in the district's audit log under the pseudonym the district
// holds for the subject — none under the one sent.
func TestHostileCityCannotKeepALookupOutOfTheSubjectsAccessLog(t *testing.T) {
	f := startFed(t, localfed.Spec{Districts: 1}, node.Options{})
	district := f.Districts()[0]
	subject := credit.SyntheticPerson(6767, credit.NewDate(1977, 6, 7))
	other := credit.SyntheticPerson(6768, credit.NewDate(1977, 6, 7))
	submit(t, f, district, record("AL-1", subject, "FOOD-DRUG-PENALTY", "access log"))
	waitIndexed(t, f, subject, 1)
	ep := bareEndpoint(t, f, nodeCertificate(t, f, "quzhou"))
	own, wrong := pseudonymOf(t, f, subject), pseudonymOf(t, f, other)
	requester := certs.Identity{Federation: f.Layout.Federation, Role: certs.Coordinator, Region: "zhejiang/quzhou", Institution: localfed.CoordinatorInstitution}
	elsewhere := requester
	elsewhere.Region = "zhejiang/hangzhou"
	meta := exchange.Meta{Purpose: "ADMIN-LICENSING", User: "孙八", Reference: "R-al"}
	cases := []struct {
		name string
		req  lookupRequest
		ok   bool
	}{
		{"the right pseudonym", lookupRequest{Subject: subject, Pseudonym: own, Requester: requester}, true},
		{"another subject's pseudonym", lookupRequest{Subject: subject, Pseudonym: wrong, Requester: requester}, false},
		{"a zero pseudonym", lookupRequest{Subject: subject, Requester: requester}, false},
		{"a requester of another city", lookupRequest{Subject: subject, Pseudonym: own, Requester: elsewhere}, false},
		{"another subject's pseudonym and purpose missing", lookupRequest{Subject: subject, Pseudonym: wrong, Requester: requester}, false},
	}
	before, _ := f.Node(district).Store().Audit().BySubject(own.String())
	for i, c := range cases {
		m := meta
		if i == len(cases)-1 {
			m.Purpose = ""
		}
		var rep lookupReply
		err := ep.Call(ctxT(t, 10*time.Second), peerOf(t, f, district), "lookup", m, c.req, &rep)
		if (err == nil) != c.ok || (!c.ok && len(rep.Records) > 0) {
			t.Errorf("%s: %d records, %v", c.name, len(rep.Records), err)
		}
	}
	after, _ := f.Node(district).Store().Audit().BySubject(own.String())
	if got := len(after) - len(before); got != len(cases) {
		t.Errorf("%d of %d lookups are in the district's audit log under the subject's own pseudonym", got, len(cases))
	}
	if e, _ := f.Node(district).Store().Audit().BySubject(wrong.String()); len(e) > 0 {
		t.Errorf("%d entries under the pseudonym the caller sent", len(e))
	}
}

// TestHostileStrongReadCompletesAfterAnElectionOnAnIdleFederation: the
// leader stops; nothing is written after; strong lookups through every
// remaining coordinator complete within the lookup deadline and find the
// record, and so do they through the old leader once it is back.
func TestHostileStrongReadCompletesAfterAnElectionOnAnIdleFederation(t *testing.T) {
	f := startFed(t, localfed.Spec{Districts: 1}, node.Options{})
	district := f.Districts()[0]
	subject := credit.SyntheticPerson(7878, credit.NewDate(1981, 7, 8))
	submit(t, f, district, record("SR-1", subject, "FOOD-DRUG-PENALTY", "strong"))
	waitIndexed(t, f, subject, 1)
	old := leaderName(t, f)
	if err := f.StopNode(ctxT(t, 30*time.Second), old); err != nil {
		t.Fatal(err)
	}
	var rest []string
	for _, n := range []string{f.Province(), "quzhou", "hangzhou"} {
		if n != old {
			rest = append(rest, n)
		}
	}
	wait.Until(t, 30*time.Second, "a new leader every coordinator knows", func() bool {
		for _, n := range rest {
			if r, _ := f.Node(n).Replica().Leader(); r == "" || r == regionOf(f, old) {
				return false
			}
		}
		return true
	})
	strong := func(name string) {
		req := api.LookupRequest{Subject: subject, Purpose: "ADMIN-LICENSING", User: "周九", Reference: "R-sr", Consistency: api.ConsistencyStrong}
		start := time.Now()
		ans, err := clientOf(t, f, name, f.Layout.Coordinators[name]).Lookup(ctxT(t, 30*time.Second), req)
		took := time.Since(start)
		if err != nil || len(ans.Districts) != 1 || len(ans.Districts[0].Records) != 1 {
			t.Errorf("strong lookup through %s after the election: %+v, %v (after %v)", name, ans, err, took)
			return
		}
		t.Logf("strong lookup through %s: %v", name, took.Round(time.Millisecond))
	}
	for _, n := range rest {
		strong(n)
	}
	if err := f.StartNode(old); err != nil {
		t.Fatal(err)
	}
	wait.Until(t, 30*time.Second, "the old leader to know the new one", func() bool {
		r, _ := f.Node(old).Replica().Leader()
		return r != ""
	})
	strong(old)
}

// ---------------------------------------------------------------------------
// What a district's own files say about the index.

// sealedBatches reads a stopped node's Raft log and returns the sealed
// index batches in it, in log order.
func sealedBatches(t *testing.T, f *localfed.Federation, name string) []consensus.SealedIndexBatch {
	t.Helper()
	meta := &metadb.BoltMetaDB{}
	wal, err := raftwal.Open(filepath.Join(f.Dir, "nodes", name, "data", "raft", "wal"), raftwal.WithMetaStore(meta))
	if err != nil {
		t.Fatal(err)
	}
	defer meta.Close()
	defer wal.Close()
	first, _ := wal.FirstIndex()
	last, _ := wal.LastIndex()
	var out []consensus.SealedIndexBatch
	for i := first; i <= last && last > 0; i++ {
		var l raft.Log
		if err := wal.GetLog(i, &l); err != nil {
			t.Fatalf("log %d: %v", i, err)
		}
		if l.Type != raft.LogCommand {
			continue
		}
		c, err := consensus.DecodeCommand(l.Data)
		if err != nil {
			t.Fatalf("log %d: %v", i, err)
		}
		if c.Type == consensus.CmdIndexBatch {
			t.Fatalf("log entry %d at %s is an index batch in the clear", i, name)
		}
		if c.Type != consensus.CmdSealedIndexBatch {
			continue
		}
		var s consensus.SealedIndexBatch
		if err := cbor.Unmarshal(c.Body, &s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

// TestHostileDistrictLearnsNothingFromSealedBatchSizes: a district
// operator reads its own Raft log (its data directory, with its own
// encryption key if any). The index batches in it are sealed; but what
// their length says must not tell it what another district just published:
// a plain penalty, a serious one on the serious-dishonesty list, and a
// red-list record published alone must seal to the same length.
func TestHostileDistrictLearnsNothingFromSealedBatchSizes(t *testing.T) {
	f := startFed(t, localfed.Spec{Districts: 2}, node.Options{})
	kecheng, xihu := f.Districts()[0], f.Districts()[1]
	kinds := []struct{ name, item string }{
		{"a plain penalty", "FOOD-DRUG-PENALTY"},
		{"a serious penalty on the dishonesty list", "FOOD-SAFETY-SERIOUS"},
		{"a red-list record", "OUTSTANDING-YOUTH-VOLUNTEER"},
	}
	for i, k := range kinds {
		s := credit.SyntheticPerson(8900+i, credit.NewDate(1976, 8, 9))
		submit(t, f, xihu, record(fmt.Sprintf("SZ-%d", i), s, k.item, "size"))
		waitIndexed(t, f, s, 1)
	}
	if m, err := httpGet("http://" + f.Node(kecheng).MetricsAddr() + "/metrics"); err == nil {
		for _, line := range strings.Split(m, "\n") {
			if strings.Contains(line, "sealed_index_batch") && !strings.HasPrefix(line, "#") {
				t.Logf("the district's metrics: %s", line)
			}
		}
	}
	if err := f.StopNode(ctxT(t, 30*time.Second), kecheng); err != nil {
		t.Fatal(err)
	}
	batches := sealedBatches(t, f, kecheng)
	if len(batches) < len(kinds) {
		t.Fatalf("%d sealed batches in the district's log, want %d", len(batches), len(kinds))
	}
	sizes := map[int][]string{}
	for i, k := range kinds {
		b := batches[len(batches)-len(kinds)+i]
		sizes[len(b.Sealed)] = append(sizes[len(b.Sealed)], k.name)
		t.Logf("%s at xihu: a sealed batch of %d bytes in kecheng's log", k.name, len(b.Sealed))
	}
	if len(sizes) > 1 {
		t.Fatalf("the lengths of the sealed batches in a district's log tell apart what another district published: %v", sizes)
	}
}

// TestHostileDistrictSnapshotHoldsNoIndex: a district that fell behind
// the leader's compacted log catches up by InstallSnapshot: raft writes
// the coordinator's snapshot stream, byte for byte, into the district's
// snapshot store and restores from it. The district "keeps nothing of the
// index, not even ciphertext": its snapshot files must hold no index
// section. (raft-wal drops log entries by 64 MiB segments, too many for a
// test to fill, so the test hands the district the leader's own snapshot
// the way the leader does — InstallSnapshot at the current term, from a
// voter's certificate — once the federation is idle at the snapshot's
// index. The nodes check for a snapshot every 5 to 10 s
// (raft.snapshot_interval) instead of Raft's default 2 to 4 minutes.)
func TestHostileDistrictSnapshotHoldsNoIndex(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for Raft's snapshot interval")
	}
	f := startFedConfigured(t, localfed.Spec{Districts: 1}, node.Options{}, func(name string, c *node.Config) {
		c.Raft.SnapshotThreshold, c.Raft.TrailingLogs = 8, 2
		c.Raft.SnapshotInterval = node.Duration(5 * time.Second)
	})
	kecheng := f.Districts()[0]
	for i := 0; i < 12; i++ {
		s := credit.SyntheticPerson(9900+i, credit.NewDate(1978, 9, 9))
		submit(t, f, kecheng, record(fmt.Sprintf("SN-%d", i), s, "FOOD-DRUG-PENALTY", "snapshot"))
		waitIndexed(t, f, s, 1)
	}
	leader := leaderName(t, f)
	wait.Until(t, 300*time.Second, "the leader to take a snapshot of the idle federation", func() bool {
		st := f.Node(leader).Replica().Stats()
		return st["last_snapshot_index"] != "0" && st["last_snapshot_index"] == st["last_log_index"]
	})
	snaps, err := raft.NewFileSnapshotStoreWithLogger(filepath.Join(f.Dir, "nodes", leader, "data", "raft"), 2, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	list, err := snaps.List()
	if err != nil || len(list) == 0 {
		t.Fatalf("the leader's snapshots: %v %v", list, err)
	}
	meta, rc, err := snaps.Open(list[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	stream, _ := io.ReadAll(rc)
	rc.Close()
	section, sealed, err := indexSectionOf(stream)
	t.Logf("the leader's snapshot %s at index %d: %d bytes, index section %d (%d bytes sealed) %v", meta.ID, meta.Index, len(stream), section, sealed, err)

	var term uint64
	fmt.Sscan(f.Node(kecheng).Replica().Stats()["term"], &term)
	voter := bareEndpoint(t, f, nodeCertificate(t, f, "quzhou"))
	trans := raftTransport(voter)
	defer trans.Close()
	req := raft.InstallSnapshotRequest{
		RPCHeader:       raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("zhejiang/quzhou"), Addr: []byte(peerOf(t, f, "quzhou").Addr)},
		SnapshotVersion: meta.Version, Term: term, LastLogIndex: meta.Index, LastLogTerm: meta.Term,
		Configuration: raft.EncodeConfiguration(meta.Configuration), ConfigurationIndex: meta.ConfigurationIndex, Size: int64(len(stream)),
	}
	var resp raft.InstallSnapshotResponse
	if err := trans.InstallSnapshot(raft.ServerID(regionOf(f, kecheng)), raft.ServerAddress(peerOf(t, f, kecheng).Addr), &req, &resp, bytes.NewReader(stream)); err != nil || !resp.Success {
		t.Fatalf("InstallSnapshot at the district: %v, %+v", err, resp)
	}
	if n, _ := f.Node(kecheng).Replica().State().EntryCount(); n != 0 {
		t.Fatalf("the district's state holds %d index entries after the install", n)
	}
	if err := f.StopNode(ctxT(t, 30*time.Second), kecheng); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(f.Dir, "nodes", kecheng, "data", "raft", "snapshots", "*", "state.bin"))
	if len(files) == 0 {
		t.Fatal("no snapshot file at the district")
	}
	var broken []string
	for _, path := range files {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		section, sealedBytes, err := indexSectionOf(b)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		t.Logf("district snapshot %s: %d bytes, index section %d (%d bytes sealed)", filepath.Base(filepath.Dir(path)), len(b), section, sealedBytes)
		if section != 0 {
			broken = append(broken, fmt.Sprintf("snapshot %s holds a sealed index section of %d bytes", filepath.Base(filepath.Dir(path)), sealedBytes))
		}
	}
	if len(broken) > 0 {
		t.Fatalf("the district keeps the coordinators' sealed index on disk: %s", strings.Join(broken, "; "))
	}
}

// indexSectionOf parses a plain snapshot stream (consensus/snapshot.go,
// format 2): it returns the index section's kind and the bytes of its
// sealed chunks.
func indexSectionOf(b []byte) (byte, int, error) {
	const magic = "credfed-state/2\n"
	if !bytes.HasPrefix(b, []byte(magic)) {
		return 0, 0, fmt.Errorf("not a plain snapshot stream (%q)", b[:min(len(b), 20)])
	}
	r := bytes.NewReader(b[len(magic):])
	for {
		k, err := binary.ReadUvarint(r)
		if err != nil {
			return 0, 0, err
		}
		if k == 0 {
			break
		}
		r.Seek(int64(k), io.SeekCurrent)
		v, err := binary.ReadUvarint(r)
		if err != nil {
			return 0, 0, err
		}
		r.Seek(int64(v), io.SeekCurrent)
	}
	if _, err := binary.ReadUvarint(r); err != nil { // pair count
		return 0, 0, err
	}
	section, err := r.ReadByte()
	if err != nil || section == 0 {
		return section, 0, err
	}
	binary.ReadUvarint(r) // key version
	r.Seek(16, io.SeekCurrent)
	sealed := 0
	for {
		n, err := binary.ReadUvarint(r)
		if err != nil {
			return section, sealed, err
		}
		if n == 0 {
			return section, sealed, nil
		}
		sealed += int(n)
		r.Seek(int64(n), io.SeekCurrent)
	}
}

// ---------------------------------------------------------------------------
// Logs, metrics and error messages.

// lockedBuffer is a log sink shared by every node of a federation.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestHostileNoIdentifierOrContentInLogsMetricsOrErrors: every node logs
// at debug level into one buffer while a run does what an attacker and
// careless users do — records with valid, invalid and real identifiers,
// text with control characters, refused and allowed lookups, pseudonym
// requests with an invalid identifier and from an unregistered district,
// a forged lookup at a district, a correction, a district restart. No log
// line, no metric of any node, and no error message returned may hold an
// identifier (valid, one digit off, or real) or record text.
func TestHostileNoIdentifierOrContentInLogsMetricsOrErrors(t *testing.T) {
	logs := &lockedBuffer{}
	f := startFed(t, localfed.Spec{Districts: 1}, node.Options{Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	district := f.Districts()[0]
	dept := department(t, f, district)
	subject := credit.SyntheticPerson(24680, credit.NewDate(1969, 6, 9))
	nearMiss := subject[:17] + map[bool]string{true: "1", false: "0"}[subject[17] == '0']
	realID := "11010519491231002X"
	org := credit.SyntheticOrganization(13579)
	secret, secret2 := "在超市出售过期奶粉的详细经过", "更正后的处罚事由全文"
	needles := map[string]string{"the subject": subject, "the subject one digit off": nearMiss, "a real identifier": realID,
		"an organization": org, "the record text": secret, "the corrected text": secret2, "the subject's birth digits": subject[6:14] + subject[14:17]}
	var messages []string
	note := func(err error) {
		if se, ok := err.(*api.StatusError); ok {
			messages = append(messages, se.Err.Message)
		} else if err != nil {
			messages = append(messages, err.Error())
		}
	}
	submit(t, f, district, record("LG-1", subject, "FOOD-DRUG-PENALTY", secret))
	waitIndexed(t, f, subject, 1)
	for i, in := range []api.RecordInput{
		record("LG-2", nearMiss, "FOOD-DRUG-PENALTY", secret),
		record("LG-3", realID, "FOOD-DRUG-PENALTY", secret),
		record("LG-4", org, "FOOD-DRUG-PENALTY", secret),
		record("LG-5", subject, "FOOD-DRUG-PENALTY", secret+"\x00\u202e"),
		{ID: "LG-7", Subject: subject, CatalogItem: "FOOD-DRUG-PENALTY", Summary: secret, OccurredOn: "2026-02-30", DecidedOn: "x"},
	} {
		ans, _, err := dept.SubmitRecords(ctxT(t, 30*time.Second), []api.RecordInput{in})
		note(err)
		if ans != nil {
			for _, r := range ans.Results {
				if r.Error != nil {
					messages = append(messages, r.Error.Message)
				}
			}
		}
		_ = i
	}
	summary := secret2
	_, err := dept.Correct(ctxT(t, 30*time.Second), "LG-1", api.Correction{Summary: &summary, Reason: "事由更正 " + subject})
	note(err)
	coord := coordinator(t, f)
	for _, req := range []api.LookupRequest{
		{Subject: subject, Purpose: "ADMIN-LICENSING", User: "吴十", Reference: "R-lg"},
		{Subject: subject, Purpose: "ADMIN-LICENSING", User: "吴十", Reference: "R-lg", Consistency: api.ConsistencyStrong},
		{Subject: nearMiss, Purpose: "ADMIN-LICENSING", User: "吴十", Reference: "R-lg"},
		{Subject: realID, Purpose: "ADMIN-LICENSING", User: "吴十", Reference: "R-lg"},
		{Subject: subject, Purpose: "curiosity", User: "吴十", Reference: "R-lg"},
		{Subject: subject, Purpose: "ADMIN-LICENSING", User: subject, Reference: subject + "\u202e"},
	} {
		_, err := coord.Lookup(ctxT(t, 30*time.Second), req)
		note(err)
		_, err = clientOf(t, f, f.Province(), f.Layout.Portals[district]).Lookup(ctxT(t, 30*time.Second), req)
		note(err)
	}
	ep := bareEndpoint(t, f, nodeCertificate(t, f, district))
	_, err = askPseudonyms(t, ep, peerOf(t, f, "quzhou"), []string{org, subject, realID, nearMiss})
	note(err)
	rogue := bareEndpoint(t, f, issueNode(t, f, certs.District, "zhejiang/quzhou/rogue"))
	_, err = askPseudonyms(t, rogue, peerOf(t, f, "quzhou"), []string{subject})
	note(err)
	city := bareEndpoint(t, f, nodeCertificate(t, f, "quzhou"))
	var rep lookupReply
	err = city.Call(ctxT(t, 10*time.Second), peerOf(t, f, district), "lookup", exchange.Meta{Purpose: "ADMIN-LICENSING", User: subject, Reference: "r"},
		lookupRequest{Subject: subject, Pseudonym: pseudonymOf(t, f, nearMiss), Requester: certs.Identity{Federation: f.Layout.Federation,
			Role: certs.Coordinator, Region: "zhejiang/quzhou", Institution: localfed.CoordinatorInstitution}}, &rep)
	note(err)
	if err := f.StopNode(ctxT(t, 30*time.Second), district); err != nil {
		t.Fatal(err)
	}
	if err := f.StartNode(district); err != nil {
		t.Fatal(err)
	}
	if err := f.WaitReady(ctxT(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	metrics := allMetrics(t, f)
	all := logs.String()
	p := pseudonymOf(t, f, subject).String()
	t.Logf("%d bytes of debug log, %d of metrics, %d error messages; the subject's pseudonym appears %d times in the log",
		len(all), len(metrics), len(messages), strings.Count(all, p))
	broken := leaks(all, metrics, messages, needles)
	if len(broken) > 0 {
		t.Fatal(strings.Join(broken, "\n"))
	}
}

func httpGet(url string) (string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// TestHostileErrorMessagesDoNotEchoIdentifiers: a department puts an
// identifier where the API does not expect one — as the code of a catalog
// item, as the name of a JSON field. The refusal must say what is wrong
// without repeating it: error messages hold no identifier.
func TestHostileErrorMessagesDoNotEchoIdentifiers(t *testing.T) {
	f := startFed(t, localfed.Spec{Districts: 1}, node.Options{})
	district := f.Districts()[0]
	dept := department(t, f, district)
	subject := credit.SyntheticPerson(97531, credit.NewDate(1962, 2, 6))
	var messages []string
	ans, _, err := dept.SubmitRecords(ctxT(t, 30*time.Second), []api.RecordInput{record("EC-1", subject, "NO-SUCH-"+subject, "s"),
		{ID: "EC-2", Subject: "x", CatalogItem: "FOOD-DRUG-PENALTY", Department: subject, OccurredOn: recentDecision.String(), DecidedOn: recentDecision.String()}})
	if ans != nil {
		for _, r := range ans.Results {
			if r.Error != nil {
				messages = append(messages, r.Error.Message+" (field "+r.Error.Field+")")
			}
		}
	}
	var body json.RawMessage
	_, err = dept.Do(ctxT(t, 30*time.Second), "POST", "/v1/records", "application/json", []byte(`{"id":"EC-3","`+subject+`":1}`), &body)
	if se, ok := err.(*api.StatusError); ok {
		messages = append(messages, se.Err.Message+" (field "+se.Err.Field+")")
	}
	messages = append(messages, string(body))
	var broken []string
	for _, m := range messages {
		if strings.Contains(m, subject) {
			broken = append(broken, strings.ReplaceAll(m, subject, "<the identifier>"))
		}
	}
	if len(broken) > 0 {
		t.Fatalf("error messages repeat an identifier the caller put in another field:\n%s", strings.Join(broken, "\n"))
	}
}

// TestHostilePortalCannotReadRecordsByIDThroughPathTricks: the records
// route is the collecting department's alone; a portal certificate tries
// the record's path in other spellings and methods.
func TestHostilePortalCannotReadRecordsByIDThroughPathTricks(t *testing.T) {
	f := startFed(t, localfed.Spec{Districts: 1}, node.Options{})
	district := f.Districts()[0]
	subject := credit.SyntheticPerson(1357, credit.NewDate(1987, 7, 1))
	secret := "门户不应读到的处罚内容"
	submit(t, f, district, record("PT-1", subject, "FOOD-DRUG-PENALTY", secret))
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConfig(t, f, f.Layout.Portals[district])}, Timeout: 10 * time.Second}
	base := "https://" + f.Node(district).APIAddr()
	for _, c := range []struct{ method, path string }{
		{"GET", "/v1/records/PT-1"}, {"GET", "/v1/records/PT-1/"}, {"GET", "//v1/records/PT-1"}, {"GET", "/v1/records/./PT-1"},
		{"GET", "/v1/records/%50T-1"}, {"GET", "/v1/records/PT-1?authentication=x"}, {"GET", "/V1/records/PT-1"},
		{"HEAD", "/v1/records/PT-1"}, {"POST", "/v1/records/PT-1/corrections"}, {"GET", "/v1/records/PT-1/corrections"},
		{"OPTIONS", "/v1/records/PT-1"}, {"GET", "/v1/records?id=PT-1"},
	} {
		req, _ := http.NewRequest(c.method, base+c.path, strings.NewReader(`{"summary":"x","reason":"y"}`))
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", c.method, c.path, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode < 300 || strings.Contains(string(b), secret) || strings.Contains(string(b), subject) {
			t.Errorf("a portal's %s %s: %d %.200s", c.method, c.path, resp.StatusCode, b)
		}
	}
}

// ---------------------------------------------------------------------------
// Crashes: nodes as processes, killed with SIGKILL.

// procFed is a local federation whose nodes are `credfed node` processes.
type procFed struct {
	t      *testing.T
	bin    string
	layout localfed.Layout
	procs  map[string]*exec.Cmd
	// exited is closed when a process's Wait has returned (the only
	// goroutine that touches its ProcessState).
	exited map[string]chan struct{}
}

func startProcFed(t *testing.T, districts int) *procFed {
	t.Helper()
	return startProcFedWith(t, districts, nil)
}

// startProcFedWith is startProcFed with patch called on the layout before
// any node starts (to change a node's configuration file).
func startProcFedWith(t *testing.T, districts int, patch func(localfed.Layout)) *procFed {
	t.Helper()
	return startProcFedSpec(t, localfed.Spec{Districts: districts}, patch)
}

// startProcFedSpec is startProcFedWith for a whole spec (its Dir is set
// here).
func startProcFedSpec(t *testing.T, spec localfed.Spec, patch func(localfed.Layout)) *procFed {
	t.Helper()
	if raceDetector {
		t.Skip("the nodes run as separate processes built without the race detector: under -race this test would watch only its own client code (go test ./... runs it)")
	}
	bin := filepath.Join(t.TempDir(), "credfed")
	if out, err := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", bin, "credfed/cmd/credfed").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	spec.Dir = filepath.Join(t.TempDir(), "fed")
	l, err := localfed.Create(spec)
	if err != nil {
		t.Fatal(err)
	}
	if patch != nil {
		patch(l)
	}
	pf := &procFed{t: t, bin: bin, layout: l, procs: map[string]*exec.Cmd{}, exited: map[string]chan struct{}{}}
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, ln := range l.Nodes {
			if data, err := os.ReadFile(filepath.Join(filepath.Dir(ln.ConfigPath), "node.log")); err == nil {
				t.Logf("%s's log (its end):\n%s", ln.Name, data[max(0, len(data)-1500):])
			}
		}
	})
	t.Cleanup(func() {
		for name, c := range pf.procs {
			c.Process.Kill()
			<-pf.exited[name]
		}
	})
	for _, ln := range l.Nodes {
		pf.start(ln.Name)
	}
	for _, ln := range l.Nodes {
		pf.waitReady(ln.Name)
	}
	return pf
}

func (pf *procFed) start(name string) { pf.startArgs(name) }

// startArgs starts a node of the layout with extra arguments of credfed
// node.
func (pf *procFed) startArgs(name string, extra ...string) {
	t := pf.t
	ln, _ := pf.layout.Node(name)
	logf, err := os.OpenFile(filepath.Join(filepath.Dir(ln.ConfigPath), "node.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(pf.bin, append([]string{"node", "--config", ln.ConfigPath, "--log-level", "warn"}, extra...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(done) }()
	pf.procs[name], pf.exited[name] = cmd, done
}

func (pf *procFed) kill(name string) {
	pf.procs[name].Process.Signal(syscall.SIGKILL)
	select {
	case <-pf.exited[name]:
	case <-time.After(10 * time.Second):
		pf.t.Fatalf("%s did not exit within 10 s of SIGKILL", name)
	}
}

func (pf *procFed) client(name string, files localfed.ClientFiles) *api.Client {
	ln, _ := pf.layout.Node(name)
	c, err := api.NewClient(api.Config{Address: "https://" + ln.API, CACert: pf.layout.CA, ClientCert: files.Cert, ClientKey: files.Key, Timeout: 30 * time.Second})
	if err != nil {
		pf.t.Fatal(err)
	}
	pf.t.Cleanup(c.CloseIdle)
	return c
}

func (pf *procFed) waitReady(name string) {
	c := pf.client(name, pf.layout.Operator)
	wait.Until(pf.t, 60*time.Second, name+" to be ready", func() bool {
		v, err := c.Federation(ctxT(pf.t, 5*time.Second))
		return err == nil && v.Node.Ready
	})
}

// outbox is a district's outbox length and its publisher's last error.
func (pf *procFed) outbox(district string) (int, string) {
	v, err := pf.client(district, pf.layout.Departments[district]).Federation(ctxT(pf.t, 5*time.Second))
	if err != nil {
		return -1, err.Error()
	}
	last := ""
	for _, j := range v.Jobs {
		if j.Name == "publish" {
			last = j.LastError
		}
	}
	return v.Index.OutboxLength, last
}

// TestHostileLeaderKilledMidIngestFailsOverQuickly: the Raft leader is
// killed (SIGKILL, no announced stop) while a district takes a backlog of
// records; then the district itself is killed right after acknowledging
// more. Every acknowledged record reaches the index, and the district's
// outbox drains within seconds of the election, not after a 30 s wait on
// the dead node.
func TestHostileLeaderKilledMidIngestFailsOverQuickly(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs four processes")
	}
	pf := startProcFed(t, 1)
	district := pf.layout.Districts()[0]
	dept := pf.client(district, pf.layout.Departments[district])
	birth := credit.NewDate(1973, 3, 7)
	send := func(from, n int) {
		for i := from; i < from+n; i += 100 {
			var recs []api.RecordInput
			for j := i; j < min(i+100, from+n); j++ {
				recs = append(recs, record(fmt.Sprintf("KL-%05d", j), credit.SyntheticPerson(60000+j, birth), "FOOD-DRUG-PENALTY", "kill"))
			}
			ans, _, err := dept.SubmitRecords(ctxT(t, 30*time.Second), recs)
			if err != nil {
				t.Fatalf("submit: %v", err)
			}
			for _, r := range ans.Results {
				if r.Status != api.StatusAccepted {
					t.Fatalf("submit: %+v", r)
				}
			}
		}
	}
	send(0, 100)
	wait.Until(t, 60*time.Second, "the first records to be published", func() bool { n, _ := pf.outbox(district); return n == 0 })
	v, err := pf.client("quzhou", pf.layout.Operator).Federation(ctxT(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	leader := ""
	for _, ln := range pf.layout.Nodes {
		if ln.Region == v.Raft.Leader {
			leader = ln.Name
		}
	}
	if leader == "" || leader == district {
		t.Fatalf("leader %q", v.Raft.Leader)
	}
	survivor := "quzhou"
	if leader == "quzhou" {
		survivor = pf.layout.Nodes[0].Name
	}
	killed := time.Now()
	pf.kill(leader)
	send(100, 2000)
	acked := time.Since(killed)
	var last string
	wait.Until(t, 120*time.Second, "the backlog to drain after the leader's death", func() bool {
		var n int
		n, last = pf.outbox(district)
		return n == 0
	})
	drained := time.Since(killed)
	t.Logf("leader %s killed; 2,000 records acknowledged in %v; outbox drained %v after the kill (publisher's last error: %q)",
		leader, acked.Round(time.Millisecond), drained.Round(time.Millisecond), last)
	// Every acknowledged record is in the index: strong lookups through a
	// surviving coordinator, of a sample.
	coord := pf.client(survivor, pf.layout.Coordinators[survivor])
	for _, j := range []int{0, 99, 100, 1100, 2099} {
		ans, err := coord.Lookup(ctxT(t, 30*time.Second), api.LookupRequest{Subject: credit.SyntheticPerson(60000+j, birth),
			Purpose: "ADMIN-LICENSING", User: "u", Reference: "r", Consistency: api.ConsistencyStrong})
		if err != nil || len(ans.Districts) != 1 || len(ans.Districts[0].Records) != 1 {
			t.Errorf("record %d after the leader's death: %+v %v", j, ans, err)
		}
	}
	// The district dies right after acknowledging a last batch.
	send(2100, 300)
	pf.kill(district)
	pf.start(district)
	pf.waitReady(district)
	wait.Until(t, 60*time.Second, "the crashed district's outbox to drain", func() bool { n, _ := pf.outbox(district); return n == 0 })
	ans, err := coord.Lookup(ctxT(t, 30*time.Second), api.LookupRequest{Subject: credit.SyntheticPerson(60000+2399, birth),
		Purpose: "ADMIN-LICENSING", User: "u", Reference: "r", Consistency: api.ConsistencyStrong})
	if err != nil || len(ans.Districts) != 1 || len(ans.Districts[0].Records) != 1 {
		t.Errorf("the last record acknowledged before the district's crash: %+v %v", ans, err)
	}
	if drained > 15*time.Second {
		t.Fatalf("the district's outbox took %v to drain after the leader was killed", drained.Round(time.Millisecond))
	}
}

// TestHostileCityCannotFrameADistrictInCustody: a district answering a
// lookup pseudonymizes the subject for its audit entry. A registered city
// node asks a district directly (not through the index) about subjects it
// holds nothing of: the district's custody account must not be charged
// with pseudonyms it never asked for on its own, nor the district be
// flagged for them.
func TestHostileCityCannotFrameADistrictInCustody(t *testing.T) {
	f := startFedConfigured(t, localfed.Spec{Districts: 1}, node.Options{}, custodyConfig)
	district := f.Districts()[0]
	city := bareEndpoint(t, f, nodeCertificate(t, f, "quzhou"))
	requester := certs.Identity{Federation: f.Layout.Federation, Role: certs.Coordinator, Region: "zhejiang/quzhou", Institution: localfed.CoordinatorInstitution}
	meta := exchange.Meta{Purpose: "ADMIN-LICENSING", User: "u", Reference: "r"}
	ids := syntheticIDs(700000, 60)
	for _, id := range ids {
		var rep lookupReply
		if err := city.Call(ctxT(t, 10*time.Second), peerOf(t, f, district), "lookup", meta,
			lookupRequest{Subject: id, Pseudonym: pseudonymOf(t, f, id), Requester: requester}, &rep); err != nil {
			t.Fatal(err)
		}
	}
	charged := uint64(0)
	for _, name := range []string{"quzhou", f.Province(), "hangzhou"} {
		charged += custodyOf(t, f, name)[regionOf(f, district)].Issued
	}
	t.Logf("the district was charged with %d pseudonyms for %d lookups it was sent", charged, len(ids))
	if charged == 0 {
		return
	}
	var acct api.CustodyAccount
	wait.Until(t, 60*time.Second, "the city's custody check", func() bool {
		for _, name := range []string{"quzhou", f.Province(), "hangzhou"} {
			if a, ok := custodyOf(t, f, name)[regionOf(f, district)]; ok && a.Checked >= 20 {
				acct = a
				return true
			}
		}
		return false
	})
	t.Logf("the district's account: %+v", acct)
	if acct.Flagged {
		t.Fatalf("a city's %d direct lookups of subjects the district never held got the district flagged: %+v", len(ids), acct)
	}
}

// TestHostileUnregisteredCityCannotCaptureANewNode: a new district node
// has started (its operator installed it; the region is not registered
// yet, or the federation's leader has not reached it). Until it holds a
// registry it takes raft streams from any province or city certificate
// of the CA. A thief's city certificate for an unregistered region sends
// it a forged first entry — a federation_init whose registry makes the
// thief a voter and a coordinator — and the node must not take it: once
// it has, it refuses the real federation's leader for good, asks the
// thief for its subjects' pseudonyms (sending it every identifier it
// collects) and answers the thief's lookups with full records.
func TestHostileUnregisteredCityCannotCaptureANewNode(t *testing.T) {
	f := startFed(t, localfed.Spec{Districts: 1}, node.Options{})
	ca, err := certs.LoadCA(f.Dir)
	if err != nil {
		t.Fatal(err)
	}
	// The new district node, started on its own.
	region := "zhejiang/quzhou/qujiang"
	dir := t.TempDir()
	is, err := ca.Issue(certs.IssueRequest{Identity: certs.Identity{Federation: ca.Federation, Role: certs.District, Region: region},
		Hosts: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	cp, kp, err := is.WriteFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	quzhou, _ := f.Layout.Node("quzhou")
	cfg := node.Config{Federation: ca.Federation, Role: certs.District, Region: region, DataDir: filepath.Join(dir, "data"), TestOnly: true,
		Listen: node.ListenConfig{Exchange: "127.0.0.1:0", API: "127.0.0.1:0", Metrics: "127.0.0.1:0"},
		TLS:    node.TLSConfig{CA: f.Layout.CA, Cert: cp, Key: kp}, Coordinators: []string{quzhou.Exchange}}
	newNode, err := node.Start(cfg, node.Options{Logger: testLogger(), RaftTiming: fastRaft})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { newNode.Shutdown(context.Background()) })

	// The thief: a city certificate of the CA for a region nobody registered.
	thief := bareEndpoint(t, f, issueNode(t, f, certs.City, "zhejiang/rogue"))
	var stolen sync.Map
	thief.Handle(pseudonym.Op, func(ctx context.Context, req *exchange.Request) (any, error) {
		var in pseudonymRequest
		if err := req.Decode(&in); err != nil {
			return nil, err
		}
		out := pseudonymReply{Pseudonyms: make([]credit.Pseudonym, len(in.IDs))}
		for i, id := range in.IDs {
			stolen.Store(id, true)
			out.Pseudonyms[i][0] = byte(i + 1)
		}
		return out, nil
	})
	cat := credit.DefaultCatalog()
	init := consensus.FederationInit{Catalog: cat, Regions: []consensus.Region{
		{Path: "zhejiang", Role: certs.Province, Voter: true},
		{Path: "zhejiang/quzhou", Role: certs.City},
		{Path: "zhejiang/rogue", Role: certs.City, Voter: true, Exchange: thief.Addr().String()},
		{Path: region, Role: certs.District, Exchange: newNode.ExchangeAddr()},
	}}
	data, err := consensus.EncodeCommand(consensus.CmdFederationInit, consensus.Envelope{
		Proposer: certs.Identity{Federation: ca.Federation, Role: certs.Province, Region: "zhejiang"}, At: time.Now().UTC()}, init)
	if err != nil {
		t.Fatal(err)
	}
	trans := raftTransport(thief)
	defer trans.Close()
	req := raft.AppendEntriesRequest{
		RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("zhejiang/rogue"), Addr: []byte(thief.Addr().String())},
		Term:      1, Entries: []*raft.Log{{Index: 1, Term: 1, Type: raft.LogCommand, Data: data, AppendedAt: time.Now()}},
		LeaderCommitIndex: 1,
	}
	var resp raft.AppendEntriesResponse
	err = trans.AppendEntries(raft.ServerID(region), raft.ServerAddress(newNode.ExchangeAddr()), &req, &resp)
	t.Logf("the forged first entry: %v, success %v", err, resp.Success)
	captured := wait.For(ctxT(t, 5*time.Second), 50*time.Millisecond, func() bool {
		_, ok := newNode.Replica().State().Region("zhejiang/rogue")
		return ok
	}) == nil
	if !captured {
		return // the defence held
	}
	// What the thief gets: the identifiers the district collects...
	dep := issueUser(t, f, "department", region, localfed.Department)
	subject := credit.SyntheticPerson(11111, credit.NewDate(1980, 1, 1))
	c, err := api.NewClient(api.Config{Address: "https://" + newNode.APIAddr(), CACert: f.Layout.CA, ClientCert: dep.Cert, ClientKey: dep.Key, Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseIdle()
	_, _, subErr := c.SubmitRecords(ctxT(t, 30*time.Second), []api.RecordInput{record("CAP-1", subject, "FOOD-DRUG-PENALTY", "被劫持的区县记录")})
	gotID := wait.For(ctxT(t, 10*time.Second), 100*time.Millisecond, func() bool {
		_, ok := stolen.Load(subject)
		return ok
	}) == nil
	// ...and its records, by lookup.
	var rep lookupReply
	lerr := thief.Call(ctxT(t, 10*time.Second), exchange.Peer{Name: "new", Addr: newNode.ExchangeAddr()}, "lookup",
		exchange.Meta{Purpose: "ADMIN-LICENSING", User: "u", Reference: "r"},
		lookupRequest{Subject: subject, Pseudonym: credit.Pseudonym{1}, Requester: certs.Identity{Federation: ca.Federation, Role: certs.Coordinator,
			Region: "zhejiang/rogue", Institution: "x"}}, &rep)
	t.Fatalf("an unregistered city's certificate captured a new district node with one forged raft entry: its registry is the thief's "+
		"(%d regions, the thief a voter); a department's record there (submit: %v) sent the thief the subject's identifier: %v; "+
		"the thief's lookup: %d records (%v)", len(newNode.Replica().State().Regions()), subErr, gotID, len(rep.Records), lerr)
}

// gaugeOf reads a gauge of a node's registry (0 if it has none).
func gaugeOf(t *testing.T, n *node.Node, name string) float64 {
	t.Helper()
	mfs, err := n.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			sum := 0.0
			for _, m := range mf.GetMetric() {
				sum += m.GetGauge().GetValue()
			}
			return sum
		}
	}
	return 0
}
