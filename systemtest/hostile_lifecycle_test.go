package systemtest

// Hostile tests of the operators' certificate control (lifecycle:
// revocation by serial, suspension and reinstatement of identities). The
// attackers: an operator of a city reaching beyond its city, users of
// other roles calling the operators' routes, an operator locking the
// federation out, holders of revoked certificates on live and new
// connections and across restarts, a hostile city node proposing commands
// its API would refuse, and careless or hostile input. Each test passes
// when the defence holds; a test of a defence that does not hold skips
// with "DEFECT:" and says what is wrong.

import (
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"credfed/api"
	"credfed/certs"
	"credfed/consensus"
	"credfed/credit"
	"credfed/internal/wait"
	"credfed/localfed"
	"credfed/node"
)

// defect skips a test whose attack works (a defect, described by msg), so
// that the suite stays green; CREDFED_SHOW_DEFECTS=1 runs it anyway.
func defect(t *testing.T, msg string) {
	t.Helper()
	if os.Getenv("CREDFED_SHOW_DEFECTS") == "" {
		t.Skip("DEFECT: " + msg)
	}
}

// wantCode fails the test unless err is an API refusal with the code.
func wantCode(t *testing.T, what string, err error, code string) {
	t.Helper()
	if got := api.Code(err); got != code {
		t.Errorf("%s: %v (code %q), want %s", what, err, got, code)
	}
}

// revocationsAt is the revocation list node name enforces, as the
// province's operator reads it there.
func revocationsAt(t *testing.T, f *localfed.Federation, name string) *api.RevocationList {
	t.Helper()
	var list *api.RevocationList
	wait.Until(t, 20*time.Second, "the revocation list at "+name, func() bool {
		var err error
		list, err = clientOf(t, f, name, f.Layout.Operator).Revocations(ctxT(t, 10*time.Second))
		return err == nil
	})
	return list
}

// serialOf is the decimal serial of a certificate file.
func serialOf(t *testing.T, path string) string {
	t.Helper()
	c, err := certs.LoadCertFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return certs.SerialString(c.SerialNumber)
}

// lifecycleAudit counts a node's audit entries of an operation by decision.
func lifecycleAudit(t *testing.T, f *localfed.Federation, name, op string) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, e := range auditEntries(t, f, name) {
		if e.Operation == op {
			out[e.Decision]++
		}
	}
	return out
}

// suspendedHas reports whether the list holds a suspension of identity.
func suspendedHas(l *api.RevocationList, identity string) (api.Suspended, bool) {
	for _, s := range l.Suspended {
		if s.Identity == identity {
			return s, true
		}
	}
	return api.Suspended{}, false
}

// cityOperatorID is the identity an operator of quzhou carries.
func cityOperatorID(f *localfed.Federation) certs.Identity {
	return certs.Identity{Federation: f.Layout.Federation, Role: certs.Operator, Region: "zhejiang/quzhou", Institution: "ops-qz"}
}

