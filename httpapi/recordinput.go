package httpapi

import (
	"unicode/utf16"
	"unicode/utf8"

	"credfed/api"
)

// fastRecordInput reads the common shape of a submitted record without
// reflection: one JSON object on its own (blanks around it allowed) whose
// members are each one of api.RecordInput's fields, spelled exactly as
// its tags, at most once, with a string value of valid UTF-8 and at most
// simple escapes. ok is false for anything else — unknown, misspelt or
// repeated fields, surrogate escapes, null or other types, malformed
// JSON, more after the object — and the caller reads it with
// encoding/json instead, which gives the same value when both read it and
// the refusal otherwise. So this is only a shortcut: what it accepts,
// encoding/json with DisallowUnknownFields decodes to the same
// api.RecordInput, followed by the end of the input
// (TestFastRecordInputAgrees, FuzzFastRecordInput). It exists for the
// intake's CPU: encoding/json's reflective decoding was most of the
// district's record parsing (docs/BENCHMARKS.md, "Lookups in batches per
// district…", Intake); every record of every submission goes through it.
func fastRecordInput(b []byte) (in api.RecordInput, ok bool) {
	i := skipBlank(b, 0)
	if i >= len(b) || b[i] != '{' {
		return in, false
	}
	i = skipBlank(b, i+1)
	if i < len(b) && b[i] == '}' {
		return in, skipBlank(b, i+1) == len(b)
	}
	var seen uint16
	for {
		key, j, ok := fastString(b, i)
		if !ok {
			return in, false
		}
		i = skipBlank(b, j)
		if i >= len(b) || b[i] != ':' {
			return in, false
		}
		val, j, ok := fastString(b, skipBlank(b, i+1))
		if !ok {
			return in, false
		}
		f, bit := recordInputField(&in, key)
		if f == nil || seen&bit != 0 {
			return in, false
		}
		seen |= bit
		*f = string(val)
		i = skipBlank(b, j)
		if i >= len(b) {
			return in, false
		}
		switch b[i] {
		case ',':
			i = skipBlank(b, i+1)
		case '}':
			return in, skipBlank(b, i+1) == len(b)
		default:
			return in, false
		}
	}
}

// fastString reads the JSON string starting at b[i] (its quote) and
// returns its content and the index after its closing quote; ok is false
// if there is none there, or if it holds a control character, invalid
// UTF-8 (which encoding/json would refuse or replace), or an escape other
// than the two-character ones and \uXXXX of a non-surrogate. The content
// is b's bytes, or a new slice when it was unescaped.
func fastString(b []byte, i int) (s []byte, next int, ok bool) {
	if i >= len(b) || b[i] != '"' {
		return nil, 0, false
	}
	ascii := true
	for j := i + 1; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			s = b[i+1 : j]
			if !ascii && !utf8.Valid(s) {
				return nil, 0, false
			}
			return s, j + 1, true
		case c == '\\':
			return unescapeString(b, i+1, j)
		case c < 0x20:
			return nil, 0, false
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	return nil, 0, false
}

// unescapeString goes on with fastString's string whose content starts at
// b[from] and whose first escape is at b[at].
func unescapeString(b []byte, from, at int) (s []byte, next int, ok bool) {
	out := make([]byte, 0, len(b)-from)
	out = append(out, b[from:at]...)
	for j := at; j < len(b); {
		c := b[j]
		switch {
		case c == '"':
			if !utf8.Valid(out) {
				// Escapes write whole runes: out is valid exactly when
				// the raw bytes around them are.
				return nil, 0, false
			}
			return out, j + 1, true
		case c < 0x20:
			return nil, 0, false
		case c != '\\':
			out = append(out, c)
			j++
			continue
		}
		if j+1 >= len(b) {
			return nil, 0, false
		}
		switch e := b[j+1]; e {
		case '"', '\\', '/':
			out = append(out, e)
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r, ok := hex4(b, j+2)
			if !ok || utf16.IsSurrogate(r) {
				return nil, 0, false
			}
			out = utf8.AppendRune(out, r)
			j += 6
			continue
		default:
			return nil, 0, false
		}
		j += 2
	}
	return nil, 0, false
}

// hex4 reads the four hex digits at b[i:].
func hex4(b []byte, i int) (rune, bool) {
	if i+4 > len(b) {
		return 0, false
	}
	var r rune
	for _, c := range b[i : i+4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		case c >= 'A' && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

// skipBlank returns the index of the first byte at or after i that is not
// JSON whitespace.
func skipBlank(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// recordInputField returns the field of in named key exactly as its JSON
// tag, and a bit of its own; nil for any other name.
func recordInputField(in *api.RecordInput, key []byte) (*string, uint16) {
	switch string(key) {
	case "id":
		return &in.ID, 1 << 0
	case "subject":
		return &in.Subject, 1 << 1
	case "catalog_item":
		return &in.CatalogItem, 1 << 2
	case "decision_number":
		return &in.DecisionNumber, 1 << 3
	case "occurred_on":
		return &in.OccurredOn, 1 << 4
	case "decided_on":
		return &in.DecidedOn, 1 << 5
	case "summary":
		return &in.Summary, 1 << 6
	case "department":
		return &in.Department, 1 << 7
	case "district":
		return &in.District, 1 << 8
	}
	return nil, 0
}
