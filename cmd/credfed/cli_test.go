package main

import (
	"io"
	"regexp"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"credfed/credit"
)

func TestHelpOfACommand(t *testing.T) {
	out, errOut, code := runCLI(t, "help", "lookup")
	if code != 0 || errOut != "" {
		t.Fatalf("credfed help lookup: %d, stderr %q", code, errOut)
	}
	for _, want := range []string{"Usage:\n  credfed lookup --subject ID", "--purpose CODE", "--addr URL", "$CREDFED_ADDR",
		"--demo DIR", "--as ROLE", "--json", "--user NAME", "$LOGNAME", "--as coordinator --node quzhou"} {
		if !strings.Contains(out, want) {
			t.Errorf("credfed help lookup lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "--api") {
		t.Errorf("the hidden --api alias shows in the help:\n%s", out)
	}
	flagHelp, _, code := runCLI(t, "lookup", "--help")
	if code != 0 || flagHelp != out {
		t.Errorf("credfed lookup --help (%d) differs from credfed help lookup:\n%s", code, flagHelp)
	}
	root, _, code := runCLI(t, "--help")
	if code != 0 || !strings.Contains(root, "Version "+currentBuild().Short()) || !strings.Contains(root, "Clients of a node's API") {
		t.Errorf("credfed --help: %d\n%s", code, root)
	}
}

// allCommandPaths lists the argument paths of every command of the tree.
func allCommandPaths() [][]string {
	var out [][]string
	var walk func(c *cobra.Command, path []string)
	walk = func(c *cobra.Command, path []string) {
		out = append(out, path)
		for _, s := range c.Commands() {
			walk(s, append(append([]string(nil), path...), s.Name()))
		}
	}
	walk(newRootCommand(io.Discard, io.Discard), nil)
	return out
}

// identifierLike matches anything that might be meant as an identifier:
// a run of digits and capitals with at least ten digits.
var identifierLike = regexp.MustCompile(`[0-9A-Z]*[0-9][0-9A-Z]*`)

func TestIdentifiersInHelpTextsAreValid(t *testing.T) {
	found := map[string]bool{}
	for _, path := range allCommandPaths() {
		out, _, code := runCLI(t, append(path, "--help")...)
		if code != 0 {
			t.Fatalf("credfed %s --help: exit %d", strings.Join(path, " "), code)
		}
		for _, m := range identifierLike.FindAllString(out, -1) {
			if strings.Count(digitsOnly(m), "") <= 10 {
				continue // fewer than ten digits: a port, a date, a code
			}
			found[m] = true
			if _, err := credit.ParseSubject(m, credit.ParseOptions{TestOnly: true}); err != nil {
				t.Errorf("credfed %s --help shows %s, not a valid identifier of the test province: %v", strings.Join(path, " "), m, err)
			}
		}
	}
	if !found[exampleSubject] {
		t.Fatalf("no help text shows the example subject %s (found %v)", exampleSubject, found)
	}
}

func digitsOnly(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= '0' && r <= '9' {
			return r
		}
		return -1
	}, s)
}

func TestVersion(t *testing.T) {
	out, _, code := runCLI(t, "version")
	if code != 0 || !strings.HasPrefix(out, "credfed "+currentBuild().Version+"\n") || !strings.Contains(out, "built with "+runtime.Version()) {
		t.Fatalf("credfed version: %d\n%s", code, out)
	}
	out, _, code = runCLI(t, "--version")
	if code != 0 || out != "credfed version "+currentBuild().Short()+"\n" {
		t.Fatalf("credfed --version: %d %q", code, out)
	}
}

func TestBuildVersionNamesTheRevision(t *testing.T) {
	bi := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: "credfed", Version: "v1.2.0"},
		Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "0123456789abcdef0123"},
			{Key: "vcs.time", Value: "2026-11-30T08:00:00Z"}, {Key: "vcs.modified", Value: "true"}}}
	if got, want := buildOf(bi, true).Short(), "v1.2.0 (revision 0123456789ab, 2026-11-30T08:00:00Z, modified)"; got != want {
		t.Errorf("Short() = %q, want %q", got, want)
	}
	if got := buildOf(&debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, true).Short(); got != "(devel)" {
		t.Errorf("without version control: %q", got)
	}
	if got := buildOf(nil, false); got.Version != "(devel)" || got.Go != runtime.Version() {
		t.Errorf("without build information: %+v", got)
	}
}