// TestHostileLifecycleCityOperatorStaysInItsCity: an operator of quzhou,
// through its own city node and through the province node, may not revoke
// by serial (federation-wide), nor suspend a department of hangzhou, the
// province's coordinator or operator, or the province node; it may suspend
// (and reinstate) a department of its own district. Through hangzhou's
// node or a district node it is refused outright. Refusals change nothing
// and are in the relaying node's audit log as denied.
func TestHostileLifecycleCityOperatorStaysInItsCity(t *testing.T) {
	f := startFed(t, localfed.Spec{Districts: 2}, node.Options{})
	ds := f.Districts()
	own, other := ds[0], ds[1] // kecheng (quzhou), xihu (hangzhou)
	if cityOf(t, f, own) != "quzhou" || cityOf(t, f, other) != "hangzhou" {
		t.Fatalf("unexpected layout: %s under %s, %s under %s", own, cityOf(t, f, own), other, cityOf(t, f, other))
	}
	opFiles := issueUser(t, f, "operator", "zhejiang/quzhou", "ops-qz")
	ownDept := f.Layout.Departments[own].Identity
	provinceNode := certs.Identity{Federation: f.Layout.Federation, Role: certs.Province, Region: "zhejiang"}.String()
	foreign := []string{f.Layout.Departments[other].Identity, f.Layout.Coordinator.Identity, f.Layout.Operator.Identity, provinceNode,
		f.Layout.Coordinators["hangzhou"].Identity}
	serial := serialOf(t, f.Layout.Departments[other].Cert)
	for _, via := range []string{"quzhou", f.Province()} {
		op := clientOf(t, f, via, opFiles)
		before := revocationsAt(t, f, f.Province())
		deniedBefore := lifecycleAudit(t, f, via, "cert.suspend")["denied"]
		_, err := op.Revoke(ctxT(t, 30*time.Second), api.RevokeRequest{Serial: serial, Reason: "city overreach"})
		wantCode(t, "a city operator revoking a serial via "+via, err, api.CodeForbidden)
		for _, id := range foreign {
			_, err := op.Suspend(ctxT(t, 30*time.Second), api.SuspendRequest{Identity: id, Reason: "city overreach"})
			wantCode(t, "a city operator suspending "+id+" via "+via, err, api.CodeForbidden)
		}
		after := revocationsAt(t, f, f.Province())
		if after.Version != before.Version || len(after.Revoked) != 0 || len(after.Suspended) != 0 {
			t.Fatalf("via %s the refusals changed the list: %+v -> %+v", via, before, after)
		}
		if got := lifecycleAudit(t, f, via, "cert.suspend")["denied"] - deniedBefore; got != len(foreign) {
			t.Errorf("via %s: %d denied cert.suspend entries in the audit, want %d", via, got, len(foreign))
		}
		// Its own district's department: allowed, then reinstated.
		if _, err := op.Suspend(ctxT(t, 30*time.Second), api.SuspendRequest{Identity: ownDept, Reason: "own district"}); err != nil {
			t.Fatalf("a city operator suspending its own district's department via %s: %v", via, err)
		}
		// The answer may predate the relaying node's apply (see
		// TestHostileLifecycleAnswerThroughAFollowerShowsTheCommand).
		wait.Until(t, 10*time.Second, "the suspension to be listed at "+via, func() bool {
			_, ok := suspendedHas(revocationsAt(t, f, via), ownDept)
			return ok
		})
		if _, err := op.Unsuspend(ctxT(t, 30*time.Second), ownDept); err != nil {
			t.Fatalf("a city operator reinstating its own district's department via %s: %v", via, err)
		}
		wait.Until(t, 10*time.Second, "the reinstatement to be listed at "+via, func() bool {
			_, ok := suspendedHas(revocationsAt(t, f, via), ownDept)
			return !ok
		})
	}
	// Through the other city's node: that node may not vouch for it.
	_, err := clientOf(t, f, "hangzhou", opFiles).Suspend(ctxT(t, 30*time.Second), api.SuspendRequest{Identity: ownDept})
	wantCode(t, "a quzhou operator through hangzhou's node", err, api.CodeForbidden)
	// Through a district node: no operator commands there.
	_, err = clientOf(t, f, own, opFiles).Suspend(ctxT(t, 30*time.Second), api.SuspendRequest{Identity: ownDept})
	wantCode(t, "a quzhou operator through a district node", err, api.CodeForbidden)
	if l := revocationsAt(t, f, f.Province()); len(l.Suspended) != 0 {
		t.Fatalf("suspensions left: %+v", l)
	}
}

// TestHostileLifecycleCityOperatorCannotLiftAProvinceSuspension: the
// province's operator suspends a department of quzhou (an investigation);
// quzhou's operator must not be able to lift it, nor to rewrite its reason
// by suspending it again.
func TestHostileLifecycleCityOperatorCannotLiftAProvinceSuspension(t *testing.T) {
	f := startFed(t, localfed.Spec{Districts: 1}, node.Options{})
	dept := f.Layout.Departments[f.Districts()[0]].Identity
	prov := clientOf(t, f, f.Province(), f.Layout.Operator)
	if _, err := prov.Suspend(ctxT(t, 30*time.Second), api.SuspendRequest{Identity: dept, Reason: "province investigation"}); err != nil {
		t.Fatal(err)
	}
	city := clientOf(t, f, "quzhou", issueUser(t, f, "operator", "zhejiang/quzhou", "ops-qz"))
	_, err := city.Suspend(ctxT(t, 30*time.Second), api.SuspendRequest{Identity: dept, Reason: "nothing to see"})
	if s, _ := suspendedHas(revocationsAt(t, f, f.Province()), dept); s.Reason != "province investigation" {
		t.Errorf("the city operator rewrote the province's suspension (%v): reason now %q", err, s.Reason)
	}
	_, err = city.Unsuspend(ctxT(t, 30*time.Second), dept)
	wantCode(t, "the city operator lifting the province's suspension", err, api.CodeForbidden)
	if _, ok := suspendedHas(revocationsAt(t, f, f.Province()), dept); !ok {
		t.Fatal("the province's suspension was lifted by the city's operator")
	}
}

