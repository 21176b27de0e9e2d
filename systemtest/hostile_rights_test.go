package systemtest

// Hostile tests of the subject's-rights features of issue 10 (the own
// report, the access log, objections and repairs, the public disclosure
// list, audit anchoring), run on real local federations (127.0.0.1). Each
// test is named after an attack and passes when the defence holds. The
// attackers: a portal certificate, departments that do not own a case, a
// district operator holding its node certificate and data directory and
// speaking the exchange directly, a coordinator doing the same, anyone
// holding a signed report, anonymous clients of the public list, a crash at
// a bad moment, and hostile input.

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/fxamacker/cbor/v2"
	"github.com/gowebpki/jcs"

	"credfed/api"
	"credfed/attest"
	"credfed/certs"
	"credfed/credit"
	"credfed/exchange"
	"credfed/internal/wait"
	"credfed/localfed"
	"credfed/node"
	"credfed/rights"
	"credfed/storage"
)

// ---------------------------------------------------------------------------
// Helpers.

// The CBOR shapes of the unexported wire bodies of package rights and of
// consensus.anchor, as docs/exchange.md and the source give them: what a
// hostile node that read the source would send.
type hrForward struct {
	Kind           string         `cbor:"1,keyasint"`
	Subject        string         `cbor:"2,keyasint"`
	Authentication string         `cbor:"3,keyasint"`
	Requester      certs.Identity `cbor:"4,keyasint"`
}

type hrRecordsRequest struct {
	Subject    string           `cbor:"1,keyasint"`
	Pseudonym  credit.Pseudonym `cbor:"2,keyasint"`
	Requester  certs.Identity   `cbor:"3,keyasint"`
	AccessOnly bool             `cbor:"4,keyasint,omitempty"`
}

type hrRecordsReply struct {
	Records []credit.Record `cbor:"1,keyasint"`
	Access  []rights.Access `cbor:"2,keyasint"`
}

type hrCaseForward struct {
	Action    string         `cbor:"1,keyasint"`
	Filing    rights.Filing  `cbor:"2,keyasint"`
	ID        string         `cbor:"3,keyasint,omitempty"`
	Requester certs.Identity `cbor:"4,keyasint"`
}

type hrCaseRequest struct {
	Action    string           `cbor:"1,keyasint"`
	Filing    rights.Filing    `cbor:"2,keyasint"`
	ID        string           `cbor:"3,keyasint,omitempty"`
	Requester certs.Identity   `cbor:"4,keyasint"`
	Pseudonym credit.Pseudonym `cbor:"5,keyasint,omitempty"`
}

type hrAnchorRequest struct {
	Seq  uint64   `cbor:"1,keyasint"`
	Hash [32]byte `cbor:"2,keyasint"`
}

type hrAnchorReply struct {
	Index     uint64       `cbor:"1,keyasint,omitempty"`
	Refused   *wireRefusal `cbor:"2,keyasint,omitempty"`
	Unknown   bool         `cbor:"3,keyasint,omitempty"`
	NotLeader bool         `cbor:"4,keyasint,omitempty"`
}

type hrDisclosureRequest struct {
	Limit int `cbor:"2,keyasint"`
}

// hrDistrictIn is a district node of the federation under the city.
func hrDistrictIn(t *testing.T, f *localfed.Federation, city string) string {
	t.Helper()
	for _, d := range f.Districts() {
		if certs.InRegion(regionOf(f, d), "zhejiang/"+city) {
			return d
		}
	}
	t.Fatalf("no district under %s in %v", city, f.Districts())
	return ""
}

// hrCityOf is the name of the city node above a district.
func hrCityOf(t *testing.T, f *localfed.Federation, district string) string {
	t.Helper()
	region := regionOf(f, district)
	for _, ln := range f.Layout.Nodes {
		if ln.Role == certs.City && certs.InRegion(region, ln.Region) {
			return ln.Name
		}
	}
	t.Fatalf("no city above %s", district)
	return ""
}

// hrPortal is a portal identity nobody issued a certificate for.
func hrPortal(f *localfed.Federation, region, institution string) certs.Identity {
	return certs.Identity{Federation: f.Layout.Federation, Role: certs.Portal, Region: region, Institution: institution}
}

func hrRef(f *localfed.Federation, district, id string) string {
	return regionOf(f, district) + "/" + localfed.Department + "/" + id
}

// hrAuditSince returns a node's audit entries after seq.
func hrAuditSince(t *testing.T, f *localfed.Federation, name string, seq uint64) []storage.AuditEntry {
	t.Helper()
	var out []storage.AuditEntry
	for _, e := range auditEntries(t, f, name) {
		if e.Seq > seq {
			out = append(out, e)
		}
	}
	return out
}

// hrHTTP sends one request with a client certificate (nil: none) and
// returns the status and body.
func hrHTTP(t *testing.T, f *localfed.Federation, name string, files *localfed.ClientFiles, method, path string, body []byte) (int, []byte) {
	t.Helper()
	tr := &http.Transport{}
	if files != nil {
		tr.TLSClientConfig = tlsConfig(t, f, *files)
	} else {
		pool, err := certs.LoadPool(f.Layout.CA)
		if err != nil {
			t.Fatal(err)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}
	}
	c := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequest(method, "https://"+f.Node(name).APIAddr()+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	return resp.StatusCode, b
}

// hrErrorCode is the "code" of an API error body ("" if it is none).
func hrErrorCode(body []byte) string {
	var e struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &e) != nil {
		return ""
	}
	return e.Error.Code
}

func hrMessage(err error) string {
	if se, ok := err.(*api.StatusError); ok {
		return se.Err.Message
	}
	if err != nil {
		return err.Error()
	}
	return ""
}

// ---------------------------------------------------------------------------
// Portal requests forged by nodes.

// TestHostileRightsDistrictNodeCannotGatherAnotherDistrictsRecordsWithoutAPortal:
// a district operator speaks rights.forward to its city with its node
// certificate, naming a portal nobody issued a certificate for and a subject
// it holds nothing of. The threat model says a district cannot read the
// index nor another district's records; the city must not gather the
// report for it.
func TestHostileRightsDistrictNodeCannotGatherAnotherDistrictsRecordsWithoutAPortal(t *testing.T) {
	f := startFed(t, localfed.Spec{Districts: 2}, node.Options{})
	spy, holder := hrDistrictIn(t, f, "quzhou"), hrDistrictIn(t, f, "hangzhou")
	victim := credit.SyntheticPerson(31001, credit.NewDate(1970, 1, 2))
	secret := "只有西湖区掌握的处罚内容"
	submit(t, f, holder, record("HR-1", victim, "FOOD-DRUG-PENALTY", secret))
	waitIndexed(t, f, victim, 1)

	ep := bareEndpoint(t, f, nodeCertificate(t, f, spy))
	req := hrForward{Kind: rights.KindReport, Subject: victim, Authentication: "没有人做过的实名认证",
		Requester: hrPortal(f, regionOf(f, spy), "no-such-portal")}
	var rep rights.Report
	err := ep.Call(ctxT(t, 30*time.Second), peerOf(t, f, hrCityOf(t, f, spy)), rights.OpForward,
		exchange.Meta{Authentication: req.Authentication}, req, &rep)
	if err != nil {
		t.Logf("refused: %v", err)
		return
	}
	var named, read []string
	for _, d := range rep.Districts {
		named = append(named, d.Region)
		for _, r := range d.Records {
			read = append(read, fmt.Sprintf("%s/%s/%s status %s summary %q", d.Region, r.Department, r.ID, r.Status, r.Summary))
		}
	}
	t.Fatalf("district %s's node, with no portal certificate, had its city gather the report of a subject it holds nothing of, "+
		"under an invented portal: the index names %v for the subject, and it read another district's records: %v", spy, named, read)
}

// TestHostileRightsDistrictCannotOutrunThePortalRateWithInventedPortals:
// the city limits reports and access logs per portal (5 a second, bursts
// of 20). A district operator that names a new invented portal in each
// rights.forward is never limited.
func TestHostileRightsDistrictCannotOutrunThePortalRateWithInventedPortals(t *testing.T) {
	f := startFed(t, localfed.Spec{Districts: 1}, node.Options{})
	d := f.Districts()[0]
	subject := credit.SyntheticPerson(31101, credit.NewDate(1971, 2, 3))
	ep := bareEndpoint(t, f, nodeCertificate(t, f, d))
	city := peerOf(t, f, hrCityOf(t, f, d))
	ask := func(portal string) error {
		req := hrForward{Kind: rights.KindAccessLog, Subject: subject, Authentication: "实名认证 FLOOD",
			Requester: hrPortal(f, regionOf(f, d), portal)}
		var rep rights.Signed
		return ep.Call(ctxT(t, 30*time.Second), city, rights.OpForward, exchange.Meta{Authentication: req.Authentication}, req, &rep)
	}
	limited := false
	for i := 0; i < 60 && !limited; i++ {
		switch err := ask("invented-portal"); {
		case err == nil:
		case exchange.CodeOf(err) == exchange.CodeTooManyRequests:
			limited = true
		default:
			t.Fatalf("request %d: %v", i, err)
		}
	}
	if !limited {
		t.Fatal("60 access logs in a row under one portal were never limited: the test's premise fails")
	}
	served := 0
	for i := 0; i < 60; i++ {
		switch err := ask(fmt.Sprintf("invented-portal-%d", i)); {
		case err == nil:
			served++
		case exchange.CodeOf(err) == exchange.CodeTooManyRequests:
		default:
			t.Fatalf("request %d: %v", i, err)
		}
	}
	if served == 60 {
		t.Fatalf("district %s's node was served 60 access logs in a row, each under a portal it made up: the city limits by the "+
			"portal the body names, so nothing bounds what one district gathers (and each answer names the subject's pseudonym "+
			"and the districts holding records, the index)", d)
	}
}

