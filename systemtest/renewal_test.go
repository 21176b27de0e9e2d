package systemtest

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"credfed/api"
	"credfed/certs"
	"credfed/credit"
	"credfed/internal/wait"
	"credfed/localfed"
)

// renewalLine is a node's count of its own certificate renewals and
// failures from its metrics.
var renewalLine = regexp.MustCompile(`(?m)^credfed_certificate_renewals_total\{result="(renewed|failed)"\} (\d+)`)

func renewalsOf(t *testing.T, metricsAddr string) (renewed, failed int) {
	t.Helper()
	body, err := httpGet("http://" + metricsAddr + "/metrics")
	if err != nil {
		return -1, -1
	}
	for _, m := range renewalLine.FindAllStringSubmatch(body, -1) {
		n, _ := strconv.Atoi(m[2])
		if m[1] == "renewed" {
			renewed = n
		} else {
			failed = n
		}
	}
	return renewed, failed
}

// TestCertificatesRenewUnderLookupLoad runs a federation of separate node
// processes whose certificates live one minute: every node renews its own
// certificate (through the province's intermediate CA) at two thirds of
// its life, again and again, while coordinators look a subject up without
// pause; no lookup fails, every renewal is signed by the intermediate and
// lands on disk, and connections move to the new certificates before the
// old ones expire.
func TestCertificatesRenewUnderLookupLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the federation as processes for minutes; not in -short")
	}
	rounds := 3 // each node renews at least this often: at once, then every 40 s (the last two under load)
	if os.Getenv("CREDFED_LONG") != "" {
		rounds = 5
	}
	// The first certificates are 40 s old: each node renews at once, then
	// every 40 s.
	pf := startProcFedSpec(t, localfed.Spec{Districts: 2, NodeValidity: time.Minute, NodeCertAge: 40 * time.Second}, nil)
	l := pf.layout
	district := l.Districts()[0]
	subject := credit.SyntheticPerson(5151, credit.NewDate(1979, 4, 4))
	if _, _, err := pf.client(district, l.Departments[district]).SubmitRecords(ctxT(t, 30*time.Second),
		[]api.RecordInput{record("RN-1", subject, "FOOD-DRUG-PENALTY", "renewal")}); err != nil {
		t.Fatal(err)
	}
	var coordinators []string
	for _, n := range l.Nodes {
		if n.Role.IsCoordinatorNode() {
			coordinators = append(coordinators, n.Name)
		}
	}
	lookup := func(c *api.Client) error {
		a, err := c.Lookup(ctxT(t, 20*time.Second), api.LookupRequest{Subject: subject, Purpose: "ADMIN-LICENSING", User: "u", Reference: "renewal"})
		if err != nil {
			return err
		}
		if len(a.Districts) != 1 || len(a.Districts[0].Records) != 1 {
			return fmt.Errorf("answer %+v", a)
		}
		return nil
	}
	for _, name := range coordinators {
		c := pf.client(name, l.Coordinators[name])
		wait.Until(t, 60*time.Second, name+" to find the subject", func() bool { return lookup(c) == nil })
	}
	issued := map[string]string{} // node → serial of its first certificate
	for _, n := range l.Nodes {
		c, err := certs.LoadCertFile(nodeCertPath(n))
		if err != nil {
			t.Fatal(err)
		}
		issued[n.Name] = certs.SerialString(c.SerialNumber)
	}

	var lookups, failures atomic.Int64
	var firstFailure atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, name := range coordinators {
		for w := 0; w < 2; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c := pf.client(name, l.Coordinators[name])
				for i := 0; i < 1_000_000; i++ {
					select {
					case <-stop:
						return
					default:
					}
					if err := lookup(c); err != nil {
						failures.Add(1)
						firstFailure.CompareAndSwap(nil, fmt.Sprintf("%s: %v", name, err))
					}
					lookups.Add(1)
				}
			}()
		}
	}
	deadline := time.Duration(rounds)*40*time.Second + 30*time.Second
	wait.Until(t, deadline, fmt.Sprintf("every node to renew its certificate %d times", rounds), func() bool {
		for _, n := range l.Nodes {
			if r, _ := renewalsOf(t, n.Metrics); r < rounds {
				return false
			}
		}
		return true
	})
	close(stop)
	wg.Wait()
	if n := failures.Load(); n > 0 {
		t.Errorf("%d of %d lookups failed during the renewals; first: %v", n, lookups.Load(), firstFailure.Load())
	}
	if lookups.Load() < 100 {
		t.Errorf("only %d lookups ran: the load proves little", lookups.Load())
	}
	for _, n := range l.Nodes {
		renewed, failed := renewalsOf(t, n.Metrics)
		c, err := certs.LoadCertFile(nodeCertPath(n))
		if err != nil {
			t.Fatal(err)
		}
		if certs.SerialString(c.SerialNumber) == issued[n.Name] {
			t.Errorf("%s: the certificate on disk is still the first one", n.Name)
		}
		if c.Issuer.CommonName == c.Subject.CommonName || c.Issuer.CommonName != "credfed "+l.Federation+" intermediate "+localfed.IntermediateName {
			t.Errorf("%s: renewed certificate issued by %q, want the intermediate", n.Name, c.Issuer.CommonName)
		}
		if left := time.Until(c.NotAfter); left < 15*time.Second || left > 70*time.Second {
			t.Errorf("%s: renewed certificate expires in %v: not a one-minute certificate renewed in time", n.Name, left)
		}
		t.Logf("%s: %d renewals, %d failed attempts", n.Name, renewed, failed)
	}
	t.Logf("%d lookups during the renewals, %d failed", lookups.Load(), failures.Load())
}

func nodeCertPath(n localfed.Node) string {
	return filepath.Join(filepath.Dir(n.ConfigPath), n.Name+".pem")
}
