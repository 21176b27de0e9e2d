package console

import (
	"container/list"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"slices"
	"sync"
	"time"
)

// Session is one logged-in browser.
type Session struct {
	// id is the cookie's value; only its hash is the map's key.
	CSRF     string
	Account  Account
	Created  time.Time
	lastSeen time.Time
	// jobs are the batch checks the session submitted, newest last (at
	// most maxSessionJobs), for the batch page to list.
	jobsMu sync.Mutex
	jobs   []string
	// done are the corrections and decisions the session made, newest
	// last (at most maxSessionJobs): the page a form redirects to says
	// what was done only if this session did it, not because a link's
	// query says so.
	done []doneAct
}

// doneAct is one correction (page records: the record and its new
// version) or decision (page cases: the kind, the case and the outcome).
type doneAct struct{ page, a, b, c string }

func (s *Session) addDone(d doneAct) {
	s.jobsMu.Lock()
	defer s.jobsMu.Unlock()
	s.done = appendLast(s.done, d, maxSessionJobs)
}

// did says whether the session made d.
func (s *Session) did(d doneAct) bool {
	s.jobsMu.Lock()
	defer s.jobsMu.Unlock()
	return slices.Contains(s.done, d)
}

// appendLast appends v to list and keeps the last n.
func appendLast[T any](list []T, v T, n int) []T {
	list = append(list, v)
	if len(list) > n {
		list = list[len(list)-n:]
	}
	return list
}

// maxSessionJobs bounds the jobs a session lists.
const maxSessionJobs = 10

func (s *Session) addJob(id string) {
	s.jobsMu.Lock()
	defer s.jobsMu.Unlock()
	s.jobs = appendLast(s.jobs, id, maxSessionJobs)
}

// recentJobs are the session's jobs, newest first.
func (s *Session) recentJobs() []string {
	s.jobsMu.Lock()
	defer s.jobsMu.Unlock()
	out := make([]string, len(s.jobs))
	for i, j := range s.jobs {
		out[len(s.jobs)-1-i] = j
	}
	return out
}

// maxReports and maxReportBytes bound what a session keeps of its
// uploads' rejection reports, maxReportsTotal what all sessions keep
// (past it the oldest reports go first): sessions are many, and an
// account may open several.
const (
	maxReports      = 4
	maxReportBytes  = 8 << 20
	maxReportsTotal = 64 << 20
	// reportOverhead is what a report counts beyond its bytes.
	reportOverhead = 256
)

// reports are the sessions' rejection reports, CSV, oldest first.
type reports struct {
	mu    sync.Mutex
	l     list.List // of *report
	bytes int
}

type report struct {
	owner *Session
	id    string
	csv   []byte
	made  time.Time
}

func (rs *reports) add(owner *Session, csv []byte, now time.Time) string {
	if len(csv) > maxReportBytes {
		csv = csv[:maxReportBytes]
	}
	id := randomToken(9)
	rs.mu.Lock()
	defer rs.mu.Unlock()
	rs.l.PushBack(&report{owner: owner, id: id, csv: csv, made: now})
	rs.bytes += len(csv) + reportOverhead
	n := 0
	for e := rs.l.Back(); e != nil; {
		prev := e.Prev()
		if e.Value.(*report).owner == owner {
			if n++; n > maxReports {
				rs.removeLocked(e)
			}
		}
		e = prev
	}
	for rs.bytes > maxReportsTotal && rs.l.Len() > 0 {
		rs.removeLocked(rs.l.Front())
	}
	return id
}

func (rs *reports) removeLocked(e *list.Element) {
	rs.bytes -= len(rs.l.Remove(e).(*report).csv) + reportOverhead
}

func (rs *reports) get(owner *Session, id string) ([]byte, bool) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	for e := rs.l.Front(); e != nil; e = e.Next() {
		if r := e.Value.(*report); r.owner == owner && r.id == id {
			return r.csv, true
		}
	}
	return nil, false
}

// sessions is the bounded set of open sessions: at the limit the one
// idle the longest is closed for a new one; an account's own sessions are
// bounded by maxAccountSessions, so that one account logging in again
// and again closes its own sessions, not everyone's.
type sessions struct {
	mu       sync.Mutex
	byHash   map[[32]byte]*list.Element // of *entry
	lru      list.List                  // front: used longest ago
	max      int
	idle     time.Duration
	absolute time.Duration
}

type entry struct {
	hash [32]byte
	s    *Session
}

// maxAccountSessions is how many sessions one account has at once.
const maxAccountSessions = 10

func newSessions(max int, idle, absolute time.Duration) *sessions {
	return &sessions{byHash: map[[32]byte]*list.Element{}, max: max, idle: idle, absolute: absolute}
}

// open starts a session for a and returns its cookie value.
func (ss *sessions) open(a Account, now time.Time) (string, *Session) {
	id := randomToken(32)
	s := &Session{CSRF: randomToken(32), Account: a, Created: now, lastSeen: now}
	h := sha256.Sum256([]byte(id))
	ss.mu.Lock()
	defer ss.mu.Unlock()
	n := 0
	for e := ss.lru.Back(); e != nil; {
		prev := e.Prev()
		if old := e.Value.(*entry); old.s.Account.Name == a.Name {
			if n++; n >= maxAccountSessions {
				ss.lru.Remove(e)
				delete(ss.byHash, old.hash)
			}
		}
		e = prev
	}
	for ss.lru.Len() >= ss.max {
		old := ss.lru.Remove(ss.lru.Front()).(*entry)
		delete(ss.byHash, old.hash)
	}
	ss.byHash[h] = ss.lru.PushBack(&entry{hash: h, s: s})
	return id, s
}

// get returns the live session of a cookie value and marks it used.
func (ss *sessions) get(id string, now time.Time) (*Session, bool) {
	h := sha256.Sum256([]byte(id))
	ss.mu.Lock()
	defer ss.mu.Unlock()
	e, ok := ss.byHash[h]
	if !ok {
		return nil, false
	}
	s := e.Value.(*entry).s
	if now.Sub(s.lastSeen) > ss.idle || now.Sub(s.Created) > ss.absolute {
		ss.lru.Remove(e)
		delete(ss.byHash, h)
		return nil, false
	}
	s.lastSeen = now
	ss.lru.MoveToBack(e)
	return s, true
}

// close ends the session of a cookie value.
func (ss *sessions) close(id string) {
	h := sha256.Sum256([]byte(id))
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if e, ok := ss.byHash[h]; ok {
		ss.lru.Remove(e)
		delete(ss.byHash, h)
	}
}

// closeAccount ends every session of an account.
func (ss *sessions) closeAccount(name string) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	for h, e := range ss.byHash {
		if e.Value.(*entry).s.Account.Name == name {
			ss.lru.Remove(e)
			delete(ss.byHash, h)
		}
	}
}

func (ss *sessions) len() int {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.lru.Len()
}

func randomToken(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return base64.RawURLEncoding.EncodeToString(b)
}
