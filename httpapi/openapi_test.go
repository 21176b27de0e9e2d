package httpapi

import (
	"go/ast"
	"go/parser"
	"go/token"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"gopkg.in/yaml.v3"
)

// openAPIPath is the document this test holds to the router.
const openAPIPath = "../docs/openapi.yaml"

// openAPIOperation is the part of an OpenAPI operation the test reads.
type openAPIOperation struct {
	OperationID string               `yaml:"operationId"`
	Roles       []string             `yaml:"x-credfed-roles"`
	Parameters  []openAPIParameter   `yaml:"parameters"`
	Responses   map[string]yaml.Node `yaml:"responses"`
}

type openAPIParameter struct {
	Ref  string `yaml:"$ref"`
	Name string `yaml:"name"`
	In   string `yaml:"in"`
}

// openAPIOp is one documented operation.
type openAPIOp struct {
	method, path string
	listener     string // "" for the API, "metrics" for the metrics listener
	op           openAPIOperation
	pathParams   []openAPIParameter
}

var openAPIMethods = []string{"get", "put", "post", "delete", "options", "head", "patch", "trace"}

// loadOpenAPI reads docs/openapi.yaml and returns its operations, keyed by
// "METHOD /path", and its parameter components by name.
func loadOpenAPI(t *testing.T) (map[string]openAPIOp, map[string]openAPIParameter) {
	t.Helper()
	data, err := os.ReadFile(openAPIPath)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		OpenAPI    string                          `yaml:"openapi"`
		Paths      map[string]map[string]yaml.Node `yaml:"paths"`
		Components struct {
			Parameters map[string]openAPIParameter `yaml:"parameters"`
		} `yaml:"components"`
	}
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatalf("%s: %v", openAPIPath, err)
	}
	if doc.OpenAPI != "3.0.3" {
		t.Errorf("%s: openapi is %q, want 3.0.3", openAPIPath, doc.OpenAPI)
	}
	ops := map[string]openAPIOp{}
	for path, item := range doc.Paths {
		var listener string
		var pathParams []openAPIParameter
		if n, ok := item["x-credfed-listener"]; ok {
			if err := n.Decode(&listener); err != nil {
				t.Fatalf("%s: x-credfed-listener: %v", path, err)
			}
		}
		if n, ok := item["parameters"]; ok {
			if err := n.Decode(&pathParams); err != nil {
				t.Fatalf("%s: parameters: %v", path, err)
			}
		}
		for key, n := range item {
			if !slices.Contains(openAPIMethods, key) {
				continue
			}
			var op openAPIOperation
			if err := n.Decode(&op); err != nil {
				t.Fatalf("%s %s: %v", key, path, err)
			}
			method := strings.ToUpper(key)
			ops[method+" "+path] = openAPIOp{method: method, path: path, listener: listener, op: op, pathParams: pathParams}
		}
	}
	return ops, doc.Components.Parameters
}

// accessRoles is how x-credfed-roles writes a route's access.
func accessRoles(a access) []string {
	switch {
	case a.public:
		return []string{"public"}
	case a.any:
		return []string{"any"}
	}
	out := make([]string, len(a.roles))
	for i, r := range a.roles {
		out[i] = string(r)
	}
	return out
}

func sortedCopy(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return out
}

var pathParam = regexp.MustCompile(`\{([^}]+)\}`)

