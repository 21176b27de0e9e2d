package api

// AuditPage is GET /v1/audit's answer: the answering node's audit entries
// that the query selects, oldest first. Next, when set, is the cursor of
// the next page (pass it as ?cursor=); a page may hold fewer entries than
// the limit and still have a next one (the node examines a bounded number
// of entries per page).
type AuditPage struct {
	Node string `json:"node"`
	// Chain is the state of the node's audit chain as the page was read.
	Chain   *AuditChain  `json:"chain,omitempty"`
	Entries []AuditEntry `json:"entries"`
	Next    string       `json:"next,omitempty"`
}

// AuditEntry is one entry of a node's audit log: who did what, when and
// why, about which subject (a pseudonym, never an identifier) and which
// records (ids, never content), and the entry's place in the hash chain.
type AuditEntry struct {
	Seq    uint64 `json:"seq"`
	At     string `json:"at"`
	Node   string `json:"node,omitempty"`
	Caller string `json:"caller,omitempty"`
	// Requester is who the caller asked on behalf of, when another.
	Requester      string   `json:"requester,omitempty"`
	Role           string   `json:"role,omitempty"`
	Institution    string   `json:"institution,omitempty"`
	User           string   `json:"user,omitempty"`
	Operation      string   `json:"operation"`
	Purpose        string   `json:"purpose,omitempty"`
	Reference      string   `json:"reference,omitempty"`
	Authorization  string   `json:"authorization,omitempty"`
	Authentication string   `json:"authentication,omitempty"`
	Subject        string   `json:"subject,omitempty"`
	District       string   `json:"district,omitempty"`
	Records        []string `json:"records,omitempty"`
	Pseudonyms     []string `json:"pseudonyms,omitempty"`
	Count          int      `json:"count,omitempty"`
	LookupID       string   `json:"lookup_id,omitempty"`
	Decision       string   `json:"decision"`
	Reason         string   `json:"reason,omitempty"`
	// Prev and Hash link the entry into the chain (lowercase hex).
	Prev string `json:"prev"`
	Hash string `json:"hash"`
}

// AuditChain is the state of a node's audit chain: its head, and its
// newest anchor in the replicated state.
type AuditChain struct {
	// Head and HeadHash are the last entry (lowercase hex).
	Head     uint64 `json:"head"`
	HeadHash string `json:"head_hash"`
	// Anchors counts the node's anchors; Anchored is the newest one's
	// entry and AnchoredAt when it was taken (RFC 3339).
	Anchors    int    `json:"anchors"`
	Anchored   uint64 `json:"anchored"`
	AnchoredAt string `json:"anchored_at,omitempty"`
	// Status is "anchored" (the newest anchor's entry is in the chain
	// with the anchored hash), "unanchored" (no anchor yet), "behind"
	// (the chain ends before its newest anchor: a restore, or entries
	// removed) or "mismatch" (the anchored entry has another hash).
	// `credfed audit verify` checks every link and every anchor.
	Status string `json:"status"`
}
