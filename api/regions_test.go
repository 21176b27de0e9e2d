package api

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestJoinTokenRoundTripAndRefusals(t *testing.T) {
	tok := JoinToken{Federation: "demo", Region: "zj/qz/kh", Role: "district", Secret: bytes.Repeat([]byte{7}, 32),
		API: "https://127.0.0.1:8443", CA: bytes.Repeat([]byte{9}, 400), Node: "spiffe://demo/province/zj"}
	s := tok.String()
	got, err := ParseJoinToken("  " + s + "\n")
	if err != nil || got.Region != tok.Region || !bytes.Equal(got.Secret, tok.Secret) || got.API != tok.API {
		t.Fatalf("round trip: %+v %v", got, err)
	}
	bad := func(mut func(*JoinToken)) string {
		c := tok
		c.Secret, c.CA = bytes.Clone(tok.Secret), bytes.Clone(tok.CA)
		mut(&c)
		return c.String()
	}
	for name, in := range map[string]string{
		"empty":         "",
		"no prefix":     strings.TrimPrefix(s, joinTokenPrefix),
		"not base64":    joinTokenPrefix + "!!!",
		"not json":      joinTokenPrefix + "bm90IGpzb24",
		"short secret":  bad(func(c *JoinToken) { c.Secret = c.Secret[:16] }),
		"no CA":         bad(func(c *JoinToken) { c.CA = nil }),
		"http coord":    bad(func(c *JoinToken) { c.API = "http://127.0.0.1:8443" }),
		"no region":     bad(func(c *JoinToken) { c.Region = "" }),
		"no node":       bad(func(c *JoinToken) { c.Node = "" }),
		"other fed":     bad(func(c *JoinToken) { c.Node = "spiffe://other/province/zj" }),
		"too long":      s + strings.Repeat("A", MaxJoinToken),
		"unknown field": joinTokenPrefix + "eyJ4IjoxfQ",
	} {
		if _, err := ParseJoinToken(in); !errors.Is(err, ErrBadJoinToken) {
			t.Errorf("%s: got %v, want ErrBadJoinToken", name, err)
		}
	}
}