// TestOpenAPIMatchesRoutes holds docs/openapi.yaml and routes() to the same
// operations and roles: adding a route without documenting it, or
// documenting one the router does not serve, fails here.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	ops, components := loadOpenAPI(t)
	routes := (&Server{}).routes()
	if len(routes) == 0 {
		t.Fatal("routes() is empty")
	}
	seen := map[string]bool{}
	for _, rt := range routes {
		key := rt.method + " " + rt.pattern
		if seen[key] {
			t.Errorf("routes() lists %s twice", key)
		}
		seen[key] = true
		doc, ok := ops[key]
		if !ok {
			t.Errorf("route %s is not documented in %s", key, openAPIPath)
			continue
		}
		if doc.listener != "" {
			t.Errorf("route %s is documented on the %s listener, but it is an API route", key, doc.listener)
		}
		if got, want := sortedCopy(doc.op.Roles), sortedCopy(accessRoles(rt.access)); !slices.Equal(got, want) {
			t.Errorf("%s: x-credfed-roles is %v, the route admits %v", key, doc.op.Roles, want)
		}
		// Every {name} of the path is declared as a path parameter.
		declared := map[string]bool{}
		for _, p := range append(slices.Clone(doc.pathParams), doc.op.Parameters...) {
			if p.Ref != "" {
				p = components[strings.TrimPrefix(p.Ref, "#/components/parameters/")]
			}
			if p.In == "path" {
				declared[p.Name] = true
			}
		}
		for _, m := range pathParam.FindAllStringSubmatch(rt.pattern, -1) {
			if !declared[m[1]] {
				t.Errorf("%s: path parameter %q is not declared", key, m[1])
			}
		}
	}
	for key, doc := range ops {
		if doc.listener == "" && !seen[key] {
			t.Errorf("%s documents %s, which routes() does not serve", openAPIPath, key)
		}
		if doc.op.OperationID == "" {
			t.Errorf("%s: no operationId", key)
		}
		if len(doc.op.Roles) == 0 {
			t.Errorf("%s: no x-credfed-roles", key)
		}
		for code := range doc.op.Responses {
			if _, err := strconv.Atoi(code); err != nil {
				t.Errorf("%s: response %q is not an HTTP status", key, code)
			}
		}
	}
}

// metricsPatterns returns the patterns MetricsHandler registers, read from
// health.go's source: http.ServeMux cannot list its patterns.
func metricsPatterns(t *testing.T) []string {
	t.Helper()
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "health.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var patterns []string
	found := false
	for _, d := range f.Decls {
		fn, ok := d.(*ast.FuncDecl)
		if !ok || fn.Name.Name != "MetricsHandler" {
			continue
		}
		found = true
		ast.Inspect(fn.Body, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok || (sel.Sel.Name != "Handle" && sel.Sel.Name != "HandleFunc") || len(call.Args) == 0 {
				return true
			}
			lit, ok := call.Args[0].(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				t.Errorf("health.go:%d: MetricsHandler registers a pattern that is not a string literal; update this test", fset.Position(call.Pos()).Line)
				return true
			}
			s, err := strconv.Unquote(lit.Value)
			if err != nil {
				t.Fatal(err)
			}
			patterns = append(patterns, s)
			return true
		})
	}
	if !found {
		t.Fatal("health.go has no MetricsHandler")
	}
	return patterns
}

// TestOpenAPIMetricsListener holds the documented metrics-listener paths
// to the patterns of MetricsHandler, and checks with real requests that
// each documented path is served.
func TestOpenAPIMetricsListener(t *testing.T) {
	ops, _ := loadOpenAPI(t)
	var documented []string
	for key, doc := range ops {
		switch doc.listener {
		case "":
		case "metrics":
			documented = append(documented, key)
			if !slices.Equal(doc.op.Roles, []string{"public"}) {
				t.Errorf("%s: x-credfed-roles is %v; the metrics listener takes no certificate: [public]", key, doc.op.Roles)
			}
		default:
			t.Errorf("%s: unknown x-credfed-listener %q", key, doc.listener)
		}
	}
	patterns := metricsPatterns(t)
	for _, p := range patterns {
		if !strings.Contains(p, " ") {
			t.Errorf("MetricsHandler pattern %q has no method; document it with one", p)
		}
	}
	slices.Sort(documented)
	slices.Sort(patterns)
	if !slices.Equal(documented, patterns) {
		t.Errorf("metrics listener: %s documents %v, MetricsHandler serves %v", openAPIPath, documented, patterns)
	}

	// A node that is not serving: /readyz answers 503 without reaching Raft.
	h := MetricsHandler(prometheus.NewRegistry(), func() (bool, string) { return false, "not serving" })
	for _, key := range documented {
		method, path, _ := strings.Cut(key, " ")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
		if _, documentedStatus := ops[key].op.Responses[strconv.Itoa(rec.Code)]; !documentedStatus {
			t.Errorf("%s answered %d, which the document does not list", key, rec.Code)
		}
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/no-such-path", nil))
	if rec.Code != http.StatusNotFound {
		t.Errorf("GET /no-such-path on the metrics listener: %d, want 404", rec.Code)
	}
}
