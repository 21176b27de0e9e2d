package console

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"credfed/api"
	"credfed/certs"
	"credfed/credit"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Auditor writes the console's audit entries durably (the node's audit
// recorder); an error means the entry is not written.
type Auditor interface {
	Record(e Event) error
}

// Event is one audit entry of the console: a login or a logout.
type Event struct {
	// Operation is console.login or console.logout; Decision allowed or
	// denied; Reason why a login was denied (bad_password, throttled).
	Operation, Decision, Reason string
	// User is the account name as given; Caller, Role and Institution the
	// account's identity, when the account exists.
	User, Caller, Role, Institution string
}

// Decisions of an Event.
const (
	Allowed = "allowed"
	Denied  = "denied"
)

// NodeHealth is one node of the federation as the federation page shows
// it (Config.Nodes).
type NodeHealth struct {
	Name, Role, Region string
	// Reachable is false when the node's API did not answer; Error says
	// why: no_answer, no_api (none registered), unreadable, or "HTTP n".
	// The other fields are then empty.
	Reachable bool
	Error     string
	Ready     bool
	Status    string
	RaftState string
	Leader    string
	Applied   uint64
	// CertNotAfter is the end of the node's certificate, as its API
	// presented it.
	CertNotAfter time.Time
	// Requests and Errors are the node's API requests and server errors
	// of the last five minutes.
	Requests, Errors int64
}

// Config is what the console serves.
type Config struct {
	// Store holds the node's console accounts.
	Store *Store
	// API is the node's API handler, called in process as each account's
	// identity.
	API http.Handler
	// Federation, Region and NodeName name the node; accounts act with
	// its region.
	Federation, Region, NodeName string
	Audit                        Auditor
	// Identifiers are the node's identifier rules (test mode), for the
	// check as an identifier is typed.
	Identifiers credit.ParseOptions
	// Nodes returns every node's health (the federation page); nil shows
	// this node only.
	Nodes func(ctx context.Context) []NodeHealth
	// SessionIdle and SessionMax bound a session's idle time (default 30
	// minutes) and its life (default 8 hours); MaxSessions how many are
	// open at once (default 1000).
	SessionIdle, SessionMax time.Duration
	MaxSessions             int
	Now                     func() time.Time
	Logger                  *slog.Logger
	Registerer              prometheus.Registerer
}

// Server is the console's handler, mounted at /console/.
type Server struct {
	cfg      Config
	log      *slog.Logger
	mux      *http.ServeMux
	pages    map[string]*template.Template
	sessions *sessions
	throttle *throttle
	// hashing bounds the argon2id hashes computed at once (19 MiB each).
	hashing chan struct{}
	// uploads bounds the uploads handled at once (each holds its file and
	// what it becomes); a further one waits uploadWait for its turn.
	uploads    chan struct{}
	uploadWait time.Duration
	reports    reports
	// dummy is a hash checked for an unknown account name, so that its
	// answer takes as long as a wrong password's.
	dummy string
	// nameKey keys nameHash.
	nameKey []byte
	// probeWait bounds the login's question whether the API admits the
	// account's identity.
	probeWait time.Duration
	// sessionCookie and loginCookie are the cookies' names (cookieNames).
	sessionCookie, loginCookie string
	logins                     *prometheus.CounterVec
	flagged                    prometheus.Counter
	sessGaug                   prometheus.GaugeFunc
}

