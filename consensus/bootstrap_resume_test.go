package consensus

import (
	"context"
	"testing"
	"time"

	"credfed/certs"
	"credfed/credit"
)

// TestBootstrapStoppedBeforeTheRegistryIsFinished: a bootstrap that
// stopped after Raft's configuration was written and before the registry
// was applied (here: no leader before its deadline; in life, a crash or a
// slow first election) left the federation without regions or catalog for
// good, since every later start took BootstrapCluster's refusal for a
// restart. The next Bootstrap, in the same process or after a restart,
// finishes it; one more after that changes nothing.
func TestBootstrapStoppedBeforeTheRegistryIsFinished(t *testing.T) {
	ca, err := certs.NewCA(fed, 0)
	if err != nil {
		t.Fatal(err)
	}
	c := &testCluster{t: t, ca: ca, nodes: map[string]*testNode{}}
	t.Cleanup(c.stopAll)
	prov := c.addNode("zhejiang", certs.Province)
	regions := []Region{{Path: "zhejiang", Role: certs.Province, Exchange: prov.addr, Voter: true}}

	gone, cancel := context.WithCancel(context.Background())
	cancel()
	if err := prov.rep.Bootstrap(gone, regions, credit.DefaultCatalog()); err == nil {
		t.Fatal("a bootstrap whose context had ended reported success")
	}
	if n := len(prov.rep.State().Regions()); n != 0 {
		t.Fatalf("the interrupted bootstrap registered %d regions", n)
	}

	// Restarted, as the node is after a failed first start.
	c.stop(prov)
	c.start(prov)
	if err := prov.rep.Bootstrap(ctxT(t, 20*time.Second), regions, credit.DefaultCatalog()); err != nil {
		t.Fatalf("the bootstrap after the restart: %v", err)
	}
	if got := prov.rep.State().Regions(); len(got) != 1 || prov.rep.State().Catalog() == nil {
		t.Fatalf("after the restart's bootstrap: %d regions, catalog %v", len(got), prov.rep.State().Catalog() != nil)
	}
	applied := prov.rep.State().Applied()

	// Started again: the registry is in place, nothing is applied twice.
	c.stop(prov)
	c.start(prov)
	if err := prov.rep.Bootstrap(ctxT(t, 20*time.Second), regions, credit.DefaultCatalog()); err != nil {
		t.Fatalf("the bootstrap of a federation that exists: %v", err)
	}
	if got := prov.rep.State().Regions(); len(got) != 1 {
		t.Errorf("after a later start: %d regions", len(got))
	}
	if now := prov.rep.State().Applied(); now < applied {
		t.Errorf("the state went back from index %d to %d", applied, now)
	}
}
