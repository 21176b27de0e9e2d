package console

import (
	"bytes"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"path"
	"slices"
	"strings"
	"time"

	"credfed/api"
	"credfed/credit"
)

// view is what every page's template gets.
type view struct {
	Lang, Title, Path string
	Account           *Account
	CSRF              string
	Nav               []navLink
	NodeName, Region  string
	Error, Notice     string
	Data              any
}

type navLink struct {
	Path, Label string
	Current     bool
}

// T is the message of key in the page's language; a key with no message
// shows its last part (a status or code as the API names it).
func (v *view) T(key string) string { return message(v.Lang, key) }

// Tf is T with fmt.Sprintf arguments.
func (v *view) Tf(key string, args ...any) string { return fmt.Sprintf(message(v.Lang, key), args...) }

// OtherLang is the language the toggle switches to.
func (v *view) OtherLang() string {
	if v.Lang == "en" {
		return "zh"
	}
	return "en"
}

func (s *Server) view(r *http.Request, sess *Session, title string) *view {
	v := &view{Lang: langOf(r), Path: r.URL.RequestURI(), NodeName: s.cfg.NodeName, Region: s.cfg.Region}
	if r.Method != http.MethodGet {
		// The language switch opens the page again with GET: a form's
		// address is not one (its answer shows the page it belongs to).
		v.Path = "/console/"
		for _, p := range navPages {
			if strings.HasPrefix(r.URL.Path, p.path) {
				v.Path = p.path
			}
		}
	}
	v.Title = v.T(title)
	if sess != nil {
		a := sess.Account
		v.Account, v.CSRF = &a, sess.CSRF
		for _, p := range navPages {
			if slices.Contains(p.roles, a.Role) {
				v.Nav = append(v.Nav, navLink{Path: p.path, Label: v.T(p.title), Current: strings.HasPrefix(r.URL.Path, p.path)})
			}
		}
	}
	return v
}

var funcs = template.FuncMap{
	"date": func(t time.Time) string {
		if t.IsZero() {
			return "—"
		}
		return t.In(credit.ChinaStandardTime).Format("2006-01-02 15:04")
	},
	// ts shows an RFC 3339 time of the API in China Standard Time, to
	// the second; anything else (a date) as it is.
	"ts": func(v string) string {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return v
		}
		return t.In(credit.ChinaStandardTime).Format("2006-01-02 15:04:05")
	},
	"join": strings.Join,
	"cell": func(c api.Cell) string {
		if c.Value == nil {
			return "<5"
		}
		return fmt.Sprint(*c.Value)
	},
	"add": func(a, b int) int { return a + b },
	"mul": func(a, b int) int { return a * b },
	// barw is a bar's width in the chart's units (its share of 260).
	"barw":       func(share float64) int { return int(share * 2.6) },
	"regionView": func(v *view, n *regionNode) regionView { return regionView{V: v, N: n} },
}

// regionView is one region of the federation tree and the page it is on.
type regionView struct {
	V *view
	N *regionNode
}

func parsePages() (map[string]*template.Template, error) {
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return nil, err
	}
	out := map[string]*template.Template{}
	for _, n := range names {
		base := strings.TrimSuffix(path.Base(n), ".html")
		if base == "layout" {
			continue
		}
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", n)
		if err != nil {
			return nil, fmt.Errorf("console: template %s: %w", n, err)
		}
		out[base] = t
	}
	return out, nil
}

// render writes a page; a template that fails writes nothing of it.
func (s *Server) render(w http.ResponseWriter, v *view, name string, status int) {
	t, ok := s.pages[name]
	if !ok {
		http.Error(w, "no such page template", http.StatusInternalServerError)
		return
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "layout", v); err != nil {
		s.log.Error("console template failed", "page", name, "error", err)
		http.Error(w, "the page could not be drawn", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

func (s *Server) renderError(w http.ResponseWriter, r *http.Request, sess *Session, status int, key string) {
	v := s.view(r, sess, "error.title")
	v.Error = v.T(key)
	v.Data = errorData{Status: status}
	s.render(w, v, "error", status)
}

type errorData struct {
	Status int
	Code   string
	Detail string
}

// renderAPIError shows what the API refused, with its code and message.
func (s *Server) renderAPIError(w http.ResponseWriter, r *http.Request, sess *Session, err error) {
	v := s.view(r, sess, "error.title")
	var se *api.StatusError
	status := http.StatusBadGateway
	d := errorData{}
	if errors.As(err, &se) {
		status, d.Code, d.Detail = se.Status, se.Err.Code, se.Err.Message
		v.Error = v.T("code." + se.Err.Code)
	} else {
		v.Error = v.T("error.unavailable")
		s.log.Warn("console page failed", "error", err)
	}
	d.Status = status
	v.Data = d
	s.render(w, v, "error", status)
}

// apiMessage is a refusal of the API as a form shows it.
func apiMessage(v *view, err error) string {
	var se *api.StatusError
	if errors.As(err, &se) {
		return v.T("code."+se.Err.Code) + ": " + se.Err.Message
	}
	return v.T("error.unavailable")
}