// TestHostileLifecycleOtherRolesAreRefused: coordinators (province and
// city), a department and a portal call every lifecycle route at the
// province and at a city: all refused as forbidden, and the list's version
// does not move.
func TestHostileLifecycleOtherRolesAreRefused(t *testing.T) {
	f := startFed(t, localfed.Spec{Districts: 1}, node.Options{})
	d := f.Districts()[0]
	target := f.Layout.Departments[d]
	serial := serialOf(t, target.Cert)
	callers := map[string]localfed.ClientFiles{"province coordinator": f.Layout.Coordinator, "city coordinator": f.Layout.Coordinators["quzhou"],
		"department": f.Layout.Departments[d], "portal": f.Layout.Portals[d]}
	before := revocationsAt(t, f, f.Province())
	for who, files := range callers {
		for _, at := range []string{f.Province(), "quzhou", d} {
			c := clientOf(t, f, at, files)
			_, err := c.Revocations(ctxT(t, 10*time.Second))
			wantCode(t, who+" listing at "+at, err, api.CodeForbidden)
			_, err = c.Revoke(ctxT(t, 10*time.Second), api.RevokeRequest{Serial: serial})
			wantCode(t, who+" revoking at "+at, err, api.CodeForbidden)
			_, err = c.Suspend(ctxT(t, 10*time.Second), api.SuspendRequest{Identity: target.Identity})
			wantCode(t, who+" suspending at "+at, err, api.CodeForbidden)
			_, err = c.Unsuspend(ctxT(t, 10*time.Second), target.Identity)
			wantCode(t, who+" reinstating at "+at, err, api.CodeForbidden)
		}
	}
	for _, n := range []string{f.Province(), "quzhou", d} {
		if v := f.Node(n).Replica().State().Revocations().Version(); v != before.Version {
			t.Errorf("%s's list moved from version %d to %d", n, before.Version, v)
		}
	}
}

// TestHostileLifecycleOperatorLockout: what an operator can do to the
// operators. Observed and asserted: the province's operator may suspend
// its own identity (no refusal), and is then locked out on a new
// connection; quzhou's operator may suspend itself too, but cannot
// suspend the province's operator. Recovery needs a second operator
// identity of the province, issued by the CA: it lifts the suspension.
func TestHostileLifecycleOperatorLockout(t *testing.T) {
	f := startFed(t, localfed.Spec{Districts: 1}, node.Options{})
	provID := f.Layout.Operator.Identity
	cityFiles := issueUser(t, f, "operator", "zhejiang/quzhou", "ops-qz")
	city := clientOf(t, f, "quzhou", cityFiles)
	_, err := city.Suspend(ctxT(t, 30*time.Second), api.SuspendRequest{Identity: provID, Reason: "lock out"})
	wantCode(t, "the city operator suspending the province's operator", err, api.CodeForbidden)
	if _, err := city.Suspend(ctxT(t, 30*time.Second), api.SuspendRequest{Identity: cityFiles.Identity, Reason: "self"}); err != nil {
		t.Logf("the city operator suspending itself is refused: %v", err)
	} else {
		t.Logf("the city operator may suspend its own identity")
	}
	prov := clientOf(t, f, f.Province(), f.Layout.Operator)
	_, err = prov.Suspend(ctxT(t, 30*time.Second), api.SuspendRequest{Identity: provID, Reason: "self"})
	t.Logf("the province's operator suspending itself (the only operator identity of the province): %v", err)
	if err != nil {
		return // refused: nobody is locked out
	}
	wait.Until(t, 10*time.Second, "the self-suspended operator to be refused on a new connection", func() bool {
		c := clientOf(t, f, f.Province(), f.Layout.Operator)
		_, err := c.Revocations(ctxT(t, 5*time.Second))
		return err != nil
	})
	// Recovery: another operator identity of the province, from the CA.
	spare := clientOf(t, f, f.Province(), issueUser(t, f, "operator", "zhejiang", "operations-spare"))
	wait.Until(t, 20*time.Second, "a spare province operator to lift the lock-out", func() bool {
		_, err := spare.Unsuspend(ctxT(t, 10*time.Second), provID)
		return err == nil || api.Code(err) == api.CodeNotFound
	})
	wait.Until(t, 10*time.Second, "the province's operator to be served again", func() bool {
		_, err := clientOf(t, f, f.Province(), f.Layout.Operator).Revocations(ctxT(t, 5*time.Second))
		return err == nil
	})
}

