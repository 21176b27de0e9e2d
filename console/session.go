package console

import (
	"container/list"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
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
	// reports are the last rejection reports of the session's uploads,
	// CSV, newest last (bounded by maxReports).
	mu      sync.Mutex
	reports []report
}

type report struct {
	id   string
	csv  []byte
	made time.Time
}

// maxReports and maxReportBytes bound what a session keeps of its
// uploads' rejection reports.
const (
	maxReports     = 4
	maxReportBytes = 8 << 20
)

func (s *Session) addReport(csv []byte, now time.Time) string {
	if len(csv) > maxReportBytes {
		csv = csv[:maxReportBytes]
	}
	id := randomToken(9)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reports = append(s.reports, report{id: id, csv: csv, made: now})
	if len(s.reports) > maxReports {
		s.reports = s.reports[len(s.reports)-maxReports:]
	}
	return id
}

func (s *Session) report(id string) ([]byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.reports {
		if r.id == id {
			return r.csv, true
		}
	}
	return nil, false
}

// sessions is the bounded set of open sessions: at the limit the one
// idle the longest is closed for a new one.
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