// TestHostileRightsCoordinatorCannotReadRevokedRecordsAsAnInventedPortal:
// a record is revoked after an objection, so no ordinary purpose sees it.
// The city's operator speaks rights.records to the district directly,
// naming an invented portal and no authentication: the district must not
// hand over the record, and whatever it answers must reach the subject's
// access log.
func TestHostileRightsCoordinatorCannotReadRevokedRecordsAsAnInventedPortal(t *testing.T) {
	f := startFed(t, localfed.Spec{Districts: 1}, node.Options{})
	d := f.Districts()[0]
	subject := credit.SyntheticPerson(31201, credit.NewDate(1972, 3, 4))
	submit(t, f, d, record("RV-1", subject, "FOOD-DRUG-PENALTY", "已撤销的处罚"))
	waitIndexed(t, f, subject, 1)
	p := portal(t, f, d)
	auth := "实名认证 FACE-31201"
	ob, err := p.File(ctxT(t, 30*time.Second), "objections", api.CaseRequest{Subject: subject, Record: hrRef(f, d, "RV-1"),
		Reason: "处罚已被撤销", Authentication: auth})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := department(t, f, d).Decide(ctxT(t, 30*time.Second), "objections", ob.ID, api.CaseDecision{Outcome: "revoked", Reason: "复核撤销"}); err != nil {
		t.Fatal(err)
	}
	ans, err := lookupUntil(t, coordinator(t, f), api.LookupRequest{Subject: subject, Purpose: "ADMIN-LICENSING", User: "王五", Reference: "许可〔2026〕31号"})
	if err != nil {
		t.Fatal(err)
	}
	if r, ok := lookupRecord(t, ans, "RV-1"); ok {
		t.Fatalf("premise: an ordinary purpose still sees the revoked record: %+v", r)
	}

	city := bareEndpoint(t, f, nodeCertificate(t, f, hrCityOf(t, f, d)))
	var rep hrRecordsReply
	err = city.Call(ctxT(t, 30*time.Second), peerOf(t, f, d), rights.OpRecords, exchange.Meta{},
		hrRecordsRequest{Subject: subject, Pseudonym: pseudonymOf(t, f, subject), Requester: hrPortal(f, "zhejiang/quzhou", "invented-portal")}, &rep)
	if err != nil {
		t.Logf("refused: %v", err)
		return
	}
	var got []string
	for _, r := range rep.Records {
		got = append(got, fmt.Sprintf("%s status %s summary %q", r.ID, r.Status, r.Summary))
	}
	if len(got) == 0 {
		return
	}
	log, err := p.AccessLog(ctxT(t, 30*time.Second), api.SubjectRequest{Subject: subject, Authentication: auth})
	if err != nil {
		t.Fatal(err)
	}
	seen := false
	for _, e := range log.Entries {
		seen = seen || e.Institution == "invented-portal"
	}
	t.Fatalf("the city, with its node certificate, no portal and no authentication reference, read every record of the subject "+
		"at %s, revoked ones included: %v; the read is in the subject's access log: %v (%d entries)", d, got, seen, len(log.Entries))
}

// ---------------------------------------------------------------------------
// The access log.

// TestHostileRightsCoordinatorCannotHideALookupByReusingALookupID: the
// province looks a subject up (lookup id X). The city's operator then looks
// the same subject up at the district directly, leaving it out of its own
// audit log and sending X again as the lookup id. The district answers and
// audits it; the subject's access log must still show the second lookup.
func TestHostileRightsCoordinatorCannotHideALookupByReusingALookupID(t *testing.T) {
	f := startFed(t, localfed.Spec{Districts: 1}, node.Options{})
	d := f.Districts()[0]
	subject := credit.SyntheticPerson(31301, credit.NewDate(1973, 4, 5))
	submit(t, f, d, record("LI-1", subject, "FOOD-DRUG-PENALTY", "查询记录"))
	waitIndexed(t, f, subject, 1)
	honest, err := lookupUntil(t, coordinator(t, f), api.LookupRequest{Subject: subject, Purpose: "ADMIN-LICENSING", User: "张三", Reference: "许可〔2026〕1号"})
	if err != nil {
		t.Fatal(err)
	}
	if honest.LookupID == "" {
		t.Fatal("premise: the lookup has no id")
	}
	cityName := hrCityOf(t, f, d)
	city := bareEndpoint(t, f, nodeCertificate(t, f, cityName))
	requester := certs.Identity{Federation: f.Layout.Federation, Role: certs.Coordinator, Region: regionOf(f, cityName), Institution: localfed.CoordinatorInstitution}
	var rep lookupReply
	err = city.Call(ctxT(t, 30*time.Second), peerOf(t, f, d), "lookup",
		exchange.Meta{Purpose: "ADMIN-LICENSING", User: "暗中查询人", Reference: "无案号", LookupID: honest.LookupID},
		lookupRequest{Subject: subject, Pseudonym: pseudonymOf(t, f, subject), Requester: requester}, &rep)
	if err != nil {
		t.Logf("the district refused the reused lookup id: %v", err)
		return
	}
	if len(rep.Records) == 0 {
		t.Fatal("premise: the district answered the city's lookup with no record")
	}
	atDistrict := 0
	for _, e := range auditEntries(t, f, d) {
		if e.Operation == "lookup.answer" && e.LookupID == honest.LookupID {
			atDistrict++
		}
	}
	log, err := portal(t, f, d).AccessLog(ctxT(t, 30*time.Second), api.SubjectRequest{Subject: subject, Authentication: "实名认证 FACE-31301"})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range log.Entries {
		if e.User == "暗中查询人" || e.Reference == "无案号" {
			return
		}
	}
	var shown []string
	for _, e := range log.Entries {
		shown = append(shown, fmt.Sprintf("%s by %s/%s user %q ref %q districts %v", e.LookupID, e.Coordinator, e.Institution, e.User, e.Reference, e.Districts))
	}
	t.Fatalf("the city looked the subject up at %s and got %d record(s); the district audited %d answers under lookup id %s, "+
		"but the subject's access log shows %d entr(ies), only the province's: %v — the city's lookup merged into it by the reused id",
		d, len(rep.Records), atDistrict, honest.LookupID, len(log.Entries), shown)
}

// TestHostileRightsDistrictCannotForgeOthersAccessLogEntries: a district's
// operator runs its own answerer for rights.records (its node stopped, its
// certificate and port taken) and answers a report with access-log entries
// it made up: one reusing a real lookup's id with another user and purpose,
// one new lookup that claims another district answered. A district speaks
// only for the lookups it answered itself: the real lookup keeps what its
// coordinator registered, and a made-up one names the forging district
// alone.
func TestHostileRightsDistrictCannotForgeOthersAccessLogEntries(t *testing.T) {
	f := startFed(t, localfed.Spec{Districts: 2}, node.Options{})
	home, forger := hrDistrictIn(t, f, "quzhou"), hrDistrictIn(t, f, "hangzhou")
	subject := credit.SyntheticPerson(32401, credit.NewDate(1984, 2, 15))
	submit(t, f, home, record("FA-1", subject, "FOOD-DRUG-PENALTY", "访问记录"))
	submit(t, f, forger, record("FA-2", subject, "FOOD-DRUG-PENALTY", "访问记录"))
	waitIndexed(t, f, subject, 2)
	honest, err := lookupUntil(t, coordinator(t, f), api.LookupRequest{Subject: subject, Purpose: "ADMIN-LICENSING", User: "张三", Reference: "许可〔2026〕24号"})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.StopNode(ctxT(t, 30*time.Second), forger); err != nil {
		t.Fatal(err)
	}
	ca, err := certs.LoadCA(f.Dir)
	if err != nil {
		t.Fatal(err)
	}
	ln, _ := f.Layout.Node(forger)
	var fake *exchange.Endpoint
	wait.Until(t, 10*time.Second, "the forger to bind its node's port", func() bool {
		fake, err = exchange.New(exchange.Config{Certificate: nodeCertificate(t, f, forger),
			Verifier: certs.NewVerifier(ca.Cert, ca.Federation, nil), Addr: ln.Exchange})
		return err == nil
	})
	t.Cleanup(func() { fake.Close() })
	framed := "lk-" + strings.Repeat("f", 26)
	fake.Handle(rights.OpRecords, func(ctx context.Context, req *exchange.Request) (any, error) {
		return hrRecordsReply{Records: []credit.Record{}, Access: []rights.Access{
			{LookupID: honest.LookupID, At: time.Now().UTC(), Institution: "冒名机构", Role: "coordinator", User: "冒名的用户",
				Purpose: "LAW-ENFORCEMENT", Reference: "伪造", Coordinator: "zhejiang/hangzhou", Districts: []string{regionOf(f, home)}, Operation: "lookup"},
			{LookupID: framed, At: time.Now().UTC(), Institution: "公安局", Role: "coordinator", User: "被栽赃的查询人",
				Purpose: "ADMIN-LICENSING", Reference: "伪造2", Coordinator: "zhejiang/hangzhou", Districts: []string{regionOf(f, home)}, Operation: "lookup"},
		}}, nil
	})
	log, err := portal(t, f, home).AccessLog(ctxT(t, 30*time.Second), api.SubjectRequest{Subject: subject, Authentication: "实名认证 FACE-32401"})
	if err != nil {
		t.Fatal(err)
	}
	var broken []string
	for _, e := range log.Entries {
		switch e.LookupID {
		case honest.LookupID:
			if e.User != "张三" || e.Purpose != "ADMIN-LICENSING" || e.Reference != "许可〔2026〕24号" {
				broken = append(broken, fmt.Sprintf("the real lookup now reads %+v", e))
			}
		case framed:
			if len(e.Districts) != 1 || e.Districts[0] != regionOf(f, forger) {
				broken = append(broken, fmt.Sprintf("the made-up lookup is shown as answered by %v, not by the forger alone", e.Districts))
			}
			t.Logf("the made-up lookup is shown, attributed to the forging district: %+v", e)
		}
	}
	if len(broken) > 0 {
		t.Fatal(strings.Join(broken, "\n"))
	}
}

