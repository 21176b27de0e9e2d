package credit

import "testing"

func TestMaskIdentifier(t *testing.T) {
	tests := []struct{ in, want string }{
		{"11010519491231002X", "110105***********X"},
		{"11010519491231002x", "110105***********X"},
		{" 120101199001011239 ", "120101***********9"},
		{"91350100M000100Y43", "**350100*********3"},
		{"91350100m000100y4a", "**350100*********A"},
		{"", "******************"},
		{"1101051949123100", "******************"},
		{"11010519491231002X99", "******************"},
		{"11010519491231002Ｘ", "******************"},
		{"1101051949123100\x00X", "******************"},
	}
	for _, tt := range tests {
		if got := MaskIdentifier(tt.in); got != tt.want {
			t.Errorf("MaskIdentifier(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestSubjectMaskedUsesKind(t *testing.T) {
	// An all-digit organization code looks like a citizen number; the
	// subject's kind decides how it is masked.
	s, err := ParseSubject("914403001922038216", prod)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := s.Masked(), "**440300*********6"; got != want {
		t.Errorf("Masked() = %q, want %q", got, want)
	}
	if got, want := MaskIdentifier(s.ID), "914403***********6"; got != want {
		t.Errorf("MaskIdentifier = %q, want %q (shape only)", got, want)
	}
}
