package console

import (
	"fmt"

	"credfed/certs"
)

// CheckRoleAt refuses an account of a role the node cannot serve: a
// department's pages are a district's (records, objections, its checks),
// a coordinator's are a coordinator node's (checks across districts,
// batches, statistics). An operator may have an account on any node.
func CheckRoleAt(role, nodeRole certs.Role) error {
	switch {
	case role == certs.Department && nodeRole != certs.District:
		return fmt.Errorf("%w: a department account belongs on its district's node, not on a %s node", ErrBadAccount, nodeRole)
	case role == certs.Coordinator && !nodeRole.IsCoordinatorNode():
		return fmt.Errorf("%w: a coordinator account belongs on a city or province node, not on a %s node", ErrBadAccount, nodeRole)
	}
	return nil
}
