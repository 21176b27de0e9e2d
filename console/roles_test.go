package console

import (
	"errors"
	"testing"

	"credfed/certs"
)

func TestAccountsBelongOnNodesThatServeTheirRole(t *testing.T) {
	for _, c := range []struct {
		role, node certs.Role
		ok         bool
	}{
		{certs.Department, certs.District, true}, {certs.Department, certs.City, false}, {certs.Department, certs.Province, false},
		{certs.Coordinator, certs.City, true}, {certs.Coordinator, certs.Province, true}, {certs.Coordinator, certs.District, false},
		{certs.Operator, certs.District, true}, {certs.Operator, certs.Province, true},
	} {
		err := CheckRoleAt(c.role, c.node)
		if (err == nil) != c.ok || err != nil && !errors.Is(err, ErrBadAccount) {
			t.Errorf("a %s account on a %s node: %v", c.role, c.node, err)
		}
	}
}