// New builds the console.
func New(cfg Config) (*Server, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.SessionIdle <= 0 {
		cfg.SessionIdle = 30 * time.Minute
	}
	if cfg.SessionMax <= 0 {
		cfg.SessionMax = 8 * time.Hour
	}
	if cfg.MaxSessions <= 0 {
		cfg.MaxSessions = 1000
	}
	pages, err := parsePages()
	if err != nil {
		return nil, err
	}
	dummy, err := HashPassword(randomToken(16))
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: cfg.Logger, mux: http.NewServeMux(), pages: pages,
		sessions: newSessions(cfg.MaxSessions, cfg.SessionIdle, cfg.SessionMax),
		throttle: newThrottle(), hashing: make(chan struct{}, 2), dummy: dummy,
		uploads: make(chan struct{}, 2), uploadWait: 10 * time.Second,
		nameKey: []byte(randomToken(32)), probeWait: 5 * time.Second,
		logins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "credfed_console_logins_total", Help: "Console login attempts by result.",
		}, []string{"result"}),
		flagged: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "credfed_console_logins_flagged_total", Help: "Console login attempts refused or slowed after repeated failures for one account.",
		}),
	}
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(s.logins, s.flagged, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "credfed_console_sessions", Help: "Open console sessions.",
		}, func() float64 { return float64(s.sessions.len()) }))
	}
	s.sessionCookie, s.loginCookie = cookieNames(cfg.Region)
	s.routes()
	return s, nil
}

// Sessions is the number of open sessions.
func (s *Server) Sessions() int { return s.sessions.len() }

// IssueLoginLink returns the path and query of a one-time login link
// for an account, good for ttl.
func (s *Server) IssueLoginLink(account string, ttl time.Duration) (string, error) {
	tok, err := s.cfg.Store.IssueLink(account, ttl, s.cfg.Now())
	if err != nil {
		return "", err
	}
	return "/console/login?token=" + url.QueryEscape(tok), nil
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	if !strings.HasPrefix(r.URL.Path, "/console/static/") {
		h.Set("Cache-Control", "no-store")
	}
	s.mux.ServeHTTP(w, r)
}

// page is one page of the console and the roles it admits.
type page struct {
	path  string
	title string // message key
	roles []certs.Role
}

// navPages are the pages in the navigation bar, in order.
var navPages = []page{
	{"/console/federation", "nav.federation", Roles},
	{"/console/check", "nav.check", []certs.Role{certs.Department, certs.Coordinator}},
	{"/console/batch", "nav.batch", []certs.Role{certs.Coordinator}},
	{"/console/records", "nav.records", []certs.Role{certs.Department}},
	{"/console/cases", "nav.cases", []certs.Role{certs.Department}},
	{"/console/audit", "nav.audit", []certs.Role{certs.Operator}},
	{"/console/stats", "nav.stats", []certs.Role{certs.Coordinator, certs.Operator}},
}

func pageRoles(path string) []certs.Role {
	for _, p := range navPages {
		if p.path == path {
			return p.roles
		}
	}
	return nil
}

// handler is a page's handler: the session is live and its role admitted.
type handler func(w http.ResponseWriter, r *http.Request, sess *Session, c *api.Client) error

