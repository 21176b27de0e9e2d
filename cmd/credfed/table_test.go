package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/jedib0t/go-pretty/v6/text"

	"credfed/api"
)

// columnStarts returns, for each row of cells, the display column (as a
// terminal shows it: Chinese characters two columns wide) at which each
// non-empty cell starts in its line of out, which must follow the rows in
// order.
func columnStarts(t *testing.T, out string, rows [][]string) [][]int {
	t.Helper()
	lines := strings.Split(out, "\n")
	var starts [][]int
	li := 0
	for _, row := range rows {
		var cols []int
		for ; li < len(lines) && cols == nil; li++ {
			cols = cellStarts(lines[li], row)
		}
		if cols == nil {
			t.Fatalf("no line holds the cells %q in order in:\n%s", row, out)
		}
		starts = append(starts, cols)
	}
	return starts
}

// cellStarts returns the display columns of the cells in line, -1 for
// empty cells, or nil unless line starts with the first cell and holds
// them all in order.
func cellStarts(line string, row []string) []int {
	if !strings.HasPrefix(line, row[0]) {
		return nil
	}
	cols := []int{}
	pos := 0
	for _, cell := range row {
		if cell == "" {
			cols = append(cols, -1)
			continue
		}
		i := strings.Index(line[pos:], cell)
		if i < 0 {
			return nil
		}
		cols = append(cols, text.StringWidth(line[:pos+i]))
		pos += i + len(cell)
	}
	return cols
}

// checkAligned fails unless every column starts at the same display
// column in every row.
func checkAligned(t *testing.T, out string, rows [][]string) {
	t.Helper()
	starts := columnStarts(t, out, rows)
	for c := range rows[0] {
		want := -1
		for r := range rows {
			if starts[r][c] < 0 {
				continue
			}
			if want < 0 {
				want = starts[r][c]
			}
			if starts[r][c] != want {
				t.Errorf("column %d of row %v starts at display column %d, not %d:\n%s", c, rows[r], starts[r][c], want, out)
			}
		}
	}
}

func TestFederationStatusAlignsChineseNames(t *testing.T) {
	f := &api.Federation{Federation: "demo", CatalogVersion: 1,
		Node: api.NodeStatus{Name: "浙江省", Role: "province", Region: "zhejiang", Status: "ready", Ready: true},
		Raft: api.RaftStatus{State: "Leader", Term: "2", Leader: "zhejiang", CommitIndex: "40", AppliedIndex: "40"},
		Regions: []api.Region{
			{Path: "zhejiang", Name: "浙江省", Role: "province", Raft: "voter", Exchange: "127.0.0.1:20001"},
			{Path: "zhejiang/quzhou", Name: "衢州市", Role: "city", Raft: "voter", Exchange: "127.0.0.1:20002"},
			{Path: "zhejiang/quzhou/kecheng", Name: "柯城区", Role: "district", Raft: "nonvoter", Exchange: "127.0.0.1:20003"},
			{Path: "zhejiang/hangzhou/x", Name: "Test district", Role: "district", Raft: "absent", Exchange: "127.0.0.1:20004"},
			{Path: "zhejiang/hangzhou/binjiang", Name: "滨江", Role: "district", Raft: "nonvoter", Exchange: "127.0.0.1:20005"},
		},
		Jobs: []api.JobStatus{
			{Name: "publish", State: "idle", Runs: 12, LastRun: "2026-12-01T10:00:00Z", LastSuccess: "2026-12-01T10:00:00Z", Progress: map[string]int64{"published": 3, "batches": 1}},
			{Name: "sweep", State: "failing", Runs: 3, Failures: 2, LastRun: "2026-12-01T09:00:00Z", LastError: "目录未就绪"},
		},
	}
	var buf bytes.Buffer
	if err := printFederation(&buf, f); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	var regions [][]string
	regions = append(regions, []string{"REGION", "NAME", "ROLE", "RAFT", "EXCHANGE"})
	for _, r := range f.Regions {
		regions = append(regions, []string{r.Path, r.Name, r.Role, r.Raft, r.Exchange})
	}
	checkAligned(t, out, regions)
	checkAligned(t, out, [][]string{
		{"JOB", "STATE", "RUNS", "FAILURES", "LAST RUN", "LAST SUCCESS", "PROGRESS", "LAST ERROR"},
		{"publish", "idle", "12", "0", "2026-12-01T10:00:00Z", "2026-12-01T10:00:00Z", "batches=1 published=3", ""},
		{"sweep", "failing", "3", "2", "2026-12-01T09:00:00Z", "", "", "目录未就绪"},
	})
	if !strings.Contains(out, "this node: province zhejiang (浙江省), raft Leader, term 2, leader zhejiang, commit 40, applied 40, ready") {
		t.Errorf("no line about the node:\n%s", out)
	}
}

func TestLookupTablesAlignChineseNames(t *testing.T) {
	rec := func(id, item, summary string) api.Record {
		return api.Record{ID: id, CatalogItem: item, Polarity: "negative", Severity: "ordinary", Status: "active",
			DecidedOn: "2026-11-02", DisplayUntil: "2027-11-02", Department: "market-supervision", Summary: summary}
	}
	ans := &api.LookupAnswer{SubjectPseudonym: "p-1", Index: api.LookupIndex{Consistency: "local", AppliedIndex: 9},
		Districts: []api.DistrictResult{
			{District: "zhejiang/quzhou/kecheng", Name: "柯城区", Status: "ok", Records: []api.Record{rec("kecheng-00001", "FOOD-DRUG-PENALTY", "销售过期食品（合成演示数据）")}},
			{District: "zhejiang/hangzhou/xihu", Name: "西湖区", Status: "ok", Records: []api.Record{rec("xihu-1", "MORAL-MODEL", "身边好人"), rec("xihu-2", "E-COMMERCE-PENALTY", "fake reviews")}},
			{District: "zhejiang/quzhou/longyou", Name: "龙游县", Status: "unreachable", Error: "district did not answer"},
		}}
	var buf bytes.Buffer
	if err := printLookup(&buf, ans); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	checkAligned(t, out, [][]string{
		{"DISTRICT", "NAME", "STATUS", "RECORDS", "NOTE"},
		{"zhejiang/quzhou/kecheng", "柯城区", "ok", "1", ""},
		{"zhejiang/hangzhou/xihu", "西湖区", "ok", "2", ""},
		{"zhejiang/quzhou/longyou", "龙游县", "unreachable", "0", "district did not answer"},
	})
	checkAligned(t, out, [][]string{
		{"DISTRICT", "RECORD", "ITEM", "KIND", "STATUS", "DECIDED", "SHOWN UNTIL", "DEPARTMENT", "SUMMARY"},
		{"柯城区", "kecheng-00001", "FOOD-DRUG-PENALTY", "negative/ordinary", "active", "2026-11-02", "2027-11-02", "market-supervision", "销售过期食品（合成演示数据）"},
		{"西湖区", "xihu-1", "MORAL-MODEL", "negative/ordinary", "active", "2026-11-02", "2027-11-02", "market-supervision", "身边好人"},
		{"西湖区", "xihu-2", "E-COMMERCE-PENALTY", "negative/ordinary", "active", "2026-11-02", "2027-11-02", "market-supervision", "fake reviews"},
	})
	for _, line := range strings.Split(out, "\n") {
		if strings.TrimRight(line, " ") != line {
			t.Errorf("trailing spaces in %q", line)
		}
	}
}
