package consensus

import (
	"errors"
	"go/ast"
	"go/constant"
	"go/parser"
	"go/token"
	"go/types"
	"path/filepath"
	"strings"
	"testing"
)

// commandConstants returns every constant of type CommandType declared in
// the package's source, by name, with its value, except the IgnoreUnknown
// bit. It type-checks the package's files without their imports: the
// constants do not need them.
func commandConstants(t *testing.T) map[string]CommandType {
	t.Helper()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	var parsed []*ast.File
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		parsed = append(parsed, f)
	}
	conf := types.Config{
		Importer: importerFunc(func(string) (*types.Package, error) { return nil, errors.New("not needed") }),
		Error:    func(error) {}, // unresolved imports: expected
	}
	info := &types.Info{Defs: map[*ast.Ident]types.Object{}}
	conf.Check("credfed/consensus", fset, parsed, info) //nolint:errcheck // errors expected, see above
	out := map[string]CommandType{}
	for id, obj := range info.Defs {
		c, ok := obj.(*types.Const)
		if !ok || c.Parent() != c.Pkg().Scope() {
			continue
		}
		named, ok := c.Type().(*types.Named)
		if !ok || named.Obj().Name() != "CommandType" || id.Name == "IgnoreUnknown" {
			continue
		}
		v, exact := constant.Uint64Val(c.Val())
		if !exact || v > 255 {
			t.Fatalf("command type %s = %v is not a byte", id.Name, c.Val())
		}
		out[id.Name] = CommandType(v)
	}
	return out
}

type importerFunc func(path string) (*types.Package, error)

func (f importerFunc) Import(path string) (*types.Package, error) { return f(path) }

// TestCommandTable_EveryTypeRegistered: every CommandType constant has a
// table entry (a new type cannot be forgotten), every entry a constant,
// and every type its snapshot/restore test.
func TestCommandTable_EveryTypeRegistered(t *testing.T) {
	consts := commandConstants(t)
	if len(consts) < 8 {
		t.Fatalf("found %d command type constants: the source scan is broken", len(consts))
	}
	tests := map[string]bool{}
	testFiles, _ := filepath.Glob("*_test.go")
	fset := token.NewFileSet()
	for _, name := range testFiles {
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			if fd, ok := d.(*ast.FuncDecl); ok && fd.Recv == nil {
				tests[fd.Name.Name] = true
			}
		}
	}
	names := map[string]bool{}
	for name, typ := range consts {
		spec := commandFor(typ)
		if spec == nil {
			t.Errorf("%s (%d) has no entry in the command table: add a registerCommand call in commands.go", name, typ)
			continue
		}
		if names[spec.name] {
			t.Errorf("%s: name %q used twice", name, spec.name)
		}
		names[spec.name] = true
		if typ.String() != spec.name {
			t.Errorf("%s.String() = %q, want %q", name, typ.String(), spec.name)
		}
		if test := "TestFSM_SnapshotRestore_" + strings.TrimPrefix(name, "Cmd"); !tests[test] {
			t.Errorf("%s has no snapshot/restore test %s", name, test)
		}
	}
	byValue := map[CommandType]bool{}
	for _, typ := range consts {
		byValue[typ] = true
	}
	for i, spec := range commands {
		if spec != nil && !byValue[CommandType(i)] {
			t.Errorf("table entry %d (%s) has no CommandType constant", i, spec.name)
		}
	}
}

// TestCommandTable_Properties pins what the table says about each type:
// which a node may relay for an operator, and what each invalidates.
func TestCommandTable_Properties(t *testing.T) {
	for _, c := range []struct {
		typ     CommandType
		relay   bool
		effects effect
	}{
		{CmdIndexBatch, false, 0},
		{CmdSealedIndexBatch, false, 0},
		{CmdRegionPut, true, reloadRegistry | registryChanged},
		{CmdRegionRemove, true, reloadRegistry | registryChanged | reloadRevocations},
		{CmdCatalogPublish, true, reloadCatalog},
		{CmdRevoke, true, reloadRevocations},
		{CmdSuspend, true, reloadRevocations},
		{CmdReinstate, true, reloadRevocations},
		{CmdFederationInit, false, reloadRegistry | reloadCatalog | registryChanged},
		{CmdAuditAnchor, false, 0},
		{CmdRegionAdd, true, reloadRegistry | registryChanged},
		{CmdJoin, true, reloadRegistry | registryChanged},
		{CmdKeyInstall, true, reloadKeys},
		{CmdKeySwitch, true, reloadKeys},
		{CmdKeyProgress, false, reloadKeys},
	} {
		spec := commandFor(c.typ)
		if spec == nil {
			t.Fatalf("%s not registered", c.typ)
		}
		if spec.relay != c.relay || spec.effects != c.effects {
			t.Errorf("%s: relay %v effects %b, want %v %b", c.typ, spec.relay, spec.effects, c.relay, c.effects)
		}
	}
	if commandFor(99) != nil || CommandType(99).String() != "unknown_99" {
		t.Fatal("an unregistered type has an entry")
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("registering a type twice did not panic")
			}
		}()
		registerCommand(CmdRevoke, commandSpec{name: "again", apply: (*FSM).applyIndexBatch})
	}()
}