func (s *Server) routes() {
	sub, _ := fs.Sub(staticFS, "static")
	static := http.StripPrefix("/console/static/", http.FileServerFS(sub))
	s.mux.Handle("GET /console/static/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=3600")
		static.ServeHTTP(w, r)
	}))
	s.mux.HandleFunc("GET /console/login", s.getLogin)
	s.mux.HandleFunc("POST /console/login", s.postLogin)
	s.mux.HandleFunc("POST /console/logout", s.postLogout)
	s.mux.HandleFunc("GET /console/lang", s.getLang)
	s.mux.HandleFunc("GET /console/{$}", s.authed(Roles, s.home))
	s.mux.HandleFunc("POST /console/validate", s.authed(Roles, s.postValidate))
	s.mux.HandleFunc("GET /console/federation", s.authed(pageRoles("/console/federation"), s.federation))
	s.mux.HandleFunc("GET /console/check", s.authed(pageRoles("/console/check"), s.getCheck))
	s.mux.HandleFunc("POST /console/check", s.authed(pageRoles("/console/check"), s.postCheck))
	s.mux.HandleFunc("GET /console/batch", s.authed(pageRoles("/console/batch"), s.getBatch))
	s.mux.HandleFunc("POST /console/batch", s.authed(pageRoles("/console/batch"), s.postBatch))
	s.mux.HandleFunc("GET /console/jobs/{id}", s.authed(pageRoles("/console/batch"), s.getJob))
	s.mux.HandleFunc("GET /console/jobs/{id}/status", s.authed(pageRoles("/console/batch"), s.getJobStatus))
	s.mux.HandleFunc("GET /console/jobs/{id}/results", s.authed(pageRoles("/console/batch"), s.getJobResults))
	s.mux.HandleFunc("GET /console/records", s.authed(pageRoles("/console/records"), s.getRecords))
	s.mux.HandleFunc("POST /console/records", s.authed(pageRoles("/console/records"), s.postRecords))
	s.mux.HandleFunc("GET /console/records/reports/{id}", s.authed(pageRoles("/console/records"), s.getReport))
	s.mux.HandleFunc("POST /console/records/{id}/correct", s.authed(pageRoles("/console/records"), s.postCorrect))
	s.mux.HandleFunc("GET /console/cases", s.authed(pageRoles("/console/cases"), s.getCases))
	s.mux.HandleFunc("POST /console/cases/{kind}/{id}", s.authed(pageRoles("/console/cases"), s.postDecide))
	s.mux.HandleFunc("GET /console/audit", s.authed(pageRoles("/console/audit"), s.getAudit))
	s.mux.HandleFunc("GET /console/stats", s.authed(pageRoles("/console/stats"), s.getStats))
	s.mux.HandleFunc("/console/", func(w http.ResponseWriter, r *http.Request) {
		s.renderError(w, r, nil, http.StatusNotFound, "error.notfound")
	})
}

// langCookie holds the language chosen; it is the same for every node.
const langCookie = "credfed-lang"

// cookieNames are the session's and the login form's cookies: named
// after the node, since a browser sends a host's cookies to every port of
// it (the demo's nodes share 127.0.0.1).
func cookieNames(region string) (session, login string) {
	sum := sha256.Sum256([]byte("console:" + region))
	tag := hex.EncodeToString(sum[:4])
	return "__Host-credfed-" + tag, "__Host-credfed-login-" + tag
}

// session returns the request's live session: its account still exists
// with the same role, institution and password, and is not disabled.
func (s *Server) session(r *http.Request) (*Session, bool) {
	ck, err := r.Cookie(s.sessionCookie)
	if err != nil {
		return nil, false
	}
	sess, ok := s.sessions.get(ck.Value, s.cfg.Now())
	if !ok {
		return nil, false
	}
	a, err := s.cfg.Store.Get(sess.Account.Name)
	if err != nil || a.Disabled || a.Role != sess.Account.Role || a.Institution != sess.Account.Institution || !a.Created.Equal(sess.Account.Created) ||
		a.Hash != sess.Account.Hash { // a new password ends the sessions opened with the old one
		s.sessions.close(ck.Value)
		return nil, false
	}
	return sess, true
}

// authed wraps a page: no session goes to the login page, a role the page
// does not admit gets 403, and a POST must carry the session's CSRF token
// and come from this origin.
func (s *Server) authed(roles []certs.Role, h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		sess, ok := s.session(r)
		if !ok {
			if r.Method == http.MethodGet && !strings.HasSuffix(r.URL.Path, "/status") {
				http.Redirect(w, r, "/console/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
				return
			}
			s.renderError(w, r, nil, http.StatusUnauthorized, "error.session")
			return
		}
		if !slices.Contains(roles, sess.Account.Role) {
			s.renderError(w, r, sess, http.StatusForbidden, "error.forbidden")
			return
		}
		if r.Method == http.MethodPost {
			// Bounded before the form is read for its token: reading it
			// reads the whole body.
			limit, upload := postLimit(r.URL.Path)
			r.Body = http.MaxBytesReader(w, r.Body, limit)
			if upload {
				release, ok := s.uploadSlot(r.Context())
				if !ok {
					s.renderError(w, r, sess, http.StatusServiceUnavailable, "error.busy")
					return
				}
				defer release()
				// A file past 1 MiB goes to a temporary file (removed when
				// the request ends), not to memory.
				var mbe *http.MaxBytesError
				if err := r.ParseMultipartForm(1 << 20); errors.As(err, &mbe) {
					s.renderError(w, r, sess, http.StatusRequestEntityTooLarge, "error.toolarge")
					return
				}
			}
			if !sameOrigin(r) || !tokenEqual(r.PostFormValue("csrf"), sess.CSRF) && !tokenEqual(r.Header.Get("X-CSRF-Token"), sess.CSRF) {
				s.renderError(w, r, sess, http.StatusForbidden, "error.csrf")
				return
			}
		}
		if err := h(w, r, sess, s.client(sess.Account)); err != nil {
			s.renderAPIError(w, r, sess, err)
		}
	}
}