func TestCompletionScripts(t *testing.T) {
	for shell, want := range map[string]string{
		"bash":       "# bash completion V2 for credfed",
		"zsh":        "#compdef credfed",
		"fish":       "# fish completion for credfed",
		"powershell": "Register-ArgumentCompleter",
	} {
		out, errOut, code := runCLI(t, "completion", shell)
		if code != 0 || !strings.Contains(out, want) || errOut != "" {
			t.Errorf("credfed completion %s: exit %d, stderr %q, output lacks %q", shell, code, errOut, want)
		}
	}
	// The scripts call back into the binary; its answers complete --as.
	out, _, code := runCLI(t, "__complete", "lookup", "--as", "")
	for _, role := range demoRoles {
		if code != 0 || !strings.Contains(out, role+"\n") {
			t.Errorf("completing --as: %d, %q lacks %s", code, out, role)
		}
	}
	if _, errOut, code := runCLI(t, "completion", "tcsh"); code != 2 || !strings.Contains(errOut, `unknown command "tcsh"`) {
		t.Errorf("credfed completion tcsh: %d %q", code, errOut)
	}
}

func TestExitStatus(t *testing.T) {
	clearConnectionEnv(t)
	cases := []struct {
		args []string
		code int
		want string
	}{
		{nil, 2, "credfed needs a command"},
		{[]string{"lokup"}, 2, `unknown command "lokup" for "credfed" (did you mean lookup?)`},
		{[]string{"lookup", "--bogus"}, 2, "unknown flag: --bogus"},
		{[]string{"lookup", "--subject", exampleSubject}, 2, "lookup needs --subject, --purpose and --reference"},
		{[]string{"lookup", "extra"}, 2, `takes no arguments, got "extra"`},
		{[]string{"lookup", "--subject", "x", "--purpose", "p", "--reference", "r", "--user", "u"}, 2, "name the node with --addr and --ca"},
		{[]string{"records"}, 2, "credfed records needs a command: submit"},
		{[]string{"records", "submit"}, 2, "needs one FILE"},
		{[]string{"demo", "--districts", "13"}, 2, "--districts must be 1 to 12"},
		{[]string{"demo", "--compose"}, 2, "use it with --init-only"},
		{[]string{"demo", "unload"}, 2, `unknown command "unload"`},
		{[]string{"node"}, 2, "node needs --config FILE"},
		{[]string{"certs", "issue", "--role", "district"}, 2, "needs --dir"},
		{[]string{"demo", "load", "--dir", t.TempDir()}, 1, "write the federation first"},
		{[]string{"node", "--config", "/nonexistent/node.yaml"}, 1, "no such file"},
	}
	for _, c := range cases {
		_, errOut, code := runCLI(t, c.args...)
		if code != c.code || !strings.Contains(errOut, c.want) {
			t.Errorf("credfed %s: exit %d, stderr %q; want exit %d with %q", strings.Join(c.args, " "), code, errOut, c.code, c.want)
		}
		if hint := "--help' for usage."; (code == 2) != strings.Contains(errOut, hint) {
			t.Errorf("credfed %s: exit %d, and the pointer to --help is %v", strings.Join(c.args, " "), code, strings.Contains(errOut, hint))
		}
	}
}

func TestSelfName(t *testing.T) {
	for arg0, want := range map[string]string{
		"./credfed":                  "./credfed",
		"bin/credfed":                "bin/credfed",
		"credfed":                    "credfed",
		"/usr/local/bin/credfed":     "credfed",
		"/tmp/go-build1/exe/credfed": "./credfed",
		"./credfed.test":             "credfed",
		"./my dir/credfed":           "'./my dir/credfed'",
	} {
		if got := selfNameFrom(arg0, false); got != want {
			t.Errorf("selfNameFrom(%q) = %q, want %q", arg0, got, want)
		}
	}
	// go run, with a credfed on $PATH: that one.
	if got := selfNameFrom("/tmp/go-build1/exe/credfed", true); got != "credfed" {
		t.Errorf("go run with credfed on PATH: %q", got)
	}
}