// TestHostileLifecycleRevokedCertificatesStayOut: a second coordinator
// certificate (as a thief would hold) with kept-alive HTTPS connections at
// the province and a city, and a second node certificate of a district
// with a live QUIC connection to its city; both are revoked by serial. The
// kept-alive connections, new connections and the exchange refuse them
// within seconds; after the province and the city restart, the
// revocations are there at once and the certificates still refused.
func TestHostileLifecycleRevokedCertificatesStayOut(t *testing.T) {
	f := startFed(t, localfed.Spec{Districts: 1}, node.Options{})
	d := f.Districts()[0]
	stolen := issueUser(t, f, "coordinator", "zhejiang", "credit-office-stolen")
	alive := map[string]*api.Client{}
	for _, n := range []string{f.Province(), "quzhou"} {
		alive[n] = clientOf(t, f, n, stolen)
		if _, err := alive[n].Federation(ctxT(t, 10*time.Second)); err != nil {
			t.Fatalf("the stolen coordinator at %s before the revocation: %v", n, err)
		}
	}
	nodeCert := issueNode(t, f, certs.District, regionOf(f, d))
	ep := bareEndpoint(t, f, nodeCert)
	ids := []string{credit.SyntheticPerson(7171, credit.NewDate(1980, 7, 1))}
	if _, err := askPseudonyms(t, ep, peerOf(t, f, "quzhou"), ids); err != nil {
		t.Fatalf("the second district certificate before the revocation: %v", err)
	}
	op := clientOf(t, f, f.Province(), f.Layout.Operator)
	userSerial := serialOf(t, stolen.Cert)
	nodeSerial := certs.SerialString(nodeCert.Leaf.SerialNumber)
	for _, s := range []string{userSerial, nodeSerial} {
		if _, err := op.Revoke(ctxT(t, 30*time.Second), api.RevokeRequest{Serial: s, Reason: "stolen"}); err != nil {
			t.Fatal(err)
		}
	}
	revokedAt := time.Now()
	for n, c := range alive {
		wait.Until(t, 10*time.Second, "the kept-alive stolen coordinator to be refused at "+n, func() bool {
			_, err := c.Federation(ctxT(t, 5*time.Second))
			return api.Code(err) == api.CodeUnauthenticated
		})
		if _, err := clientOf(t, f, n, stolen).Federation(ctxT(t, 10*time.Second)); err == nil {
			t.Errorf("the revoked coordinator is served on a new connection at %s", n)
		}
	}
	wait.Until(t, 10*time.Second, "the revoked district certificate to be cut off the exchange", func() bool {
		_, err := askPseudonyms(t, ep, peerOf(t, f, "quzhou"), ids)
		return err != nil
	})
	t.Logf("revoked certificates refused everywhere %v after the revocation committed", time.Since(revokedAt).Round(time.Millisecond))
	uid, _ := certs.IdentityOf(mustLeaf(t, stolen))
	nid, _ := certs.IdentityOf(nodeCert.Leaf)
	for _, n := range []string{"quzhou", f.Province()} {
		if err := f.StopNode(ctxT(t, 30*time.Second), n); err != nil {
			t.Fatal(err)
		}
		if err := f.StartNode(n); err != nil {
			t.Fatal(err)
		}
		rl := f.Node(n).Replica().State().Revocations()
		if rl.Check(mustLeaf(t, stolen), uid) == nil || rl.Check(nodeCert.Leaf, nid) == nil {
			t.Errorf("%s restarted without the revocations (version %d)", n, rl.Version())
		}
		if err := f.WaitReady(ctxT(t, 30*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []string{f.Province(), "quzhou"} {
		if _, err := clientOf(t, f, n, stolen).Federation(ctxT(t, 10*time.Second)); err == nil {
			t.Errorf("the revoked coordinator is served at %s after its restart", n)
		}
	}
	ep2 := bareEndpoint(t, f, nodeCert)
	if _, err := askPseudonyms(t, ep2, peerOf(t, f, "quzhou"), ids); err == nil {
		t.Error("the revoked district certificate gets pseudonyms from the restarted city")
	}
	if l := revocationsAt(t, f, f.Province()); len(l.Revoked) != 2 {
		t.Errorf("the restarted province lists %d revocations, want 2", len(l.Revoked))
	}
}

func mustLeaf(t *testing.T, files localfed.ClientFiles) *x509.Certificate {
	t.Helper()
	c, err := certs.LoadCertFile(files.Cert)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestHostileLifecycleUnsuspendKeepsTheSerialRevoked: a department is
// suspended and its certificate revoked by serial; lifting the suspension
// lets a new certificate of the same identity in, never the revoked one.
func TestHostileLifecycleUnsuspendKeepsTheSerialRevoked(t *testing.T) {
	f := startFed(t, localfed.Spec{Districts: 1}, node.Options{})
	d := f.Districts()[0]
	files := f.Layout.Departments[d]
	op := clientOf(t, f, f.Province(), f.Layout.Operator)
	if _, err := op.Suspend(ctxT(t, 30*time.Second), api.SuspendRequest{Identity: files.Identity, Reason: "review"}); err != nil {
		t.Fatal(err)
	}
	if _, err := op.Revoke(ctxT(t, 30*time.Second), api.RevokeRequest{Serial: serialOf(t, files.Cert), Reason: "key lost"}); err != nil {
		t.Fatal(err)
	}
	list, err := op.Unsuspend(ctxT(t, 30*time.Second), files.Identity)
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Revoked) != 1 || len(list.Suspended) != 0 {
		t.Fatalf("after the reinstatement: %+v", list)
	}
	// Same identity, same institution: a renewal.
	renewed := issueUser(t, f, "department", regionOf(f, d), localfed.Department)
	if renewed.Identity != files.Identity {
		t.Fatalf("renewal identity %s != %s", renewed.Identity, files.Identity)
	}
	subject := credit.SyntheticPerson(8181, credit.NewDate(1979, 8, 1))
	wait.Until(t, 10*time.Second, "the renewed department certificate to be served at the district", func() bool {
		ans, _, err := clientOf(t, f, d, renewed).SubmitRecords(ctxT(t, 10*time.Second),
			[]api.RecordInput{record("UK-1", subject, "FOOD-DRUG-PENALTY", "renewed")})
		return err == nil && ans.Results[0].Status == api.StatusAccepted
	})
	_, _, err = clientOf(t, f, d, files).SubmitRecords(ctxT(t, 10*time.Second),
		[]api.RecordInput{record("UK-2", subject, "FOOD-DRUG-PENALTY", "revoked")})
	if err == nil {
		t.Fatal("the revoked department certificate submits again once its identity is reinstated")
	}
	if _, err := op.Unsuspend(ctxT(t, 30*time.Second), files.Identity); err != nil {
		t.Errorf("a second reinstatement (safe to repeat): %v", err)
	}
}

// TestHostileLifecycleReasonControlCharactersAndOversizeAreRefused: a
// reason with C0 control characters (an escape sequence, a NUL, a line
// break) or of 10 KB is a typed refusal naming the field, whichever
// command carries it, and changes nothing.
func TestHostileLifecycleReasonControlCharactersAndOversizeAreRefused(t *testing.T) {
	f := startFed(t, localfed.Spec{Districts: 1}, node.Options{})
	op := clientOf(t, f, f.Province(), f.Layout.Operator)
	dept := f.Layout.Departments[f.Districts()[0]]
	before := revocationsAt(t, f, f.Province())
	for what, reason := range map[string]string{"an escape sequence": "\x1b[2J\x1b[31mrevoked by CA", "a NUL": "a\x00b",
		"a line break": "one\nrevoked serial 1", "a DEL": "x\x7f", "10 KB": strings.Repeat("理", 10*1024/3)} {
		_, err := op.Revoke(ctxT(t, 10*time.Second), api.RevokeRequest{Serial: serialOf(t, dept.Cert), Reason: reason})
		wantField(t, "a revocation reason with "+what, err, "reason")
		_, err = op.Suspend(ctxT(t, 10*time.Second), api.SuspendRequest{Identity: dept.Identity, Reason: reason})
		wantField(t, "a suspension reason with "+what, err, "reason")
	}
	if after := revocationsAt(t, f, f.Province()); after.Version != before.Version {
		t.Fatalf("refused reasons moved the list from %d to %d", before.Version, after.Version)
	}
	// 256 bytes exactly is the bound, and accepted.
	if _, err := op.Suspend(ctxT(t, 30*time.Second), api.SuspendRequest{Identity: dept.Identity, Reason: strings.Repeat("key lost ", 28) + "abcd"}); err != nil {
		t.Fatalf("a 256-byte reason: %v", err)
	}
}

// wantField fails unless err is a bad_request naming field.
func wantField(t *testing.T, what string, err error, field string) {
	t.Helper()
	var se *api.StatusError
	if !errors.As(err, &se) || se.Err.Code != api.CodeBadRequest || se.Err.Field != field {
		t.Errorf("%s: %v, want bad_request on field %s", what, err, field)
	}
}

// TestHostileLifecycleReasonInvisibleCharactersAreRefused: record text,
// lookups and cases refuse format and invisible characters (credit.TextRune);
// a reason, shown in credfed certs list on an operator's terminal and in
// every refusal of the certificate, must too: a C1 CSI (U+009B, an escape
// on many terminals), a right-to-left override, a zero-width space.
func TestHostileLifecycleReasonInvisibleCharactersAreRefused(t *testing.T) {
	f := startFed(t, localfed.Spec{Districts: 1}, node.Options{})
	op := clientOf(t, f, f.Province(), f.Layout.Operator)
	dept := f.Layout.Departments[f.Districts()[0]]
	before := revocationsAt(t, f, f.Province())
	for what, reason := range map[string]string{"a C1 CSI": "a\u009b2Jb", "a right-to-left override": "key \u202elost",
		"a zero-width space": "key\u200blost"} {
		_, err := op.Suspend(ctxT(t, 10*time.Second), api.SuspendRequest{Identity: dept.Identity, Reason: reason})
		wantField(t, "a suspension reason with "+what, err, "reason")
	}
	if after := revocationsAt(t, f, f.Province()); after.Version != before.Version {
		t.Fatalf("reasons with invisible characters moved the list from %d to %d: %+v", before.Version, after.Version, after.Suspended)
	}
}

// TestHostileLifecycleCityNodeCannotBypassTheReasonChecks: a hostile city
// node (its certificate and binary in an insider's hands) proposes a
// suspension in its own city for an operator it vouches for, with a
// reason its API would refuse (10 KB with an escape sequence). The FSM is
// where every replica decides alike: it must refuse it.
func TestHostileLifecycleCityNodeCannotBypassTheReasonChecks(t *testing.T) {
	f := startFed(t, localfed.Spec{Districts: 1}, node.Options{})
	dept := f.Layout.Departments[f.Districts()[0]].Identity
	reason := strings.Repeat("x", 10*1024) + "\x1b[2J"
	var err error
	wait.Until(t, 20*time.Second, "the hostile proposal to be decided", func() bool {
		_, err = f.Node("quzhou").Replica().Apply(ctxT(t, 10*time.Second), consensus.CmdSuspend, cityOperatorID(f),
			certs.Suspension{Identity: dept, Reason: reason})
		var re *consensus.RefusedError
		return err == nil || errors.As(err, &re)
	})
	if err == nil {
		s, _ := suspendedHas(revocationsAt(t, f, f.Province()), dept)
		t.Fatalf("the FSM accepted a %d-byte reason with an escape sequence from a city node", len(s.Reason))
	}
	if !errors.Is(err, consensus.ErrInvalid) {
		t.Errorf("refused as %v, want ErrInvalid", err)
	}
}

// TestHostileLifecycleIdentifierInAReasonIsNotLoggedOrEchoed: an operator
// names a citizen's identifier in a revocation reason. Observed: the
// service accepts it (it is stored in Raft and listed to operators).
// The revoked holder then connects, kept-alive and new, at two nodes.
// Asserted: the identifier appears in no log line of any node and in no
// refusal the revoked holder receives, on a kept-alive or a new
// connection (certs.VerifyError carries the reason; the API does not show
// it).
func TestHostileLifecycleIdentifierInAReasonIsNotLoggedOrEchoed(t *testing.T) {
	logs := &lockedBuffer{}
	f := startFed(t, localfed.Spec{Districts: 1}, node.Options{Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	subject := credit.SyntheticPerson(9191, credit.NewDate(1990, 9, 1))
	stolen := issueUser(t, f, "coordinator", "zhejiang", "credit-office-id")
	alive := clientOf(t, f, f.Province(), stolen)
	if _, err := alive.Federation(ctxT(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	op := clientOf(t, f, f.Province(), f.Layout.Operator)
	_, err := op.Revoke(ctxT(t, 30*time.Second), api.RevokeRequest{Serial: serialOf(t, stolen.Cert), Reason: "泄露了 " + subject + " 的记录"})
	if err != nil {
		t.Logf("a reason with an identifier is refused: %v", err)
		if strings.Contains(err.Error(), subject) {
			t.Errorf("the refusal echoes the identifier: %v", err)
		}
		return
	}
	t.Log("a reason with a raw identifier is accepted and stored in Raft")
	var messages []string
	wait.Until(t, 10*time.Second, "the revoked coordinator to be refused", func() bool {
		_, err := alive.Federation(ctxT(t, 5*time.Second))
		if err != nil {
			messages = append(messages, err.Error())
		}
		return err != nil
	})
	wait.Until(t, 10*time.Second, "the revoked coordinator to be refused at quzhou on a new connection", func() bool {
		_, err := clientOf(t, f, "quzhou", stolen).Federation(ctxT(t, 5*time.Second))
		if err != nil {
			messages = append(messages, err.Error())
		}
		return err != nil
	})
	t.Logf("the refusals the revoked holder got: %q", messages)
	if len(messages) < 2 {
		t.Fatalf("the revoked coordinator got %d refusals, want one on each connection", len(messages))
	}
	if l := revocationsAt(t, f, f.Province()); len(l.Revoked) == 1 && strings.Contains(l.Revoked[0].Reason, subject) {
		t.Log("GET /v1/revocations shows the raw identifier to every operator")
	}
	for _, m := range messages {
		if strings.Contains(m, subject) {
			t.Errorf("the refusal the revoked holder gets holds the identifier: %.300s", strings.ReplaceAll(m, subject, "<subject>"))
		}
	}
	if all := logs.String(); strings.Contains(all, subject) {
		i := strings.Index(all, subject)
		line := all[strings.LastIndex(all[:i], "\n")+1:]
		line = line[:max(strings.Index(line, "\n"), 0)]
		t.Errorf("the identifier is in a node's log: %.300s", strings.ReplaceAll(line, subject, "<subject>"))
	}
}

// TestHostileLifecycleBadInputIsTypedAndChangesNothing: serials in hex
// without 0x, negative, zero, with letters; identities of another
// federation, malformed URIs, an empty one; JSON with unknown fields,
// two values, a wrong type, nothing: each a bad_request (naming the field
// where one is at fault) that changes nothing. Refusals the service sees
// are audited as denied; bodies that never decode are not (reported).
func TestHostileLifecycleBadInputIsTypedAndChangesNothing(t *testing.T) {
	f := startFed(t, localfed.Spec{Districts: 1}, node.Options{})
	op := clientOf(t, f, f.Province(), f.Layout.Operator)
	before := revocationsAt(t, f, f.Province())
	auditBefore := len(auditEntries(t, f, f.Province()))
	serials := []string{"12ab", "-5", "0", "", " ", "1e9", "12 34", "0x", "0xzz", "١٢٣"}
	for _, s := range serials {
		_, err := op.Revoke(ctxT(t, 10*time.Second), api.RevokeRequest{Serial: s})
		wantField(t, fmt.Sprintf("serial %q", s), err, "serial")
	}
	d := f.Districts()[0]
	identities := []string{"spiffe://other/department/zhejiang/quzhou/" + d + "/" + localfed.Department, "not-a-uri", "",
		"spiffe://demo/department", "spiffe://demo/department/zhejiang", "http://demo/department/zhejiang/x/y",
		"spiffe://demo:1/department/zhejiang/x", "spiffe://demo/department/zhejiang/x?y=1", "spiffe://demo/%zz/x",
		"spiffe://demo/emperor/zhejiang", "spiffe://user@demo/operator/zhejiang/x"}
	for _, id := range identities {
		_, err := op.Suspend(ctxT(t, 10*time.Second), api.SuspendRequest{Identity: id})
		if api.Code(err) != api.CodeBadRequest {
			t.Errorf("suspending %q: %v, want bad_request", id, err)
		}
		if err != nil && id != "" && strings.Contains(err.Error(), id) {
			t.Logf("the refusal of %q echoes it (an identity, not a citizen identifier): %v", id, err)
		}
		_, err = op.Unsuspend(ctxT(t, 10*time.Second), id)
		if c := api.Code(err); c != api.CodeBadRequest && c != api.CodeNotFound {
			t.Errorf("reinstating %q: %v, want bad_request or not_found", id, err)
		}
	}
	audited := len(auditEntries(t, f, f.Province())) - auditBefore
	t.Logf("%d service-level refusals, %d new audit entries at the province", len(serials)+2*len(identities), audited)
	if audited != len(serials)+2*len(identities) {
		t.Errorf("%d audit entries for %d refused commands", audited, len(serials)+2*len(identities))
	}

	// Bodies the API decodes (never reaching the service).
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsConfig(t, f, f.Layout.Operator)}}
	t.Cleanup(hc.CloseIdleConnections)
	base := "https://" + f.Node(f.Province()).APIAddr()
	auditBefore = len(auditEntries(t, f, f.Province()))
	for _, b := range []struct{ path, body string }{
		{"/v1/revocations", `{"serial":"5","reason":"x","force":true}`},
		{"/v1/revocations", `{"serial":"5"}{"serial":"6"}`},
		{"/v1/revocations", `{"serial":5}`},
		{"/v1/revocations", ``},
		{"/v1/revocations", `{"serial":"5"`},
		{"/v1/suspensions", `{"identity":"` + f.Layout.Departments[d].Identity + `","actor":"spiffe://demo/operator/zhejiang/x"}`},
		{"/v1/suspensions", `[]`},
	} {
		resp, err := hc.Post(base+b.path, "application/json", bytes.NewBufferString(b.body))
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		buf.ReadFrom(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(buf.String(), api.CodeBadRequest) {
			t.Errorf("POST %s %q: %d %s, want 400 bad_request", b.path, b.body, resp.StatusCode, buf.String())
		}
	}
	t.Logf("undecodable bodies: %d new audit entries at the province", len(auditEntries(t, f, f.Province()))-auditBefore)
	req, _ := http.NewRequest("DELETE", base+"/v1/suspensions", nil)
	if resp, err := hc.Do(req); err != nil {
		t.Fatal(err)
	} else {
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("DELETE /v1/suspensions without an identity: %d, want 400", resp.StatusCode)
		}
	}
	if after := revocationsAt(t, f, f.Province()); after.Version != before.Version || len(after.Revoked)+len(after.Suspended) != 0 {
		t.Fatalf("bad input changed the list: %+v", after)
	}
}

// TestHostileLifecycleHugeSerialIsRefused: X.509 serials are at most 20
// octets (RFC 5280 4.1.2.2), 49 decimal digits; a 1000-digit "serial"
// can match no certificate and only grows the replicated list.
func TestHostileLifecycleHugeSerialIsRefused(t *testing.T) {
	f := startFed(t, localfed.Spec{Districts: 1}, node.Options{})
	op := clientOf(t, f, f.Province(), f.Layout.Operator)
	before := revocationsAt(t, f, f.Province())
	huge := "1" + strings.Repeat("0", 999)
	_, err := op.Revoke(ctxT(t, 30*time.Second), api.RevokeRequest{Serial: huge})
	wantField(t, "a 1000-digit serial", err, "serial")
	// The largest serial a certificate can have is accepted.
	max := new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 159), big.NewInt(1)).String()
	if _, err := op.Revoke(ctxT(t, 30*time.Second), api.RevokeRequest{Serial: max}); err != nil {
		t.Errorf("a 20-octet serial: %v", err)
	}
	if after := revocationsAt(t, f, f.Province()); len(after.Revoked) != 1 || after.Version != before.Version+1 {
		t.Fatalf("after the huge and the largest serial: %d revoked, version %d -> %d", len(after.Revoked), before.Version, after.Version)
	}
}

// TestHostileLifecycleConcurrentRevocationsAllLand: 20 revocations of
// distinct serials at once, each repeated while its outcome is unknown (it
// is safe to repeat): all 20 are listed at every coordinator node and the
// version moved by exactly 20.
func TestHostileLifecycleConcurrentRevocationsAllLand(t *testing.T) {
	f := startFed(t, localfed.Spec{Districts: 1}, node.Options{})
	before := revocationsAt(t, f, f.Province())
	const n = 20
	serials := make([]string, n)
	for i := range serials {
		serials[i] = fmt.Sprint(900000000000 + i*7919)
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			op := clientOf(t, f, f.Province(), f.Layout.Operator)
			var last error
			if err := wait.For(ctxT(t, 60*time.Second), 50*time.Millisecond, func() bool {
				_, last = op.Revoke(ctxT(t, 30*time.Second), api.RevokeRequest{Serial: serials[i], Reason: fmt.Sprint("batch ", i)})
				c := api.Code(last)
				return last == nil || (c != api.CodeUnavailable && c != api.CodeDeadlineExceeded)
			}); err != nil {
				last = fmt.Errorf("%w (last answer: %v)", err, last)
			}
			errs[i] = last
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("revocation %d: %v", i, err)
		}
	}
	for _, name := range []string{f.Province(), "quzhou", "hangzhou"} {
		var got *api.RevocationList
		wait.Until(t, 20*time.Second, name+" to list every revocation", func() bool {
			got = revocationsAt(t, f, name)
			return len(got.Revoked) >= n
		})
		seen := map[string]bool{}
		for _, r := range got.Revoked {
			seen[r.Serial] = true
		}
		for _, s := range serials {
			if !seen[s] {
				t.Errorf("%s lost the revocation of %s", name, s)
			}
		}
		if len(got.Revoked) != n || got.Version != before.Version+n {
			t.Errorf("%s: %d revoked, version %d -> %d, want %d and +%d", name, len(got.Revoked), before.Version, got.Version, n, n)
		}
	}
}

// TestHostileLifecycleAnswerThroughAFollowerShowsTheCommand: an operator
// sends commands through a node that is not the Raft leader; the list each
// answer carries (what credfed certs prints) must hold the command that
// just committed, not the follower's list from before it applied it.
func TestHostileLifecycleAnswerThroughAFollowerShowsTheCommand(t *testing.T) {
	f := startFed(t, localfed.Spec{Districts: 2}, node.Options{})
	leader := leaderName(t, f)
	via := "quzhou"
	if leader == via {
		via = "hangzhou"
	}
	if leader == via {
		t.Fatal("no follower city")
	}
	op := clientOf(t, f, via, f.Layout.Operator)
	if via != f.Province() {
		// The province's operator is not vouched for by a city: use a
		// province-wide relay only through the province, else a city's own.
		op = clientOf(t, f, via, issueUser(t, f, "operator", regionOf(f, via), "ops-"+via))
	}
	stale, sent := 0, 0
	for i, d := range f.Districts() {
		if cityOf(t, f, d) != via {
			continue
		}
		for k := range 5 {
			id := certs.Identity{Federation: f.Layout.Federation, Role: certs.Department, Region: regionOf(f, d), Institution: fmt.Sprintf("dept-%d-%d", i, k)}.String()
			list, err := op.Suspend(ctxT(t, 30*time.Second), api.SuspendRequest{Identity: id, Reason: "x"})
			if err != nil {
				t.Fatal(err)
			}
			sent++
			if _, ok := suspendedHas(list, id); !ok {
				stale++
			}
		}
	}
	if sent == 0 {
		t.Fatal("no district under the follower city")
	}
	if stale > 0 {
		t.Fatalf("%d of %d answers through follower %s do not list the suspension just committed", stale, sent, via)
	}
}