// client calls the node's API as the account's identity.
func (s *Server) client(a Account) *api.Client {
	return api.NewClientTransport("https://node.invalid", apiTransport{h: s.cfg.API,
		id: a.Identity(s.cfg.Federation, s.cfg.Region)}, time.Minute)
}

// postLimit is the most a POST to path may send, and whether it is an
// upload.
func postLimit(path string) (int64, bool) {
	switch path {
	case "/console/records":
		return MaxUpload + 1<<20, true
	case "/console/batch":
		return MaxBatchUpload, true
	}
	return 1 << 20, false
}

// uploadSlot waits for one of the upload slots.
func (s *Server) uploadSlot(ctx context.Context) (func(), bool) {
	select {
	case s.uploads <- struct{}{}:
		return func() { <-s.uploads }, true
	default:
	}
	t := time.NewTimer(s.uploadWait)
	defer t.Stop()
	select {
	case s.uploads <- struct{}{}:
		return func() { <-s.uploads }, true
	case <-t.C:
	case <-ctx.Done():
	}
	return nil, false
}

// sameOrigin refuses a POST that a browser says comes from another site.
func sameOrigin(r *http.Request) bool {
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" && site != "none" {
		return false
	}
	if o := r.Header.Get("Origin"); o != "" && o != "null" {
		u, err := url.Parse(o)
		if err != nil || u.Host != r.Host {
			return false
		}
	}
	return true
}

