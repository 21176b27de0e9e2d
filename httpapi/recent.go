package httpapi

import (
	"sync"
	"time"

	"credfed/api"
)

// recent counts the API's requests and server errors of the last five
// minutes, in one-minute buckets (GET /v1/federation's "api").
type recent struct {
	mu      sync.Mutex
	buckets [5]struct {
		minute           int64
		requests, errors int64
	}
}

func (rc *recent) add(now time.Time, serverError bool) {
	m := now.Unix() / 60
	rc.mu.Lock()
	defer rc.mu.Unlock()
	b := &rc.buckets[m%int64(len(rc.buckets))]
	if b.minute != m {
		b.minute, b.requests, b.errors = m, 0, 0
	}
	b.requests++
	if serverError {
		b.errors++
	}
}

func (rc *recent) health(now time.Time) *api.APIHealth {
	m := now.Unix() / 60
	h := &api.APIHealth{}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for _, b := range rc.buckets {
		if m-b.minute < int64(len(rc.buckets)) {
			h.Requests5m += b.requests
			h.Errors5m += b.errors
		}
	}
	return h
}
