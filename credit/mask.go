package credit

import "strings"

// MaskIdentifier masks an identifier for public disclosure. The result always
// has 18 characters:
//
//   - a citizen identity number (17 digits and a digit or X) keeps its region
//     code, characters 1-6, and its check character, character 18:
//     11010519491231002X → 110105***********X;
//   - any other 18-character string is treated as a unified social credit
//     code and keeps its registration region, characters 3-8, and its check
//     character: 91350100M000100Y43 → **350100*********3;
//   - anything that is not 18 ASCII characters long becomes 18 asterisks, so
//     that nothing of malformed input is disclosed.
//
// The kind is inferred from the shape alone; use Subject.Masked when the kind
// is known (an all-digit organization code is then masked as one).
func MaskIdentifier(id string) string {
	id = strings.TrimSpace(id)
	if personShaped(id) {
		return maskAs(id, Person)
	}
	return maskAs(id, Organization)
}

func maskAs(id string, kind SubjectKind) string {
	if len(id) != 18 {
		return strings.Repeat("*", 18)
	}
	for i := range len(id) {
		if id[i] <= ' ' || id[i] > '~' {
			return strings.Repeat("*", 18)
		}
	}
	b := []byte(strings.Repeat("*", 18))
	switch kind {
	case Person:
		copy(b[:6], id[:6])
	case Organization:
		copy(b[2:8], id[2:8])
	default:
		return string(b)
	}
	b[17] = id[17]
	if b[17] >= 'a' && b[17] <= 'z' {
		b[17] -= 'a' - 'A'
	}
	return string(b)
}
