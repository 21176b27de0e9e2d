package main

import (
	"io"

	"github.com/jedib0t/go-pretty/v6/table"
	"github.com/jedib0t/go-pretty/v6/text"
)

// plainTable is the style of every table credfed prints: no borders, no
// rules, two spaces between columns, headers as given. go-pretty measures
// cells by their display width, so Chinese names (two columns each on a
// terminal) keep the columns aligned.
var plainTable = func() table.Style {
	s := table.StyleDefault
	s.Name = "credfed"
	s.Options = table.OptionsNoBordersAndSeparators
	s.Box.PaddingLeft = ""
	s.Box.PaddingRight = "  "
	s.Format.Header = text.FormatDefault
	s.Format.HeaderAlign = text.AlignLeft
	s.Format.RowAlign = text.AlignLeft
	return s
}()

// writeTable prints a table with a header row, indented by indent.
func writeTable(w io.Writer, indent string, header []string, rows [][]string) error {
	t := table.NewWriter()
	t.SetStyle(plainTable)
	t.SuppressTrailingSpaces()
	t.AppendHeader(tableRow(header))
	for _, r := range rows {
		t.AppendRow(tableRow(r))
	}
	out := t.Render()
	if indent != "" {
		out = indentLines(out, indent)
	}
	_, err := io.WriteString(w, out+"\n")
	return err
}

func tableRow(cells []string) table.Row {
	r := make(table.Row, len(cells))
	for i, c := range cells {
		r[i] = c
	}
	return r
}

func indentLines(s, indent string) string {
	out := make([]byte, 0, len(s)+len(indent)*8)
	out = append(out, indent...)
	for i := 0; i < len(s); i++ {
		out = append(out, s[i])
		if s[i] == '\n' && i+1 < len(s) {
			out = append(out, indent...)
		}
	}
	return string(out)
}
