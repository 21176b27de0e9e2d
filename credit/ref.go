package credit

import "strings"

// Ref is a federation-wide reference to a record: the district that holds
// it, the department that collected it and its id. Objections and repairs
// name a record by its Ref.
//
// Its string form is "<district region path>/<department>/<id>", e.g.
// "tianjin/heping/market-supervision/R-2026-0001": a record id has no '/'
// and a department code is one path segment, so the last two segments are
// the department and the id and the rest is the region.
type Ref struct {
	District   string `cbor:"1,keyasint"`
	Department string `cbor:"2,keyasint"`
	ID         string `cbor:"3,keyasint"`
}

// RefOf is the reference of a record held by district.
func RefOf(district string, r Record) Ref {
	return Ref{District: district, Department: r.Department, ID: r.ID}
}

// String is the reference's one-string form.
func (r Ref) String() string { return r.District + "/" + r.Department + "/" + r.ID }

// MaxRefLength bounds a reference's string form.
const MaxRefLength = 512

// ParseRef reads a reference's string form. Its error names the rule that
// failed, never the input.
func ParseRef(s string) (Ref, error) {
	if s == "" {
		return Ref{}, badField("record", "required: a record reference district/department/id")
	}
	if len(s) > MaxRefLength {
		return Ref{}, badField("record", "a record reference has at most %d bytes", MaxRefLength)
	}
	if !printable(s) {
		return Ref{}, badField("record", "a record reference must be printable UTF-8")
	}
	i := strings.LastIndexByte(s, '/')
	if i <= 0 {
		return Ref{}, badField("record", "a record reference is district/department/id")
	}
	j := strings.LastIndexByte(s[:i], '/')
	if j <= 0 {
		return Ref{}, badField("record", "a record reference is district/department/id")
	}
	r := Ref{District: s[:j], Department: s[j+1 : i], ID: s[i+1:]}
	if r.Department == "" || r.ID == "" || strings.Contains(r.District, "//") || strings.HasSuffix(r.District, "/") {
		return Ref{}, badField("record", "a record reference has an empty district, department or id")
	}
	if err := checkRecordID(r.ID); err != nil {
		return Ref{}, badField("record", "the record id of the reference is not valid")
	}
	return r, nil
}