// ---------------------------------------------------------------------------
// Audit anchoring.

// TestHostileRightsDistrictCannotEvictItsAnchorsToHideARewrittenLog: the
// federation keeps the last 64 anchors of each node. A district operator
// stops its node, rewrites an anchored lookup entry and re-hashes the chain,
// appends 64 filler entries, and with its node certificate anchors each
// filler through consensus.anchor (forward only, so each is taken): the
// anchors that would show the rewrite are dropped. The node must still
// refuse to start.
func TestHostileRightsDistrictCannotEvictItsAnchorsToHideARewrittenLog(t *testing.T) {
	skipUnderRace(t, "fills the anchor budget entry by entry, then checks the rewritten log at a restart")
	spec := localfed.Spec{Dir: t.TempDir(), Districts: 1, Encrypt: true}
	f := startFed(t, spec, node.Options{})
	d := f.Districts()[0]
	subject := credit.SyntheticPerson(31401, credit.NewDate(1974, 5, 6))
	submit(t, f, d, record("AE-1", subject, "FOOD-DRUG-PENALTY", "锚点"))
	waitIndexed(t, f, subject, 1)
	coord := coordinator(t, f)
	for i := 0; i < 3; i++ {
		if _, err := lookupUntil(t, coord, api.LookupRequest{Subject: subject, Purpose: "ADMIN-LICENSING", User: fmt.Sprintf("查询人%d", i),
			Reference: fmt.Sprintf("许可〔2026〕%d号", 40+i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.StopNode(ctxT(t, 30*time.Second), d); err != nil {
		t.Fatal(err)
	}
	v := verifyOffline(t, f, d)
	if v.Mismatch != nil || len(v.Anchors) == 0 || v.Anchors[len(v.Anchors)-1].Seq != v.Head {
		t.Fatalf("premise: after a clean stop: head %d, anchors %+v, mismatch %v", v.Head, v.Anchors, v.Mismatch)
	}
	head := v.Head

	// Rewrite the first lookup answer (who looked) and re-hash to the head.
	var first uint64
	for _, e := range auditEntriesOffline(t, f, d, head) {
		if e.Operation == "lookup.answer" {
			first = e.Seq
			break
		}
	}
	if first == 0 {
		t.Fatal("premise: no lookup answer in the district's log")
	}
	tamperStore(t, f, d, func(db *badger.DB) {
		prev := [32]byte{}
		if first > 1 {
			prev = rawEntry(t, db, first-1).Hash
		}
		if err := db.Update(func(txn *badger.Txn) error {
			for s := first; s <= head; s++ {
				e := rawEntry(t, db, s)
				if s == first {
					e.User = "nobody"
				}
				e.Prev, e.Hash = prev, [32]byte{}
				e.Hash = sha256.Sum256(append(prev[:], encode(t, e)...))
				if err := txn.Set(auditKey(s), encode(t, e)); err != nil {
					return err
				}
				prev = e.Hash
			}
			return txn.Set([]byte("a!head"), encode(t, chainHead{Seq: head, Hash: prev}))
		}); err != nil {
			t.Fatal(err)
		}
	})
	// Append fillers with the store's own append, so the chain is whole.
	// 100 fillers: more than the 64 anchors the state kept per node before
	// the fix and than the 60 a node's anchoring budget holds at once, at
	// the exchange's 4 a second (consensus/anchor_test.go floods 10,000
	// in the FSM alone).
	const nFillers = 100
	db := openStore(t, f, d)
	for i := 0; i < nFillers; i++ {
		if _, err := db.Audit().Append(storage.AuditEntry{Operation: "health.probe", Decision: storage.DecisionAllowed}); err != nil {
			t.Fatal(err)
		}
	}
	var fillers []storage.AuditEntry
	if err := db.Audit().Range(head+1, head+nFillers, func(e storage.AuditEntry) error {
		fillers = append(fillers, e)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := db.Audit().Verify(); err != nil {
		t.Fatalf("premise: the rewritten chain does not verify on its own: %v", err)
	}
	db.Close()
	if m := verifyOffline(t, f, d).Mismatch; m == nil {
		t.Fatal("premise: the offline check against the anchors the node holds does not see the rewrite")
	}

	// Anchor every filler from the district's certificate.
	ep := bareEndpoint(t, f, nodeCertificate(t, f, d))
	leader := leaderName(t, f)
	for _, e := range fillers {
		var refused *wireRefusal
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		err := wait.For(ctx, 50*time.Millisecond, func() bool {
			var rep hrAnchorReply
			err := ep.Call(ctxT(t, 10*time.Second), peerOf(t, f, leader), "consensus.anchor", exchange.Meta{}, hrAnchorRequest{Seq: e.Seq, Hash: e.Hash}, &rep)
			switch {
			case exchange.CodeOf(err) == exchange.CodeTooManyRequests, exchange.CodeOf(err) == exchange.CodeUnavailable:
				return false
			case err != nil:
				t.Fatalf("anchor %d: %v", e.Seq, err)
			case rep.NotLeader:
				leader = leaderName(t, f)
				return false
			case rep.Refused != nil:
				refused = rep.Refused
				return true
			}
			return !rep.Unknown
		})
		cancel()
		if err != nil {
			t.Fatalf("anchor %d: not taken in time", e.Seq)
		}
		if refused != nil {
			t.Logf("the leader refused the anchor of filler %d: %+v", e.Seq, *refused)
			break
		}
	}

	err := f.StartNode(d)
	if err != nil {
		if !strings.Contains(err.Error(), "does not match its anchors") {
			t.Fatalf("start refused, but not for the audit log: %v", err)
		}
		t.Logf("start refused: %v", err)
		return
	}
	if err := f.StopNode(ctxT(t, 30*time.Second), d); err != nil {
		t.Fatal(err)
	}
	after := verifyOffline(t, f, d)
	if len(after.Anchors) == 0 {
		t.Fatalf("district %s started on a rewritten audit log after the anchor flood, and holds no anchors at all", d)
	}
	t.Fatalf("district %s started on an audit log whose entry %d was rewritten (its user now %q) and re-hashed, after anchoring %d "+
		"filler heads from its own certificate pushed the %d anchors that showed the rewrite out of the replicated state; its anchors are "+
		"now entries %d..%d, and `credfed audit verify` finds: %v",
		d, first, "nobody", len(fillers), len(v.Anchors), after.Anchors[0].Seq, after.Anchors[len(after.Anchors)-1].Seq, after.Mismatch)
}

// TestHostileRightsNodeCannotAnchorAnotherNodesLog: a district speaks
// consensus.anchor with a body that also names the province as the node,
// as the replicated AuditAnchor does. Whatever the leader does with it,
// no node's anchors but the caller's own may hold the head it sent.
func TestHostileRightsNodeCannotAnchorAnotherNodesLog(t *testing.T) {
	f := startFed(t, localfed.Spec{Districts: 1}, node.Options{})
	d := f.Districts()[0]
	ep := bareEndpoint(t, f, nodeCertificate(t, f, d))
	var hash [32]byte
	if _, err := rand.Read(hash[:]); err != nil {
		t.Fatal(err)
	}
	body := map[int]any{1: uint64(1 << 40), 2: hash, 3: "zhejiang", 4: time.Now().UTC()}
	var rep hrAnchorReply
	leader := leaderName(t, f)
	wait.Until(t, 30*time.Second, "the leader to answer the anchor", func() bool {
		err := ep.Call(ctxT(t, 10*time.Second), peerOf(t, f, leader), "consensus.anchor", exchange.Meta{}, body, &rep)
		if err != nil {
			t.Logf("refused: %v", err)
			rep = hrAnchorReply{Refused: &wireRefusal{Message: err.Error()}}
			return true
		}
		if rep.NotLeader {
			leader = leaderName(t, f)
			return false
		}
		return !rep.Unknown
	})
	state := f.Node(f.Province()).Replica().State()
	if rep.Refused == nil {
		wait.Until(t, 30*time.Second, "the province to apply the anchor", func() bool {
			as, _ := state.AuditAnchors(regionOf(f, d))
			return len(as) > 0 && as[len(as)-1].Hash == hash
		})
	}
	for _, ln := range f.Layout.Nodes {
		if ln.Region == regionOf(f, d) {
			continue
		}
		as, err := state.AuditAnchors(ln.Region)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range as {
			if a.Hash == hash {
				t.Errorf("district %s's anchor landed among %s's anchors: %+v", d, ln.Region, a)
			}
		}
	}
}

// auditEntriesOffline reads entries 1..head of a stopped node's log.
func auditEntriesOffline(t *testing.T, f *localfed.Federation, name string, head uint64) []storage.AuditEntry {
	t.Helper()
	db := openStore(t, f, name)
	defer db.Close()
	var out []storage.AuditEntry
	if err := db.Audit().Range(1, head, func(e storage.AuditEntry) error {
		out = append(out, e)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// ---------------------------------------------------------------------------
// Crashes and races in objections.

// TestHostileRightsCrashMidCaseLeavesRecordAndCaseConsistent: two crash
// windows, reproduced by writing the store of a stopped district as the
// code would have left it. Filing stores the objection first and marks the
// record after: a crash between leaves an open objection and an active
// record, which the district must mark at start — and the step must be in
// the audit log. Deciding writes the record first and the case after: a
// crash between leaves a revoked record and an open objection, which must
// not bring the revoked record back.
func TestHostileRightsCrashMidCaseLeavesRecordAndCaseConsistent(t *testing.T) {
	f := startFed(t, localfed.Spec{Districts: 1, Encrypt: true}, node.Options{})
	d := f.Districts()[0]
	region := regionOf(f, d)
	s1 := credit.SyntheticPerson(31501, credit.NewDate(1975, 6, 7))
	s2 := credit.SyntheticPerson(31502, credit.NewDate(1975, 6, 7))
	submit(t, f, d, record("CR-1", s1, "FOOD-DRUG-PENALTY", "崩溃一"), record("CR-2", s2, "FOOD-DRUG-PENALTY", "崩溃二"))
	waitIndexed(t, f, s1, 1)
	waitIndexed(t, f, s2, 1)
	ob2, err := portal(t, f, d).File(ctxT(t, 30*time.Second), "objections", api.CaseRequest{Subject: s2, Record: hrRef(f, d, "CR-2"),
		Reason: "不是我", Authentication: "实名认证 FACE-31502"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := department(t, f, d).Decide(ctxT(t, 30*time.Second), "objections", ob2.ID, api.CaseDecision{Outcome: "revoked", Reason: "复核撤销"}); err != nil {
		t.Fatal(err)
	}
	coord := coordinator(t, f)
	look := func(subject string) *api.LookupAnswer {
		ans, err := lookupUntil(t, coord, api.LookupRequest{Subject: subject, Purpose: "ADMIN-LICENSING", User: "赵六", Reference: "许可〔2026〕51号"})
		if err != nil {
			t.Fatal(err)
		}
		return ans
	}
	if _, ok := lookupRecord(t, look(s2), "CR-2"); ok {
		t.Fatal("premise: the revoked record is still shown")
	}
	if err := f.StopNode(ctxT(t, 30*time.Second), d); err != nil {
		t.Fatal(err)
	}
	db := openStore(t, f, d)
	rec1, err := db.Record(localfed.Department, "CR-1")
	if err != nil {
		t.Fatal(err)
	}
	injected := storage.Case{Kind: storage.CaseObjection, ID: rights.NewCaseID(storage.CaseObjection, region), Department: localfed.Department,
		Record: "CR-1", Subject: pseudonymOf(t, f, s1).String(), Portal: f.Layout.Portals[d].Identity, Authentication: "实名认证 FACE-31501",
		Reason: "不是我的", FiledAt: time.Now().UTC(), State: storage.CaseOpen, PriorStatus: rec1.Status, Deadline: credit.TodayAt(time.Now()) + 21}
	if err := db.PutCase(injected); err != nil {
		t.Fatal(err)
	}
	c2, err := db.GetCase(storage.CaseObjection, ob2.ID)
	if err != nil {
		t.Fatal(err)
	}
	c2.State, c2.Outcome, c2.Decision, c2.DecidedBy, c2.DecidedAt, c2.Version, c2.Notify = storage.CaseOpen, "", "", "", time.Time{}, 0, nil
	if err := db.PutCase(c2); err != nil {
		t.Fatal(err)
	}
	headBefore, _ := db.Audit().Head()
	db.Close()
	if err := f.StartNode(d); err != nil {
		t.Fatal(err)
	}
	if err := f.WaitReady(ctxT(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}

	t.Run("filing crash: the record is marked disputed at start", func(t *testing.T) {
		if r, ok := lookupRecord(t, look(s1), "CR-1"); !ok || r.Status != "disputed" {
			t.Errorf("after the restart record CR-1, whose objection is open, is shown as %+v (found %v), want disputed", r.Status, ok)
		}
	})
	t.Run("filing crash: the marking is in the audit log", func(t *testing.T) {
		for _, e := range hrAuditSince(t, f, d, headBefore) {
			for _, r := range e.Records {
				if r == localfed.Department+"/CR-1" && strings.HasPrefix(e.Operation, "objection") {
					return
				}
			}
		}
		var ops []string
		for _, e := range hrAuditSince(t, f, d, headBefore) {
			ops = append(ops, e.Operation)
		}
		t.Errorf("at start the district changed record CR-1 to disputed for objection %s, whose filing the crash kept out of the "+
			"audit log, and wrote no entry of it either: the objection step is nowhere in the audit log (entries since: %v)", injected.ID, ops)
	})
	t.Run("decision crash: the revoked record stays revoked", func(t *testing.T) {
		if r, ok := lookupRecord(t, look(s2), "CR-2"); ok {
			t.Errorf("after a crash between revoking record CR-2 and closing its objection, the restart brought the revoked record back "+
				"before ordinary purposes, as %q", r.Status)
		}
	})
}

// TestHostileRightsConcurrentObjectionsOfOneRecordOpenOneCase: sixteen
// objections of one record at once (a subject pressing the button again
// and again), four times over, a record and a portal each time: one open
// case per record, the other filings conflict. (A race: the test can only
// fail when it catches the window.)
func TestHostileRightsConcurrentObjectionsOfOneRecordOpenOneCase(t *testing.T) {
	f := startFed(t, localfed.Spec{Districts: 1}, node.Options{})
	d := f.Districts()[0]
	subject := credit.SyntheticPerson(31601, credit.NewDate(1976, 7, 8))
	// Two rounds: a district node may forward 40 filings at once (then 10
	// a second); more rounds would measure the rate limit, not the race.
	const rounds, n = 2, 16
	var recs []api.RecordInput
	for r := 0; r < rounds; r++ {
		recs = append(recs, record(fmt.Sprintf("CC-%d", r), subject, "FOOD-DRUG-PENALTY", "并发"))
	}
	submit(t, f, d, recs...)
	waitIndexed(t, f, subject, 1)
	var broken []string
	for r := 0; r < rounds; r++ {
		p := clientOf(t, f, d, issueUser(t, f, "portal", regionOf(f, d), fmt.Sprintf("portal-%d", r)))
		ref := hrRef(f, d, fmt.Sprintf("CC-%d", r))
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				_, errs[i] = p.File(ctxT(t, 30*time.Second), "objections", api.CaseRequest{Subject: subject, Record: ref,
					Reason: fmt.Sprintf("第%d次异议", i), Authentication: "实名认证 FACE-31601"})
			}(i)
		}
		wg.Wait()
		answers := map[string]int{}
		for _, err := range errs {
			code := api.Code(err)
			if code == "" {
				code = "created"
			}
			answers[code]++
		}
		all, err := department(t, f, d).Cases(ctxT(t, 30*time.Second), "objections", "all")
		if err != nil {
			t.Fatal(err)
		}
		var open []string
		for _, c := range all.Cases {
			if c.Record == ref && c.State == "open" {
				open = append(open, c.ID)
			}
		}
		if len(open) != 1 || answers["created"] != 1 {
			broken = append(broken, fmt.Sprintf("round %d: %d objections of %s at once left %d open objections of it %v (answers: %v)", r, n, ref, len(open), open, answers))
		}
	}
	if len(broken) > 0 {
		t.Fatal(strings.Join(broken, "\n"))
	}
}

// TestHostileRightsObjectionCannotPutARepairedRecordBackOnDisplay: a
// serious public record is repaired (no longer shown to ordinary purposes,
// off the public list). Anyone with a portal then files an objection to
// it: the record must stay hidden and off the public list.
func TestHostileRightsObjectionCannotPutARepairedRecordBackOnDisplay(t *testing.T) {
	f := startFed(t, localfed.Spec{Districts: 1}, node.Options{})
	d := f.Districts()[0]
	today := credit.TodayAt(time.Now())
	subject := credit.SyntheticPerson(31701, credit.NewDate(1977, 8, 9))
	submit(t, f, d, datedRecord("RS-1", subject, "FOOD-SAFETY-SERIOUS", today-400))
	waitIndexed(t, f, subject, 1)
	c := publicClient(t, f)
	listed := func() bool {
		_, body, _ := getPublic(t, c, f, d, "")
		return strings.Contains(body, "RS-1")
	}
	if !listed() {
		t.Fatal("premise: the serious record is not on the public list")
	}
	p := portal(t, f, d)
	auth := "实名认证 FACE-31701"
	rp, err := p.File(ctxT(t, 30*time.Second), "repairs", api.CaseRequest{Subject: subject, Record: hrRef(f, d, "RS-1"), Grounds: "donation",
		Reason: "慈善捐助", Evidence: []string{"捐赠证明 31701"}, Authentication: auth})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := department(t, f, d).Decide(ctxT(t, 30*time.Second), "repairs", rp.ID, api.CaseDecision{Outcome: "approved", Reason: "符合修复条件"}); err != nil {
		t.Fatal(err)
	}
	coord := coordinator(t, f)
	shown := func() (api.Record, bool) {
		ans, err := lookupUntil(t, coord, api.LookupRequest{Subject: subject, Purpose: "ADMIN-LICENSING", User: "钱七", Reference: "许可〔2026〕71号"})
		if err != nil {
			t.Fatal(err)
		}
		return lookupRecord(t, ans, "RS-1")
	}
	if _, ok := shown(); ok || listed() {
		t.Fatal("premise: the repaired record is still shown or listed")
	}
	if _, err := p.File(ctxT(t, 30*time.Second), "objections", api.CaseRequest{Subject: subject, Record: hrRef(f, d, "RS-1"),
		Reason: "对已修复记录提出异议", Authentication: auth}); err != nil {
		t.Logf("the objection was refused: %v", err)
		return
	}
	var broken []string
	if r, ok := shown(); ok {
		broken = append(broken, fmt.Sprintf("an ordinary purpose (ADMIN-LICENSING) sees it again, as %q", r.Status))
	}
	if listed() {
		broken = append(broken, "it is back on the public disclosure list")
	}
	if len(broken) > 0 {
		t.Fatalf("an objection to a repaired record made it disputed: %s", strings.Join(broken, "; "))
	}
}

// ---------------------------------------------------------------------------
// The public disclosure list.

// hrFold maps full-width digits and letters to ASCII and drops everything
// that is not an ASCII letter or digit: what a reader's eye does with an
// identifier written in another form.
func hrFold(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r >= 0xFF10 && r <= 0xFF19 || r >= 0xFF21 && r <= 0xFF3A || r >= 0xFF41 && r <= 0xFF5A {
			r -= 0xFEE0
		}
		if r >= '0' && r <= '9' || r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' {
			b.WriteRune(r)
		}
	}
	return b.String()
}

func hrFullWidth(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r >= '0' && r <= '9' || r >= 'A' && r <= 'Z' {
			r += 0xFEE0
		}
		b.WriteRune(r)
	}
	return b.String()
}

// TestHostileRightsDisclosurePageHoldsNoIdentifierInAnyWriting: a
// department writes the subject's identifier into decision numbers in
// forms the scrub of runs of 18 ASCII letters and digits does not see —
// full-width digits, groups split by hyphens or spaces — and the record's
// summary holds text nobody may read on the public list. No page, at the
// district or the province, may show the identifier whole in any writing,
// nor the summary.
func TestHostileRightsDisclosurePageHoldsNoIdentifierInAnyWriting(t *testing.T) {
	f := startFed(t, localfed.Spec{Districts: 1}, node.Options{})
	d := f.Districts()[0]
	today := credit.TodayAt(time.Now())
	secret := "公开名单上不得出现的处罚经过"
	forms := []struct {
		name   string
		write  func(string) string
		person int
	}{
		{"plain ASCII (the scrub's case)", func(s string) string { return s }, 31801},
		{"full-width digits", hrFullWidth, 31802},
		{"groups split by hyphens", func(s string) string { return s[:6] + "-" + s[6:14] + "-" + s[14:] }, 31803},
		{"groups split by spaces", func(s string) string { return s[:6] + " " + s[6:14] + " " + s[14:] }, 31804},
	}
	var recs []api.RecordInput
	ids := map[string]string{}
	for i, fm := range forms {
		s := credit.SyntheticPerson(fm.person, credit.NewDate(1980, 1, 1+i))
		r := datedRecord(fmt.Sprintf("DW-%d", i), s, "FOOD-SAFETY-SERIOUS", today-10)
		r.DecisionNumber = "罚决字" + fm.write(s) + "号"
		r.Summary = secret
		recs = append(recs, r)
		ids[fm.name] = s
	}
	submit(t, f, d, recs...)
	for _, s := range ids {
		waitIndexed(t, f, s, 1)
	}
	c := publicClient(t, f)
	var broken []string
	for _, at := range []string{d, f.Province()} {
		status, body, _ := getPublic(t, c, f, at, "?limit=200")
		if status != http.StatusOK {
			t.Fatalf("GET /v1/disclosures at %s: %d %s", at, status, body)
		}
		var p disclosurePage
		if err := json.Unmarshal([]byte(body), &p); err != nil {
			t.Fatal(err)
		}
		if len(p.Entries) < len(forms) {
			t.Fatalf("premise: %s lists %d entries, want %d", at, len(p.Entries), len(forms))
		}
		if strings.Contains(body, secret) {
			broken = append(broken, at+": the record's summary is on the page")
		}
		for _, fm := range forms {
			s := ids[fm.name]
			for _, e := range p.Entries {
				if strings.Contains(hrFold(e.DecisionNumber), s) {
					broken = append(broken, fmt.Sprintf("%s: %s: the decision number shows the identifier whole: %s (subject column %s)",
						at, fm.name, strings.ReplaceAll(e.DecisionNumber, fm.write(s), "<"+credit.MaskIdentifier(s)+" written "+fm.name+">"), e.Subject))
				}
			}
		}
	}
	if len(broken) > 0 {
		t.Fatalf("the public list, which needs no certificate, discloses:\n%s", strings.Join(broken, "\n"))
	}
}

// ---------------------------------------------------------------------------
// Signed reports.

// hrSign signs doc (without a signature member) as attest does, with any
// key and chain the caller chooses: what a forger would do.
func hrSign(t *testing.T, doc map[string]json.RawMessage, sig attest.Signature, key *ecdsa.PrivateKey) []byte {
	t.Helper()
	sig.Value = nil
	noValue, err := json.Marshal(sig)
	if err != nil {
		t.Fatal(err)
	}
	whole := map[string]json.RawMessage{}
	for k, v := range doc {
		whole[k] = v
	}
	whole[attest.Member] = noValue
	raw, err := json.Marshal(whole)
	if err != nil {
		t.Fatal(err)
	}
	canon, err := jcs.Transform(raw)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(canon)
	if sig.Value, err = ecdsa.SignASN1(rand.Reader, key, sum[:]); err != nil {
		t.Fatal(err)
	}
	// The canonical low-S form, as attest signs: a forgery refused must be
	// refused for what it forges, not for the form of its value.
	var rs struct{ R, S *big.Int }
	if _, err := asn1.Unmarshal(sig.Value, &rs); err != nil {
		t.Fatal(err)
	}
	if n := key.Curve.Params().N; rs.S.Cmp(new(big.Int).Rsh(n, 1)) > 0 {
		rs.S = new(big.Int).Sub(n, rs.S)
	}
	if sig.Value, err = asn1.Marshal(rs); err != nil {
		t.Fatal(err)
	}
	if whole[attest.Member], err = json.Marshal(sig); err != nil {
		t.Fatal(err)
	}
	out, err := json.Marshal(whole)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func hrLeaf(t *testing.T, c tls.Certificate) *x509.Certificate {
	t.Helper()
	if c.Leaf != nil {
		return c.Leaf
	}
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return leaf
}

// insertAfter inserts ins after the first occurrence of marker in raw.
func insertAfter(t *testing.T, raw []byte, marker, ins string) []byte {
	t.Helper()
	i := bytes.Index(raw, []byte(marker))
	if i < 0 {
		t.Fatalf("marker %q not in the document", marker)
	}
	i += len(marker)
	out := append([]byte{}, raw[:i]...)
	out = append(out, ins...)
	return append(out, raw[i:]...)
}

// TestHostileRightsSignedReportTampering: a subject's report, signed by the
// answering district, handed to someone who wants it to say something else
// and still verify — by `credfed report verify` (attest.Verify) — or
// someone who wants to mint one.
func TestHostileRightsSignedReportTampering(t *testing.T) {
	f := startFed(t, localfed.Spec{Districts: 2}, node.Options{})
	home, other := hrDistrictIn(t, f, "quzhou"), hrDistrictIn(t, f, "hangzhou")
	subject := credit.SyntheticPerson(31901, credit.NewDate(1979, 9, 10))
	submit(t, f, home, record("SR-1", subject, "FOOD-DRUG-PENALTY", "柯城区的处罚"))
	submit(t, f, other, record("SR-2", subject, "FOOD-DRUG-PENALTY", "西湖区的处罚"))
	waitIndexed(t, f, subject, 2)
	raw, rep, err := portal(t, f, home).Report(ctxT(t, 30*time.Second), api.SubjectRequest{Subject: subject, Authentication: "实名认证 FACE-31901"})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Districts) != 2 {
		t.Fatalf("premise: report districts %+v", rep.Districts)
	}
	ca, err := certs.LoadCertFile(f.Layout.CA)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := attest.Verify(raw, ca); err != nil {
		t.Fatalf("premise: the report does not verify: %v", err)
	}
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	var sig attest.Signature
	if err := json.Unmarshal(doc[attest.Member], &sig); err != nil {
		t.Fatal(err)
	}
	delete(doc, attest.Member)
	// A first-wins reader (many JSON libraries, streaming parsers, jq's
	// --stream, most eyes) reads the first of duplicate members.
	firstWins := func(data []byte, member string) json.RawMessage {
		dec := json.NewDecoder(bytes.NewReader(data))
		if _, err := dec.Token(); err != nil {
			return nil
		}
		for dec.More() {
			k, _ := dec.Token()
			var v json.RawMessage
			if err := dec.Decode(&v); err != nil {
				return nil
			}
			if k == member {
				return v
			}
		}
		return nil
	}

	t.Run("a duplicate top-level member ahead of the signed one", func(t *testing.T) {
		forged := insertAfter(t, raw, "{", `"districts":[],"lists":[],"gathered_by":"zhejiang",`)
		if _, err := attest.Verify(forged, ca); err == nil {
			t.Errorf("a report with duplicate members verifies: `credfed report verify` checks the last of each, a first-wins reader "+
				"sees districts %s (no records at all) — the signed content is ambiguous", firstWins(forged, "districts"))
		}
	})
	t.Run("a duplicate member in the signature", func(t *testing.T) {
		forged := insertAfter(t, raw, `"signature": {`, `"signer":"spiffe://`+f.Layout.Federation+`/province/zhejiang","signed_at":"2020-01-01T00:00:00Z",`)
		if _, err := attest.Verify(forged, ca); err == nil {
			t.Errorf("a signature member with a second signer and signing time verifies; a first-wins reader sees signer %s at %s",
				firstWins(firstWins(forged, attest.Member), "signer"), firstWins(firstWins(forged, attest.Member), "signed_at"))
		}
	})
	t.Run("a duplicate member inside a record", func(t *testing.T) {
		forged := insertAfter(t, raw, `"records": [`+"\n"+`        {`, `"status":"revoked",`)
		if bytes.Equal(forged, raw) {
			t.Skip("no record object found")
		}
		if _, err := attest.Verify(forged, ca); err == nil {
			t.Error("a record with a duplicate status member verifies")
		}
	})
	t.Run("a value changed through escapes, surrogates or bad UTF-8", func(t *testing.T) {
		gb := string(doc["gathered_by"])
		for name, repl := range map[string]string{
			"a different character escaped": strings.Replace(gb, `"z`, `"\u007a\u007a`, 1),
			"a lone surrogate":              strings.Replace(gb, `"z`, `"\ud800z`, 1),
			"an invalid UTF-8 byte":         strings.Replace(gb, `"z`, "\"\xffz", 1),
			"a NUL escaped":                 strings.Replace(gb, `"z`, `"\u0000z`, 1),
		} {
			forged := bytes.Replace(raw, []byte(`"gathered_by": `+gb), []byte(`"gathered_by": `+repl), 1)
			if bytes.Equal(forged, raw) {
				t.Fatalf("%s: nothing replaced", name)
			}
			if _, err := attest.Verify(forged, ca); err == nil {
				t.Errorf("%s: the changed report verifies", name)
			}
		}
		// The same value in another spelling verifies: RFC 8785 signs the
		// value, not its bytes (by design).
		same := bytes.Replace(raw, []byte(`"gathered_by": "z`), []byte(`"gathered_by": "\u007a`), 1)
		if _, err := attest.Verify(same, ca); err != nil {
			t.Logf("the same value spelled with an escape does not verify: %v", err)
		}
	})
	t.Run("a number changed to another value or beyond double precision", func(t *testing.T) {
		if !bytes.Contains(raw, []byte(`"version": 1`)) {
			t.Skip("no version member")
		}
		if _, err := attest.Verify(bytes.Replace(raw, []byte(`"version": 1`), []byte(`"version": 2`), 1), ca); err == nil {
			t.Error("a record's version changed from 1 to 2 and the report verifies")
		}
		if _, err := attest.Verify(bytes.Replace(raw, []byte(`"version": 1`), []byte(`"version": 1.0000000000000001`), 1), ca); err == nil {
			t.Log("note: version 1 rewritten as 1.0000000000000001 verifies (RFC 8785 compares numbers as IEEE doubles)")
		}
	})
	t.Run("a signature by a user certificate", func(t *testing.T) {
		pf := f.Layout.Portals[home]
		pair, err := certs.LoadKeyPair(pf.Cert, pf.Key)
		if err != nil {
			t.Fatal(err)
		}
		s := attest.Signature{Alg: attest.Alg, Canonicalization: attest.Canonicalization, Signer: pf.Identity,
			SignedAt: time.Now().UTC().Truncate(time.Second), Chain: pair.Certificate}
		if _, err := attest.Verify(hrSign(t, doc, s, pair.PrivateKey.(*ecdsa.PrivateKey)), ca); err == nil {
			t.Error("a report signed with a portal certificate verifies")
		}
	})
	t.Run("a signing time outside the certificate's validity", func(t *testing.T) {
		nc := nodeCertificate(t, f, hrCityOf(t, f, home))
		leaf := hrLeaf(t, nc)
		for name, at := range map[string]time.Time{"before it": leaf.NotBefore.Add(-time.Hour), "after it": leaf.NotAfter.Add(time.Hour)} {
			signer, err := attest.NewSigner(nc, func() time.Time { return at })
			if err != nil {
				t.Fatal(err)
			}
			out, err := signer.Sign(doc)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := attest.Verify(out, ca); err == nil {
				t.Errorf("a report signed %s (%s) verifies", name, at.Format(time.RFC3339))
			}
		}
	})
	t.Run("a CA of another federation, or another CA of the same name", func(t *testing.T) {
		for _, fed := range []string{"other", f.Layout.Federation} {
			rogue, err := certs.NewCA(fed, 24*time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			is, err := rogue.Issue(certs.IssueRequest{Identity: certs.Identity{Federation: fed, Role: certs.City, Region: "zhejiang/quzhou"}, Hosts: []string{"127.0.0.1"}})
			if err != nil {
				t.Fatal(err)
			}
			signer, err := attest.NewSigner(is.TLSCertificate(), nil)
			if err != nil {
				t.Fatal(err)
			}
			out, err := signer.Sign(doc)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := attest.Verify(out, ca); err == nil {
				t.Errorf("a report signed under a CA of federation %q verifies against the federation's CA", fed)
			}
		}
	})
	t.Run("the signature value re-encoded (ECDSA malleability)", func(t *testing.T) {
		var rs struct{ R, S *big.Int }
		if _, err := asn1.Unmarshal(sig.Value, &rs); err != nil {
			t.Fatal(err)
		}
		rs.S = new(big.Int).Sub(elliptic.P256().Params().N, rs.S)
		value, err := asn1.Marshal(rs)
		if err != nil {
			t.Fatal(err)
		}
		forged := bytes.Replace(raw, []byte(base64.StdEncoding.EncodeToString(sig.Value)), []byte(base64.StdEncoding.EncodeToString(value)), 1)
		if bytes.Equal(forged, raw) {
			t.Fatal("value not found")
		}
		if _, err := attest.Verify(forged, ca); err == nil {
			t.Error("a report whose signature value was replaced by (r, n−s) still verifies: the bytes of a verified report are not unique " +
				"(low: the content is unchanged, but anyone keying reports by their signature sees two)")
		}
	})
	t.Run("re-signed by a district for records it does not hold", func(t *testing.T) {
		var districts []map[string]json.RawMessage
		if err := json.Unmarshal(doc["districts"], &districts); err != nil {
			t.Fatal(err)
		}
		var kept []map[string]json.RawMessage
		for _, d := range districts {
			if string(d["district"]) != `"`+regionOf(f, other)+`"` {
				kept = append(kept, d)
				continue
			}
			// The other district's part: its record gone, its status ok.
			d["records"] = json.RawMessage(`[]`)
			kept = append(kept, d)
		}
		forgedDoc := map[string]json.RawMessage{}
		for k, v := range doc {
			forgedDoc[k] = v
		}
		b, _ := json.Marshal(kept)
		forgedDoc["districts"] = b
		// attest.NewSigner refuses a district's certificate; the operator
		// signs by hand with its node key.
		nc := nodeCertificate(t, f, home)
		sig := attest.Signature{Alg: attest.Alg, Canonicalization: attest.Canonicalization,
			Signer:   "spiffe://" + f.Layout.Federation + "/district/" + regionOf(f, home),
			SignedAt: time.Now().UTC().Truncate(time.Second), Chain: nc.Certificate}
		out := hrSign(t, forgedDoc, sig, nc.PrivateKey.(*ecdsa.PrivateKey))
		if v, err := attest.Verify(out, ca); err == nil {
			t.Errorf("district %s's operator removed %s's record from the report and re-signed it with its node key: it verifies "+
				"(signer %s), so one district can mint a verifying report of any subject with any content for any district", home, other, v.Signer)
		}
	})
}

// ---------------------------------------------------------------------------
// Users who do not own a case.

// TestHostileRightsOutsidersCannotReadOrDecideCases: an objection filed at
// district A about a record of district B. A's department, another
// department of B, a portal, a coordinator: none lists, reads or decides
// it; a portal acts only through its own node; nothing changes.
func TestHostileRightsOutsidersCannotReadOrDecideCases(t *testing.T) {
	f := startFed(t, localfed.Spec{Districts: 2}, node.Options{})
	a, b := hrDistrictIn(t, f, "quzhou"), hrDistrictIn(t, f, "hangzhou")
	subject := credit.SyntheticPerson(32001, credit.NewDate(1980, 10, 11))
	submit(t, f, b, record("OC-1", subject, "FOOD-DRUG-PENALTY", "异议对象"))
	waitIndexed(t, f, subject, 1)
	pa := portal(t, f, a)
	ob, err := pa.File(ctxT(t, 30*time.Second), "objections", api.CaseRequest{Subject: subject, Record: hrRef(f, b, "OC-1"),
		Reason: "并非本人", Authentication: "实名认证 FACE-32001"})
	if err != nil {
		t.Fatal(err)
	}
	tax := issueUser(t, f, "department", regionOf(f, b), "tax-bureau")
	deptA, portalB, coordFiles := f.Layout.Departments[a], f.Layout.Portals[b], f.Layout.Coordinators[hrCityOf(t, f, b)]
	decision, _ := json.Marshal(api.CaseDecision{Outcome: "revoked", Reason: "越权"})
	filing, _ := json.Marshal(api.CaseRequest{Subject: subject, Record: hrRef(f, b, "OC-1"), Reason: "x", Authentication: "y"})
	report, _ := json.Marshal(api.SubjectRequest{Subject: subject, Authentication: "y"})
	id := url.PathEscape(ob.ID)
	type try struct {
		who    string
		node   string
		files  localfed.ClientFiles
		method string
		path   string
		body   []byte
	}
	var broken []string
	for _, c := range []try{
		{"A's department, at A", a, deptA, "GET", "/v1/objections/" + id, nil},
		{"A's department, at B", b, deptA, "GET", "/v1/objections/" + id, nil},
		{"A's department, at B", b, deptA, "GET", "/v1/objections?state=all", nil},
		{"A's department, at B", b, deptA, "POST", "/v1/objections/" + id + "/resolution", decision},
		{"B's tax bureau", b, tax, "GET", "/v1/objections/" + id, nil},
		{"B's tax bureau", b, tax, "POST", "/v1/objections/" + id + "/resolution", decision},
		{"A's portal", a, f.Layout.Portals[a], "GET", "/v1/objections?state=all", nil},
		{"A's portal", b, f.Layout.Portals[a], "POST", "/v1/objections/" + id + "/resolution", decision},
		{"A's portal, at B", b, f.Layout.Portals[a], "GET", "/v1/objections/" + id, nil},
		{"A's portal, at B", b, f.Layout.Portals[a], "POST", "/v1/reports", report},
		{"A's portal, at B", b, f.Layout.Portals[a], "POST", "/v1/objections", filing},
		{"B's portal, at A", a, portalB, "POST", "/v1/access-log", report},
		{"the city's coordinator", hrCityOf(t, f, b), coordFiles, "GET", "/v1/objections/" + id, nil},
		{"the city's coordinator", b, coordFiles, "POST", "/v1/objections/" + id + "/resolution", decision},
	} {
		status, body := hrHTTP(t, f, c.node, &c.files, c.method, c.path, c.body)
		code := hrErrorCode(body)
		if status < 400 || status >= 500 || (code != api.CodeForbidden && code != api.CodeNotFound) {
			broken = append(broken, fmt.Sprintf("%s: %s %s at %s: %d %.200s", c.who, c.method, c.path, c.node, status, body))
		}
	}
	// B's tax bureau lists no case it does not own.
	tc := clientOf(t, f, b, tax)
	if got, err := tc.Cases(ctxT(t, 30*time.Second), "objections", "all"); err != nil || len(got.Cases) != 0 {
		broken = append(broken, fmt.Sprintf("B's tax bureau lists %+v, %v", got, err))
	}
	got, err := department(t, f, b).Case(ctxT(t, 30*time.Second), "objections", ob.ID)
	if err != nil || got.State != "open" {
		broken = append(broken, fmt.Sprintf("the objection after the attempts: %+v, %v", got, err))
	}
	if len(broken) > 0 {
		t.Fatalf("outsiders got at the case:\n%s", strings.Join(broken, "\n"))
	}
}

// TestHostileRightsPortalFloodIsLimitedAndAudited: a portal asks for
// report after report. It is limited (typed 429) and each answered report
// is audited under its identity with its authentication reference at the
// district and at the city; another portal is not locked out meanwhile.
func TestHostileRightsPortalFloodIsLimitedAndAudited(t *testing.T) {
	f := startFed(t, localfed.Spec{Districts: 1}, node.Options{})
	d := f.Districts()[0]
	cityName := hrCityOf(t, f, d)
	subject := credit.SyntheticPerson(32101, credit.NewDate(1981, 11, 12))
	submit(t, f, d, record("PF-1", subject, "FOOD-DRUG-PENALTY", "刷查"))
	waitIndexed(t, f, subject, 1)
	distBefore, cityBefore := auditHead(f, d), auditHead(f, cityName)
	p := portal(t, f, d)
	served, limited := 0, false
	for i := 0; i < 80 && !limited; i++ {
		_, _, err := p.Report(ctxT(t, 30*time.Second), api.SubjectRequest{Subject: subject, Authentication: fmt.Sprintf("实名认证 FLOOD-%d", i)})
		switch api.Code(err) {
		case "":
			served++
		case api.CodeTooManyRequests:
			limited = true
		default:
			t.Fatalf("report %d: %v", i, err)
		}
	}
	if !limited {
		t.Fatalf("80 reports in a row from one portal were never limited")
	}
	other := clientOf(t, f, d, issueUser(t, f, "portal", regionOf(f, d), "another-portal"))
	if _, _, err := other.Report(ctxT(t, 30*time.Second), api.SubjectRequest{Subject: subject, Authentication: "实名认证 OTHER"}); err != nil {
		t.Errorf("another portal, during the flood: %v", err)
	}
	inst := func(uri string) string { i := strings.LastIndex(uri, "/"); return uri[i+1:] }(f.Layout.Portals[d].Identity)
	count := func(entries []storage.AuditEntry) int {
		n := 0
		for _, e := range entries {
			if e.Operation == rights.KindReport && e.Decision == storage.DecisionAllowed && e.Institution == inst && strings.HasPrefix(e.Authentication, "实名认证 FLOOD-") {
				n++
			}
		}
		return n
	}
	if n := count(hrAuditSince(t, f, d, distBefore)); n != served {
		t.Errorf("%d reports were served, %d are audited at the district under the portal with its authentication", served, n)
	}
	if n := count(hrAuditSince(t, f, cityName, cityBefore)); n != served {
		t.Errorf("%d reports were served, %d are audited at the city under the portal with its authentication", served, n)
	}
}

// ---------------------------------------------------------------------------
// Hostile input.

// TestHostileRightsMalformedInputsGetTypedErrorsAndChangeNothing: oversized,
// malformed and out-of-place fields on every new route and exchange
// operation: each is a 4xx with a typed code (never 500, never a dropped
// connection), and the record and its cases do not change.
func TestHostileRightsMalformedInputsGetTypedErrorsAndChangeNothing(t *testing.T) {
	f := startFed(t, localfed.Spec{Districts: 1}, node.Options{})
	d := f.Districts()[0]
	cityName := hrCityOf(t, f, d)
	subject := credit.SyntheticPerson(32201, credit.NewDate(1982, 12, 13))
	submit(t, f, d, record("MI-1", subject, "FOOD-DRUG-PENALTY", "畸形输入"))
	waitIndexed(t, f, subject, 1)
	ref := hrRef(f, d, "MI-1")
	pf, df := f.Layout.Portals[d], f.Layout.Departments[d]
	js := func(v any) []byte { b, _ := json.Marshal(v); return b }
	long := strings.Repeat("长", 1000)
	evidence := make([]string, 33)
	for i := range evidence {
		evidence[i] = "证据"
	}
	junkCursor := base64.RawURLEncoding.EncodeToString(func() []byte {
		b, _ := cbor.Marshal(map[int]any{1: 1, 2: int64(-1 << 63), 3: strings.Repeat("a", 256), 4: make([]byte, storage.TieSize)})
		return b
	}())
	type try struct {
		name   string
		files  *localfed.ClientFiles
		method string
		path   string
		body   []byte
	}
	var broken []string
	for _, c := range []try{
		{"report: authentication of 300 bytes", &pf, "POST", "/v1/reports", js(api.SubjectRequest{Subject: subject, Authentication: strings.Repeat("a", 300)})},
		{"report: authentication with a control character", &pf, "POST", "/v1/reports", js(api.SubjectRequest{Subject: subject, Authentication: "实名\u0007认证"})},
		{"report: invalid identifier", &pf, "POST", "/v1/reports", js(api.SubjectRequest{Subject: subject[:17] + "Z", Authentication: "a"})},
		{"report: unknown field", &pf, "POST", "/v1/reports", []byte(`{"subject":"` + subject + `","authentication":"a","extra":1}`)},
		{"report: not an object", &pf, "POST", "/v1/reports", []byte(`[` + strings.Repeat(`"x",`, 1000) + `"x"]`)},
		{"report: 5 MiB of whitespace", &pf, "POST", "/v1/reports", append(bytes.Repeat([]byte(" "), 5<<20), '{', '}')},
		{"access log: subject a number", &pf, "POST", "/v1/access-log", []byte(`{"subject":110101,"authentication":"a"}`)},
		{"objection: 33 evidence references", &pf, "POST", "/v1/objections", js(api.CaseRequest{Subject: subject, Record: ref, Reason: "r", Evidence: evidence, Authentication: "a"})},
		{"objection: a reason of 3000 bytes", &pf, "POST", "/v1/objections", js(api.CaseRequest{Subject: subject, Record: ref, Reason: long, Authentication: "a"})},
		{"objection: a reason with a bidi override", &pf, "POST", "/v1/objections", js(api.CaseRequest{Subject: subject, Record: ref, Reason: "理由\u202e", Authentication: "a"})},
		{"objection: a ref of 2000 bytes", &pf, "POST", "/v1/objections", js(api.CaseRequest{Subject: subject, Record: strings.Repeat("a/", 1000) + "x", Reason: "r", Authentication: "a"})},
		{"objection: a ref of two parts", &pf, "POST", "/v1/objections", js(api.CaseRequest{Subject: subject, Record: "a/b", Reason: "r", Authentication: "a"})},
		{"objection: grounds", &pf, "POST", "/v1/objections", js(api.CaseRequest{Subject: subject, Record: ref, Reason: "r", Grounds: "donation", Authentication: "a"})},
		{"objection: no reason", &pf, "POST", "/v1/objections", js(api.CaseRequest{Subject: subject, Record: ref, Authentication: "a"})},
		{"objection: no authentication", &pf, "POST", "/v1/objections", js(api.CaseRequest{Subject: subject, Record: ref, Reason: "r"})},
		{"repair: unknown grounds", &pf, "POST", "/v1/repairs", js(api.CaseRequest{Subject: subject, Record: ref, Grounds: "bribe", Authentication: "a"})},
		{"objection: an id of 300 characters", &pf, "GET", "/v1/objections/ob-" + strings.Repeat("a", 300), nil},
		{"objection: an id naming no region", &pf, "GET", "/v1/objections/ob-" + strings.Repeat("a", 26) + "..", nil},
		{"objection: an id with a traversal", &pf, "GET", "/v1/objections/ob-" + strings.Repeat("a", 26) + ".zhejiang..%2F..", nil},
		{"cases: unknown state", &df, "GET", "/v1/objections?state=bogus", nil},
		{"resolution: unknown outcome", &df, "POST", "/v1/objections/ob-" + strings.Repeat("a", 26) + "." + strings.ReplaceAll(regionOf(f, d), "/", ".") + "/resolution", js(api.CaseDecision{Outcome: "maybe", Reason: "r"})},
		{"disclosures: a cursor of 600 characters", nil, "GET", "/v1/disclosures?cursor=" + strings.Repeat("A", 600), nil},
		{"disclosures: a cursor of junk", nil, "GET", "/v1/disclosures?cursor=" + base64.RawURLEncoding.EncodeToString([]byte{0xff, 0xff, 0xff}), nil},
		{"disclosures: a limit of a billion", nil, "GET", "/v1/disclosures?limit=1000000000", nil},
	} {
		status, body := hrHTTP(t, f, d, c.files, c.method, c.path, c.body)
		code := hrErrorCode(body)
		if status < 400 || status >= 500 || code == "" || code == api.CodeInternal {
			broken = append(broken, fmt.Sprintf("%s: %d %.200s", c.name, status, body))
		}
	}
	// A cursor that decodes to an extreme place is a place like any other.
	if status, body := hrHTTP(t, f, d, nil, "GET", "/v1/disclosures?cursor="+junkCursor, nil); status >= 500 {
		broken = append(broken, fmt.Sprintf("disclosures: an extreme cursor: %d %.200s", status, body))
	}

	// Exchange operations: a typed refusal, the connection goes on.
	city := bareEndpoint(t, f, nodeCertificate(t, f, cityName))
	dist := bareEndpoint(t, f, nodeCertificate(t, f, d))
	huge := rights.Filing{Kind: storage.CaseObjection, Subject: subject, Record: ref, Reason: strings.Repeat("长", 50000), Authentication: "a"}
	for _, c := range []struct {
		name string
		ep   *exchange.Endpoint
		peer string
		op   string
		body any
	}{
		{"rights.case: 150 KB of reason", city, d, rights.OpCase, hrCaseRequest{Action: "file", Filing: huge, Requester: hrPortal(f, regionOf(f, d), "p")}},
		{"rights.case: an unknown action", city, d, rights.OpCase, hrCaseRequest{Action: "delete", Filing: rights.Filing{Kind: storage.CaseObjection}, Requester: hrPortal(f, regionOf(f, d), "p")}},
		{"rights.case: a get of a 100 KB id", city, d, rights.OpCase, hrCaseRequest{Action: "get", ID: strings.Repeat("x", 100000), Filing: rights.Filing{Kind: storage.CaseObjection}, Requester: hrPortal(f, regionOf(f, d), "p")}},
		{"rights.records: 10 KB of subject", city, d, rights.OpRecords, hrRecordsRequest{Subject: strings.Repeat("1", 10000), Requester: hrPortal(f, "zhejiang", "p")}},
		{"rights.forward: an unknown kind", dist, cityName, rights.OpForward, hrForward{Kind: "everything", Subject: subject, Authentication: "a", Requester: hrPortal(f, regionOf(f, d), "p")}},
		{"rights.case.forward: an unknown action", dist, cityName, rights.OpCaseForward, hrCaseForward{Action: "delete", Filing: rights.Filing{Kind: storage.CaseObjection}, Requester: hrPortal(f, regionOf(f, d), "p")}},
		{"disclosure.list: a limit of a billion", city, d, "disclosure.list", hrDisclosureRequest{Limit: 1e9}},
	} {
		var out cbor.RawMessage
		err := c.ep.Call(ctxT(t, 30*time.Second), peerOf(t, f, c.peer), c.op, exchange.Meta{}, c.body, &out)
		code := exchange.CodeOf(err)
		if err == nil || code == "" || code == exchange.CodeInternal || code == exchange.CodeUnavailable {
			broken = append(broken, fmt.Sprintf("%s: %v (code %q)", c.name, err, code))
		}
	}
	// Nothing changed.
	rec, err := department(t, f, d).Record(ctxT(t, 30*time.Second), "MI-1")
	if err != nil || rec.Status != "active" || rec.Version != 1 {
		broken = append(broken, fmt.Sprintf("the record after the attempts: %+v, %v", rec, err))
	}
	for _, kind := range []string{"objections", "repairs"} {
		if got, err := department(t, f, d).Cases(ctxT(t, 30*time.Second), kind, "all"); err != nil || len(got.Cases) != 0 {
			broken = append(broken, fmt.Sprintf("%s after the attempts: %+v, %v", kind, got, err))
		}
	}
	if len(broken) > 0 {
		t.Fatalf("hostile input not refused cleanly:\n%s", strings.Join(broken, "\n"))
	}
}

// TestHostileRightsNoIdentifierInLogsMetricsOrErrors: every node logs at
// debug level while reports, access logs, objections, repairs, case reads,
// disclosure pages and audit reviews are asked with identifiers in every
// field that should not hold one — the case id, the state, the grounds,
// the record id of a ref, the cursor, the audit filters — and coordinators
// and districts speak the new exchange operations with an identifier as the
// kind or the action. No log line, metric or error message may hold an
// identifier.
func TestHostileRightsNoIdentifierInLogsMetricsOrErrors(t *testing.T) {
	logs := &lockedBuffer{}
	f := startFed(t, localfed.Spec{Districts: 1}, node.Options{Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	d := f.Districts()[0]
	cityName := hrCityOf(t, f, d)
	subject := credit.SyntheticPerson(32301, credit.NewDate(1983, 1, 14))
	nearMiss := subject[:17] + map[bool]string{true: "1", false: "0"}[subject[17] == '0']
	realID := "11010519491231002X"
	needles := map[string]string{"the subject": subject, "the subject one digit off": nearMiss, "a real identifier": realID,
		"the subject's birth digits": subject[6:17]}
	submit(t, f, d, record("NI-1", subject, "FOOD-DRUG-PENALTY", "日志"))
	waitIndexed(t, f, subject, 1)
	var messages []string
	note := func(err error) {
		if err != nil {
			messages = append(messages, hrMessage(err))
		}
	}
	p := portal(t, f, d)
	dept := department(t, f, d)
	auth := "实名认证 FACE-32301"
	for _, s := range []string{subject, nearMiss, realID} {
		_, _, err := p.Report(ctxT(t, 30*time.Second), api.SubjectRequest{Subject: s, Authentication: auth})
		note(err)
		_, err = p.AccessLog(ctxT(t, 30*time.Second), api.SubjectRequest{Subject: s, Authentication: auth})
		note(err)
	}
	for _, req := range []api.CaseRequest{
		{Subject: subject, Record: hrRef(f, d, subject), Reason: "r", Authentication: auth},
		{Subject: nearMiss, Record: hrRef(f, d, "NI-1"), Reason: "r", Authentication: auth},
		{Subject: subject, Record: regionOf(f, d) + "/" + subject + "/NI-1", Reason: "r", Authentication: auth},
		{Subject: subject, Record: subject + "/" + localfed.Department + "/NI-1", Reason: "r", Authentication: auth},
	} {
		_, err := p.File(ctxT(t, 30*time.Second), "objections", req)
		note(err)
	}
	_, err := p.File(ctxT(t, 30*time.Second), "repairs", api.CaseRequest{Subject: subject, Record: hrRef(f, d, "NI-1"), Grounds: subject, Authentication: auth})
	note(err)
	_, err = p.File(ctxT(t, 30*time.Second), "repairs", api.CaseRequest{Subject: subject, Record: hrRef(f, d, "NI-1"), Grounds: "donation", Authentication: auth})
	note(err) // too early
	for _, id := range []string{subject, "ob-" + strings.Repeat("a", 26) + "." + subject, "ob-" + strings.Repeat("a", 26) + ".zhejiang.quzhou." + subject} {
		_, err = p.Case(ctxT(t, 30*time.Second), "objections", id)
		note(err)
		_, err = dept.Case(ctxT(t, 30*time.Second), "objections", id)
		note(err)
		_, err = dept.Decide(ctxT(t, 30*time.Second), "objections", id, api.CaseDecision{Outcome: "upheld", Reason: "r"})
		note(err)
	}
	_, err = dept.Cases(ctxT(t, 30*time.Second), "objections", subject)
	note(err)
	for _, q := range []string{"?cursor=" + subject, "?limit=" + subject} {
		_, body, _ := getPublic(t, publicClient(t, f), f, d, q)
		messages = append(messages, body)
	}
	op := clientOf(t, f, d, f.Layout.Operator)
	for _, q := range []string{"operation=" + subject, "institution=" + subject, "pseudonym=" + subject, "from=" + subject, "cursor=" + subject} {
		var page json.RawMessage
		_, err := op.Do(ctxT(t, 30*time.Second), "GET", "/v1/audit?"+q, "", nil, &page)
		note(err)
	}
	// The exchange, spoken directly.
	city := bareEndpoint(t, f, nodeCertificate(t, f, cityName))
	dist := bareEndpoint(t, f, nodeCertificate(t, f, d))
	requester := hrPortal(f, regionOf(f, d), "p")
	var out cbor.RawMessage
	note(city.Call(ctxT(t, 30*time.Second), peerOf(t, f, d), rights.OpCase, exchange.Meta{},
		hrCaseRequest{Action: subject, Filing: rights.Filing{Kind: storage.CaseObjection, Subject: subject}, Requester: requester}, &out))
	note(city.Call(ctxT(t, 30*time.Second), peerOf(t, f, d), rights.OpCase, exchange.Meta{},
		hrCaseRequest{Action: "file", Filing: rights.Filing{Kind: storage.CaseObjection, Subject: nearMiss, Record: hrRef(f, d, "NI-1"), Reason: "r", Authentication: "a"}, Requester: requester}, &out))
	note(city.Call(ctxT(t, 30*time.Second), peerOf(t, f, d), rights.OpRecords, exchange.Meta{Authentication: subject},
		hrRecordsRequest{Subject: nearMiss, Requester: hrPortal(f, "zhejiang", subject)}, &out))
	note(dist.Call(ctxT(t, 30*time.Second), peerOf(t, f, cityName), rights.OpForward, exchange.Meta{},
		hrForward{Kind: subject, Subject: subject, Authentication: "a", Requester: requester}, &out))
	note(dist.Call(ctxT(t, 30*time.Second), peerOf(t, f, cityName), rights.OpCaseForward, exchange.Meta{},
		hrCaseForward{Action: subject, Filing: rights.Filing{Kind: storage.CaseObjection, Subject: subject}, Requester: requester}, &out))
	note(dist.Call(ctxT(t, 30*time.Second), peerOf(t, f, cityName), rights.OpCaseForward, exchange.Meta{},
		hrCaseForward{Action: "file", Filing: rights.Filing{Kind: subject, Subject: subject}, Requester: requester}, &out))

	metrics := allMetrics(t, f)
	all := logs.String()
	broken := leaks(all, metrics, messages, needles)
	t.Logf("%d bytes of debug log, %d of metrics, %d error messages", len(all), len(metrics), len(messages))
	if len(broken) > 0 {
		t.Fatal(strings.Join(broken, "\n"))
	}
}