func tokenEqual(got, want string) bool {
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

func (s *Server) home(w http.ResponseWriter, r *http.Request, sess *Session, _ *api.Client) error {
	to := "/console/federation"
	if sess.Account.Role != certs.Operator {
		to = "/console/check"
	}
	http.Redirect(w, r, to, http.StatusSeeOther)
	return nil
}

func (s *Server) getLang(w http.ResponseWriter, r *http.Request) {
	lang := r.URL.Query().Get("to")
	if lang != "en" {
		lang = "zh"
	}
	http.SetCookie(w, &http.Cookie{Name: langCookie, Value: lang, Path: "/console/", MaxAge: 365 * 24 * 3600, Secure: true, SameSite: http.SameSiteLaxMode})
	back := r.URL.Query().Get("back")
	if !localPath(back) {
		back = "/console/"
	}
	http.Redirect(w, r, back, http.StatusSeeOther)
}

// localPath accepts only a path of the console as a redirect target (no
// control character: a browser drops some of them from a URL).
func localPath(p string) bool {
	return strings.HasPrefix(p, "/console/") && !strings.HasPrefix(p, "//") && !strings.ContainsAny(p, "\\") &&
		!strings.ContainsFunc(p, func(r rune) bool { return r < 0x20 || r == 0x7f })
}

func langOf(r *http.Request) string {
	if ck, err := r.Cookie(langCookie); err == nil && ck.Value == "en" {
		return "en"
	}
	return "zh"
}

// audit records a console event of the account.
func (s *Server) audit(r *http.Request, a Account, op, decision, reason string) error {
	if s.cfg.Audit == nil {
		return nil
	}
	id := a.Identity(s.cfg.Federation, s.cfg.Region)
	e := Event{Operation: op, Decision: decision, Reason: reason, User: a.Name}
	if a.Role != "" {
		e.Caller, e.Role, e.Institution = id.String(), string(a.Role), a.Institution
	}
	return s.cfg.Audit.Record(e)
}

// nameHash is an account name as the log and the audit show it: keyed
// with the server's secret, since a name no account has may be a password
// typed into the wrong field, and a plain hash of one is found again by
// hashing a dictionary. The same name hashes alike while the server runs.
func (s *Server) nameHash(name string) string {
	m := hmac.New(sha256.New, s.nameKey)
	m.Write([]byte("console-account:" + name))
	return hex.EncodeToString(m.Sum(nil)[:6])
}

func (s *Server) getLogin(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.session(r); ok && r.URL.Query().Get("token") == "" {
		http.Redirect(w, r, "/console/", http.StatusSeeOther)
		return
	}
	v := s.view(r, nil, "login.title")
	d := loginData{Next: r.URL.Query().Get("next")}
	if tok := r.URL.Query().Get("token"); tok != "" {
		a, err := s.cfg.Store.PeekLink(tok, s.cfg.Now())
		if err != nil {
			v.Error = v.T(linkErrorKey(err))
		} else {
			d.Token, d.TokenAccount = tok, a
		}
	}
	d.CSRF = s.loginCSRF(w, r)
	v.Data = d
	s.render(w, v, "login", http.StatusOK)
}

type loginData struct {
	CSRF, Next, Token string
	TokenAccount      Account
	Name              string
}

// loginCSRF returns the login form's token, set as a cookie too (the form
// has no session yet; a cross-site page can neither read nor set it).
func (s *Server) loginCSRF(w http.ResponseWriter, r *http.Request) string {
	if ck, err := r.Cookie(s.loginCookie); err == nil && len(ck.Value) >= 20 {
		return ck.Value
	}
	tok := randomToken(24)
	http.SetCookie(w, &http.Cookie{Name: s.loginCookie, Value: tok, Path: "/", Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	return tok
}

func linkErrorKey(err error) string {
	switch {
	case errors.Is(err, ErrTokenUsed):
		return "login.link_used"
	case errors.Is(err, ErrTokenExpired):
		return "login.link_expired"
	case errors.Is(err, ErrNoAccount):
		return "login.link_account"
	}
	return "login.link_unknown"
}

func (s *Server) postLogin(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	v := s.view(r, nil, "login.title")
	d := loginData{Next: r.PostFormValue("next"), Name: r.PostFormValue("name")}
	ck, err := r.Cookie(s.loginCookie)
	if err != nil || !sameOrigin(r) || !tokenEqual(r.PostFormValue("csrf"), ck.Value) {
		d.CSRF = s.loginCSRF(w, r)
		v.Data, v.Error = d, v.T("error.csrf")
		s.render(w, v, "login", http.StatusForbidden)
		return
	}
	d.CSRF = ck.Value
	now := s.cfg.Now()
	var a Account
	if tok := r.PostFormValue("token"); tok != "" {
		a, err = s.cfg.Store.UseLink(tok, now)
		if err == nil && a.Disabled {
			err = ErrBadPassword
		}
		if err != nil {
			s.logins.WithLabelValues("link_refused").Inc()
			v.Data, v.Error = d, v.T(linkErrorKey(err))
			s.render(w, v, "login", http.StatusUnauthorized)
			return
		}
	} else {
		name, password := d.Name, r.PostFormValue("password")
		throttled := func(wait time.Duration, first bool) {
			s.logins.WithLabelValues("throttled").Inc()
			s.flagged.Inc()
			if first { // a refusal costs no hash: only the first of a delay is audited
				who := Account{Name: name}
				if _, err := s.cfg.Store.Get(name); err != nil {
					who.Name = "unknown:" + s.nameHash(name)
				}
				_ = s.audit(r, who, "console.login", Denied, "throttled")
			}
			v.Data, v.Error = d, fmt.Sprintf(v.T("login.throttled"), int(wait.Seconds()+0.999))
			w.Header().Set("Retry-After", fmt.Sprint(int(wait.Seconds()+0.999)))
			s.render(w, v, "login", http.StatusTooManyRequests)
		}
		if wait, first := s.throttle.refuse(name, now); wait > 0 {
			throttled(wait, first)
			return
		}
		select {
		case s.hashing <- struct{}{}:
		case <-r.Context().Done():
			return
		}
		// Asked again with the slot held: attempts sent at once all passed
		// the first question before any of them failed.
		now = s.cfg.Now()
		if wait, first := s.throttle.refuse(name, now); wait > 0 {
			<-s.hashing
			throttled(wait, first)
			return
		}
		acc, gerr := s.cfg.Store.Get(name)
		hash := s.dummy
		if gerr == nil {
			hash = acc.Hash
		}
		good := VerifyPassword(hash, password) && gerr == nil && !acc.Disabled
		<-s.hashing
		if !good {
			n, flagged := s.throttle.fail(name, now)
			reason := "bad_password"
			if flagged {
				reason = "throttled"
				s.flagged.Inc()
				s.log.Warn("console logins failing for one account", "account", s.nameHash(name), "failures", n)
			}
			s.logins.WithLabelValues("failed").Inc()
			who := Account{Name: name, Role: acc.Role, Institution: acc.Institution, Created: acc.Created}
			if gerr != nil {
				// A name no account has may be a password typed in the
				// wrong field: the chained audit log keeps only its hash.
				who = Account{Name: "unknown:" + s.nameHash(name)}
			}
			_ = s.audit(r, who, "console.login", Denied, reason)
			v.Data, v.Error = d, v.T("login.failed")
			s.render(w, v, "login", http.StatusUnauthorized)
			return
		}
		s.throttle.succeed(name)
		a = acc
	}
	// An identity the API refuses (suspended, its region removed) is
	// refused here, with the API's reason, rather than let in to pages
	// that all refuse it.
	// The question is bounded: an API that does not answer (Raft busy)
	// lets the login go on, whose pages ask again.
	probe, cancel := context.WithTimeout(r.Context(), s.probeWait)
	_, err = s.client(a).Federation(probe)
	cancel()
	if api.Code(err) == api.CodeUnauthenticated {
		_ = s.audit(r, a, "console.login", Denied, "identity_refused")
		s.logins.WithLabelValues("identity_refused").Inc()
		v.Data, v.Error = d, v.T("login.identity_refused")+" ("+apiMessage(v, err)+")"
		s.render(w, v, "login", http.StatusForbidden)
		return
	}
	if err := s.audit(r, a, "console.login", Allowed, ""); err != nil {
		// A login that cannot be audited does not happen.
		v.Data, v.Error = d, v.T("error.unavailable")
		s.render(w, v, "login", http.StatusServiceUnavailable)
		return
	}
	s.logins.WithLabelValues("ok").Inc()
	if ck, err := r.Cookie(s.sessionCookie); err == nil {
		s.sessions.close(ck.Value) // the browser's previous session, whoever's it was
	}
	id, _ := s.sessions.open(a, now)
	http.SetCookie(w, &http.Cookie{Name: s.sessionCookie, Value: id, Path: "/", Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	next := d.Next
	if !localPath(next) || strings.HasPrefix(next, "/console/login") {
		next = "/console/"
	}
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (s *Server) postLogout(w http.ResponseWriter, r *http.Request) {
	sess, ok := s.session(r)
	if ok {
		if !sameOrigin(r) || !tokenEqual(r.PostFormValue("csrf"), sess.CSRF) {
			s.renderError(w, r, sess, http.StatusForbidden, "error.csrf")
			return
		}
		ck, _ := r.Cookie(s.sessionCookie)
		s.sessions.close(ck.Value)
		_ = s.audit(r, sess.Account, "console.logout", Allowed, "")
	}
	http.SetCookie(w, &http.Cookie{Name: s.sessionCookie, Value: "", Path: "/", MaxAge: -1, Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, "/console/login", http.StatusSeeOther)
}
