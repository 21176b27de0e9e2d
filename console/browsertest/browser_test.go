package browsertest

import (
	"context"
	"encoding/csv"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"credfed/api"
	"credfed/credit"
	"credfed/localfed"
	"credfed/node"
)

// chromium finds the browser: CREDFED_CHROMIUM, or chromium on the PATH.
func chromium(t *testing.T) string {
	if p := os.Getenv("CREDFED_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CREDFED_REQUIRE_BROWSER") != "" {
		t.Fatal("CREDFED_REQUIRE_BROWSER is set and no Chromium is on the PATH (apt-get install chromium)")
	}
	t.Skip("no Chromium on this machine: apt-get install chromium (.ci/run installs it), or set CREDFED_CHROMIUM")
	return ""
}

// shots is where the screenshots go: CREDFED_SCREENSHOTS (a relative path
// is the repository's: docs/console), or a temporary directory.
func shots(t *testing.T) string {
	if d := os.Getenv("CREDFED_SCREENSHOTS"); d != "" {
		if !filepath.IsAbs(d) {
			d = filepath.Join("..", "..", d) // the test runs in console/browsertest
		}
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	return t.TempDir()
}

// browser is one headless Chromium of its own (cookies and all): each role
// gets one, as each officer has a browser.
type browser struct {
	t   *testing.T
	ctx context.Context
	dir string
}

func newBrowser(t *testing.T, exe, dir string, width, height int) *browser {
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(exe), chromedp.Headless, chromedp.NoSandbox,
		chromedp.DisableGPU, chromedp.Flag("disable-background-networking", true), chromedp.IgnoreCertErrors,
		chromedp.WindowSize(width, height), chromedp.UserDataDir(t.TempDir()))
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelC := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelC(); cancelA() })
	// The first action starts the browser, which lives as long as the
	// context it runs on: this one, not one of do's with a deadline.
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(int64(width), int64(height))); err != nil {
		t.Fatalf("starting %s: %v", exe, err)
	}
	return &browser{t: t, ctx: ctx, dir: dir}
}

// do runs steps within 60 s and fails the test on an error.
func (b *browser) do(steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 60*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		loc, _ := chromedp.Run(b.ctx, chromedp.Location())
		b.t.Fatalf("browser at %s: %v", loc, err)
	}
}

// eval evaluates a JavaScript expression.
func eval[T any](b *browser, js string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js, chromedp.EvalAwaitPromise))
	if err != nil {
		b.t.Fatalf("evaluate %s: %v", js, err)
	}
	return v
}

// until waits (within 30 s) for a JavaScript condition to hold; the page
// may navigate meanwhile (an evaluation that a navigation cuts is tried
// again).
func (b *browser) until(what, js string) {
	b.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](js))
		cancel()
		if err == nil && ok {
			return
		}
		last = err
		tick := time.NewTimer(100 * time.Millisecond)
		select {
		case <-tick.C:
		case <-b.ctx.Done():
			tick.Stop()
			b.t.Fatalf("%s: the browser went away", what)
		}
	}
	body, _ := chromedp.Run(b.ctx, chromedp.Evaluate[string]("document.body.innerText"))
	b.t.Fatalf("%s: not within 30 s (last error %v); the page shows:\n%s", what, last, body)
}

func (b *browser) text(sel string) string {
	b.t.Helper()
	return eval[string](b, fmt.Sprintf("(document.querySelector(%q)||{innerText:''}).innerText", sel))
}

// open navigates and returns the HTTP status of the page.
func (b *browser) open(url string) int64 {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 60*time.Second)
	defer cancel()
	resp, err := chromedp.Run(ctx, chromedp.NavigateResponse(url))
	if err != nil {
		b.t.Fatalf("open %s: %v", url, err)
	}
	return resp.Status
}

