package consensus

import (
	"testing"

	"credfed/certs"
)

func TestCoordinatorPeersNearestAncestorFirst(t *testing.T) {
	regions := []Region{
		{Path: "zhejiang", Role: certs.Province, Exchange: "p:1"},
		{Path: "zhejiang/hangzhou", Role: certs.City, Exchange: "h:1"},
		{Path: "zhejiang/quzhou", Role: certs.City, Exchange: "q:1"},
		{Path: "zhejiang/quzhou/kecheng", Role: certs.District, Exchange: "k:1"},
		{Path: "zhejiang/lishui", Role: certs.City}, // no address yet
	}
	self := certs.Identity{Federation: "f", Role: certs.District, Region: "zhejiang/quzhou/kecheng"}
	var got []string
	for _, p := range CoordinatorPeers(regions, self) {
		got = append(got, p.Name)
		if p.Identity == nil || p.Identity.Region != p.Name || !p.Identity.Role.IsCoordinatorNode() {
			t.Fatalf("peer %+v", p)
		}
	}
	want := []string{"zhejiang/quzhou", "zhejiang", "zhejiang/hangzhou"}
	if len(got) != len(want) {
		t.Fatalf("%v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("%v, want %v", got, want)
		}
	}
	// A city asks its province first, never itself.
	city := certs.Identity{Federation: "f", Role: certs.City, Region: "zhejiang/quzhou"}
	if ps := CoordinatorPeers(regions, city); len(ps) != 2 || ps[0].Name != "zhejiang" {
		t.Fatalf("city: %+v", ps)
	}
}
