package certs

import (
	"math/rand/v2"
	"testing"
)

// TestIdentityStringIsURIString: String, built by hand when no part needs
// escaping, is byte for byte URI().String() for identities of every kind:
// valid ones, empty parts, and parts with characters net/url escapes or
// that change its output (a host with '/', ':', '%', spaces, non-ASCII, a
// path with "//" or "..").
func TestIdentityStringIsURIString(t *testing.T) {
	fixed := []Identity{
		{},
		{Federation: "demo", Role: District, Region: "zhejiang/hangzhou/xihu"},
		{Federation: "demo", Role: Department, Region: "zhejiang/hangzhou/xihu", Institution: "tax"},
		{Federation: "demo", Role: Province, Region: "zhejiang"},
		{Role: District, Region: "zhejiang"},
		{Federation: "demo"},
		{Federation: "de/mo", Role: District, Region: "a"},
		{Federation: "demo:1", Role: District, Region: "a"},
		{Federation: "demo", Role: "dis trict", Region: "a"},
		{Federation: "demo", Role: District, Region: "a//b/../c", Institution: "x/y"},
		{Federation: "demo", Role: District, Region: "浙江", Institution: "税务"},
		{Federation: "demo", Role: District, Region: "a%2Fb", Institution: "q?x#y"},
		{Federation: "DEMO.example-1_x", Role: "Operator", Region: "Z/h_2.3-4"},
	}
	for _, id := range fixed {
		if got, want := id.String(), id.URI().String(); got != want {
			t.Errorf("%#v: String %q, URI().String() %q", id, got, want)
		}
	}
	const alphabet = "abcXYZ019-._/:%?#@ ~+!é[]"
	r := rand.New(rand.NewPCG(1, 2))
	part := func() string {
		b := make([]rune, r.IntN(6))
		rs := []rune(alphabet)
		for i := range b {
			b[i] = rs[r.IntN(len(rs))]
		}
		return string(b)
	}
	for range 20000 {
		id := Identity{Federation: part(), Role: Role(part()), Region: part(), Institution: part()}
		if got, want := id.String(), id.URI().String(); got != want {
			t.Fatalf("%#v: String %q, URI().String() %q", id, got, want)
		}
	}
}

func BenchmarkIdentityString(b *testing.B) {
	id := Identity{Federation: "demo", Role: Department, Region: "zhejiang/hangzhou/xihu", Institution: "tax"}
	b.Run("String", func(b *testing.B) {
		for b.Loop() {
			_ = id.String()
		}
	})
	b.Run("URI.String", func(b *testing.B) {
		for b.Loop() {
			_ = id.URI().String()
		}
	})
}