// shot saves the page as DIR/name.png.
func (b *browser) shot(name string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.WriteFile(filepath.Join(b.dir, name+".png"), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

// fed is the demo federation the browsers use, with its data.
type fed struct {
	*localfed.Federation
	accounts map[string]localfed.ConsoleAccount // by role
	debtor   string                             // on two lists: the licensing check restricts
	clean    string
	// objection is an objection a subject filed at the first district.
	objection string
	api       map[string]string // node name → https://host:port
}

func startFed(t *testing.T) *fed {
	dir := t.TempDir()
	f, err := localfed.Start(localfed.Spec{Dir: dir, Districts: 4},
		node.Options{Logger: slog.New(slog.DiscardHandler), RaftTiming: node.RaftTiming{Heartbeat: 300 * time.Millisecond,
			Election: 300 * time.Millisecond, LeaderLease: 150 * time.Millisecond, Commit: 5 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		f.Stop(ctx)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := f.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	// The demo's synthetic data, so that the statistics have something
	// to chart.
	if err := localfed.WriteDemoFile(dir, f.Layout.Demo(nil)); err != nil {
		t.Fatal(err)
	}
	showcase, _, err := localfed.LoadData(ctx, dir, 400)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.WaitIndexed(ctx, showcase.Subject, len(showcase.Districts)); err != nil {
		t.Fatal(err)
	}
	accs, err := localfed.ConsoleAccounts(dir, f.Layout)
	if err != nil {
		t.Fatal(err)
	}
	fd := &fed{Federation: f, accounts: map[string]localfed.ConsoleAccount{}, api: map[string]string{},
		debtor: credit.SyntheticPerson(9201, credit.NewDate(1979, 4, 5)),
		clean:  credit.SyntheticPerson(9202, credit.NewDate(1988, 1, 2))}
	for _, a := range accs {
		fd.accounts[a.Role] = a
	}
	for _, n := range f.Layout.Nodes {
		fd.api[n.Name] = "https://" + n.API
	}
	ds := f.Districts()
	recent := credit.TodayAt(time.Now()) - 4
	rec := func(id, subject, item, summary string) api.RecordInput {
		return api.RecordInput{ID: id, Subject: subject, CatalogItem: item, DecisionNumber: "浙市监罚〔2026〕" + id,
			OccurredOn: (recent - 8).String(), DecidedOn: recent.String(), Summary: summary}
	}
	submit := func(district string, r api.RecordInput) api.RecordResult {
		c := fd.client(t, district, f.Layout.Departments[district])
		ans, _, err := c.SubmitRecords(ctx, []api.RecordInput{r})
		if err != nil || len(ans.Results) != 1 || ans.Results[0].Status != api.StatusAccepted {
			t.Fatalf("submit at %s: %v %+v", district, err, ans)
		}
		return ans.Results[0]
	}
	submit(ds[1], rec("BR-1", fd.debtor, "DISHONEST-JUDGMENT-DEBTOR", "拒不履行生效判决"))
	submit(ds[2], rec("BR-2", fd.debtor, "FOOD-SAFETY-SERIOUS", "严重食品安全违法"))
	submit(ds[3], rec("BR-3", fd.clean, "VOLUNTEER-SERVICE-RECORD", "志愿服务"))
	submit(ds[0], rec("BR-4", fd.clean, "FOOD-DRUG-PENALTY", "超范围经营"))
	if err := f.WaitIndexed(ctx, fd.debtor, 2); err != nil {
		t.Fatal(err)
	}
	if err := f.WaitIndexed(ctx, fd.clean, 2); err != nil {
		t.Fatal(err)
	}
	// The subject objects, through the first district's portal, to the
	// record that district holds.
	dept := fd.client(t, ds[0], f.Layout.Departments[ds[0]])
	got, err := dept.Record(ctx, "BR-4")
	if err != nil {
		t.Fatal(err)
	}
	portal := fd.client(t, ds[0], f.Layout.Portals[ds[0]])
	ob, err := portal.File(ctx, "objections", api.CaseRequest{Subject: fd.clean, Record: got.Ref, Reason: "经营范围已变更，处罚依据不成立",
		Evidence: []string{"营业执照变更登记 2026-88"}, Authentication: "实名认证 FACE-2026-009"})
	if err != nil {
		t.Fatal(err)
	}
	fd.objection = ob.ID
	// A revoked certificate for the operator's list.
	op := fd.client(t, f.Province(), f.Layout.Operator)
	if _, err := op.Revoke(ctx, api.RevokeRequest{Serial: "4242", Reason: "key lost (browser test)"}); err != nil {
		t.Fatal(err)
	}
	return fd
}

func (f *fed) client(t *testing.T, name string, files localfed.ClientFiles) *api.Client {
	c, err := api.NewClient(api.Config{Address: f.api[name], CACert: f.Layout.CA, ClientCert: files.Cert, ClientKey: files.Key, Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.CloseIdle)
	return c
}

// TestConsoleInABrowser logs in as each role of the demo and uses its
// pages in headless Chromium: a department officer checks an applicant
// and sees the restriction, submits a file and reads its rejection
// report, corrects a record and resolves an objection, and is refused
// the audit page; a city coordinator sees the federation's tree, the
// statistics' charts and a batch check's progress; an operator sees the
// revocations and the audit chain. Every page is saved as a screenshot.
func TestConsoleInABrowser(t *testing.T) {
	if raceDetector {
		t.Skip("the race pass skips the browser test: Chromium and an in-process federation under the race detector take minutes, and the first pass runs it")
	}
	exe := chromium(t)
	out := shots(t)
	f := startFed(t)

	t.Run("department", func(t *testing.T) {
		acc := f.accounts["department"]
		b := newBrowser(t, exe, out, 1280, 900)
		// The one-time link logs in; the second use is refused.
		b.open(acc.Login)
		b.until("the link's login form", `!!document.getElementById("link-login")`)
		b.shot("login")
		b.do(chromedp.Click(chromedp.ID("link-login")))
		b.until("the check page", `location.pathname === "/console/check" && !!document.getElementById("check-form")`)
		if who := b.text("#who"); !strings.Contains(who, acc.Name) || !strings.Contains(who, "部门") {
			t.Errorf("the header names %q, want the account %s as a department", who, acc.Name)
		}
		// A wrong check character is said as it is typed.
		bad := f.debtor[:17] + string("0123456789X"[(strings.IndexByte("0123456789X", f.debtor[17])+1)%11])
		b.do(chromedp.SendKeys(chromedp.ID("subject"), bad))
		b.until("the check-character message", `document.getElementById("subject-hint").className === "hint bad"`)
		if hint := b.text("#subject-hint"); !strings.Contains(hint, "校验码") {
			t.Errorf("the hint for a wrong check character says %q", hint)
		}
		eval[bool](b, `(document.getElementById("subject").value = "") === ""`)
		b.do(chromedp.SendKeys(chromedp.ID("subject"), f.debtor))
		b.until("the identifier accepted", `document.getElementById("subject-hint").className === "hint good"`)
		b.do(chromedp.SetValue(chromedp.ID("scenario"), "ADMIN-LICENSING"),
			chromedp.SendKeys(chromedp.ID("reference"), "许〔2026〕2号"),
			chromedp.Click(chromedp.ID("check-submit")))
		b.until("the check's answer", `!!document.getElementById("answer")`)
		if n := eval[int](b, `document.querySelectorAll("#measures tr.measure-restriction").length`); n == 0 {
			t.Errorf("the licensing check of a subject on two lists shows no restriction: %s", b.text("#answer"))
		}
		if lists := b.text("#lists"); !strings.Contains(lists, "DISHONEST-JUDGMENT-DEBTORS") {
			t.Errorf("the lists shown: %q", lists)
		}
		if n := eval[int](b, `document.querySelectorAll("section.district[data-status=ok]").length`); n != 2 {
			t.Errorf("%d districts answered on the page, want 2", n)
		}
		if page := eval[string](b, `document.documentElement.outerHTML`); strings.Contains(page, f.debtor) {
			t.Error("the answer page repeats the full identifier")
		}
		b.shot("check")

		// A file with one good and one bad record: the counts, and the
		// rejection report names the bad line and why.
		file := filepath.Join(t.TempDir(), "records.ndjson")
		recent := credit.TodayAt(time.Now()) - 3
		good := fmt.Sprintf(`{"id":"UP-1","subject":%q,"catalog_item":"FOOD-DRUG-PENALTY","decision_number":"浙市监罚〔2026〕UP-1","occurred_on":%q,"decided_on":%q,"summary":"未按规定公示"}`,
			f.clean, (recent - 5).String(), recent.String())
		badRec := strings.Replace(good, `"UP-1"`, `"UP-2"`, 1)
		badRec = strings.Replace(badRec, f.clean, bad, 1)
		if err := os.WriteFile(file, []byte(good+"\n"+badRec+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		b.open(f.api[acc.Node] + "/console/records")
		b.do(chromedp.SetUploadFiles(chromedp.ID("r-file"), []string{file}), chromedp.Click(chromedp.ID("upload-submit")))
		b.until("the upload's counts", `!!document.getElementById("upload-summary") || !!document.getElementById("upload-error")`)
		if sum := b.text("#upload-summary"); !strings.Contains(sum, "接收 1 条") || !strings.Contains(sum, "退回 1 条") {
			t.Fatalf("the upload says %q (error %q)", sum, b.text("#upload-error"))
		}
		if p := eval[int](b, `document.getElementById("upload-progress").value`); p != 100 {
			t.Errorf("the progress bar ends at %d", p)
		}
		report := eval[string](b, `fetch(document.getElementById("upload-report").href).then(r => r.text())`)
		if !strings.Contains(report, "2,2,UP-2,rejected,invalid_identifier,subject,") {
			t.Errorf("the rejection report:\n%s", report)
		}
		if strings.Contains(report, bad) {
			t.Error("the rejection report repeats the identifier")
		}
		b.shot("records")

		// Find the accepted record and correct it.
		b.open(f.api[acc.Node] + "/console/records?id=UP-1")
		b.until("the record", `!!document.getElementById("record")`)
		b.do(chromedp.SetValue(chromedp.ID("c-summary"), "未按规定公示（更正）"),
			chromedp.SendKeys(chromedp.ID("c-reason"), "摘要笔误"), chromedp.Click(chromedp.ID("correct-submit")))
		b.until("the correction", `!!document.getElementById("notice")`)
		if s := b.text("#record-summary"); s != "未按规定公示（更正）" {
			t.Errorf("the corrected summary shows %q", s)
		}

		// The objection queue, and a decision.
		b.open(f.api[acc.Node] + "/console/cases")
		b.until("the objection in the queue", fmt.Sprintf(`!!document.getElementById("case-%s")`, f.objection))
		b.shot("cases")
		// The case's id goes into the page's element ids as it is: the
		// form is filled by getElementById, which takes any id.
		eval[bool](b, fmt.Sprintf(`(() => {
			const row = document.getElementById(%q);
			row.querySelector("select[name=outcome]").value = "upheld";
			row.querySelector("input[name=reason]").value = "处罚依据充分，维持原记录";
			row.querySelector("form").requestSubmit();
			return true })()`, "case-"+f.objection))
		b.until("the decision", `!!document.getElementById("notice")`)
		if n := b.text("#notice"); !strings.Contains(n, f.objection) || !strings.Contains(n, "维持") {
			t.Errorf("the notice after deciding: %q", n)
		}
		if eval[bool](b, fmt.Sprintf(`!!document.getElementById("case-%s")`, f.objection)) {
			t.Error("the decided objection is still in the open queue")
		}

		// The federation page is every role's.
		b.open(f.api[acc.Node] + "/console/federation")
		b.until("the tree", `document.querySelectorAll("#tree details").length === 7`)

		// A page the role may not see.
		if st := b.open(f.api[acc.Node] + "/console/audit"); st != 403 {
			t.Errorf("a department opening the audit page: HTTP %d, want 403", st)
		}
		if e := b.text("#error"); !strings.Contains(e, "角色") {
			t.Errorf("the refusal says %q", e)
		}
		if eval[bool](b, `!!document.querySelector('nav a[href="/console/audit"]')`) {
			t.Error("the navigation offers a department the audit page")
		}

		// English, then the used link.
		b.open(f.api[acc.Node] + "/console/check")
		b.do(chromedp.Click(chromedp.ID("lang-toggle")))
		b.until("the English page", `document.querySelector("h1").innerText === "Check before a decision"`)
		b.do(chromedp.Click(chromedp.ID("logout")))
		b.until("the login page", `!!document.getElementById("login-form")`)
		b.open(acc.Login)
		if e := b.text("#error"); !strings.Contains(e, "has been used") {
			t.Errorf("a used login link: %q", e)
		}
	})

	t.Run("coordinator", func(t *testing.T) {
		acc := f.accounts["coordinator"]
		b := newBrowser(t, exe, out, 1280, 900)
		b.open(f.api[acc.Node] + "/console/login")
		b.do(chromedp.SendKeys(chromedp.ID("name"), acc.Name), chromedp.SendKeys(chromedp.ID("password"), acc.Password),
			chromedp.Click(chromedp.ID("login")))
		b.until("the check page", `location.pathname === "/console/check"`)

		b.open(f.api[acc.Node] + "/console/federation")
		b.until("the tree", `document.querySelectorAll("#tree details").length === 7`)
		b.until("every node answering", `document.querySelectorAll("#tree .badge.ok").length === 7`)
		if eval[bool](b, `!!document.getElementById("revocations")`) {
			t.Error("a coordinator sees the revocation list")
		}
		b.shot("federation")

		b.open(f.api[acc.Node] + "/console/stats")
		b.until("the charts", `document.querySelectorAll("figure.chart svg rect").length > 0`)
		b.shot("stats")

		applicants := filepath.Join(t.TempDir(), "applicants.csv")
		if err := os.WriteFile(applicants, []byte("subject,reference\n"+f.debtor+",录〔2026〕11号\n"+f.clean+",录〔2026〕12号\n"+f.debtor[:17]+"Z,录〔2026〕13号\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		b.open(f.api[acc.Node] + "/console/batch")
		b.do(chromedp.SetValue(chromedp.ID("b-scenario"), "ADMIN-LICENSING"),
			chromedp.SetUploadFiles(chromedp.ID("b-file"), []string{applicants}), chromedp.Click(chromedp.ID("batch-submit")))
		b.until("the job page", `!!document.getElementById("job")`)
		b.until("the job done", `document.getElementById("job").getAttribute("data-status") === "done"`)
		if v := eval[int](b, `document.getElementById("job-progress").value`); v != 3 {
			t.Errorf("the progress bar at the end: %d of 3", v)
		}
		b.until("the results link", `!document.getElementById("job-results").hidden`)
		b.shot("batch")
		res := eval[string](b, `fetch(document.getElementById("job-results").href).then(r => r.text())`)
		rows, err := csv.NewReader(strings.NewReader(res)).ReadAll()
		if err != nil || len(rows) != 4 {
			t.Fatalf("the results (%v):\n%s", err, res)
		}
		// row, reference, subject, status, lists, measures, complete, error
		if r := rows[1]; r[3] != "ok" || !strings.Contains(r[4], "DISHONEST-JUDGMENT-DEBTORS") || r[5] == "" {
			t.Errorf("the debtor's result: %q", r)
		}
		if r := rows[2]; r[3] != "ok" || r[4] != "" {
			t.Errorf("the clean applicant's result: %q", r)
		}
		if r := rows[3]; r[3] != "error" || !strings.Contains(r[7], "invalid_identifier") {
			t.Errorf("the bad row's result: %q", r)
		}
	})

	t.Run("operator", func(t *testing.T) {
		acc := f.accounts["operator"]
		b := newBrowser(t, exe, out, 1280, 900)
		b.open(acc.Login)
		b.do(chromedp.Click(chromedp.ID("link-login")))
		b.until("the federation page", `location.pathname === "/console/federation" && !!document.getElementById("tree")`)
		b.until("the revoked serial", `document.getElementById("revocations").innerText.includes("4242")`)
		b.open(f.api[acc.Node] + "/console/audit?operation=console.login")
		b.until("the audit entries", `document.querySelectorAll("#audit-entries tbody tr").length > 0`)
		if st := b.text("#chain-status"); st == "" {
			t.Error("the audit page shows no chain status")
		}
		b.shot("audit")
		b.open(f.api[acc.Node] + "/console/stats")
		b.until("the operator's charts", `document.querySelectorAll("figure.chart").length >= 4`)
		for _, page := range []string{"/console/check", "/console/records", "/console/cases", "/console/batch"} {
			if st := b.open(f.api[acc.Node] + page); st != 403 {
				t.Errorf("an operator opening %s: HTTP %d, want 403", page, st)
			}
		}
	})

	t.Run("phone", func(t *testing.T) {
		acc := f.accounts["coordinator"]
		b := newBrowser(t, exe, out, 390, 844)
		b.open(f.api[acc.Node] + "/console/login")
		b.do(chromedp.SendKeys(chromedp.ID("name"), acc.Name), chromedp.SendKeys(chromedp.ID("password"), acc.Password),
			chromedp.Click(chromedp.ID("login")))
		b.until("the check page", `!!document.getElementById("check-form")`)
		if w := eval[int](b, `document.documentElement.scrollWidth`); w > 390 {
			t.Errorf("the check page is %d px wide on a 390 px phone", w)
		}
		b.shot("check-phone")
	})
}
