package storage

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/dgraph-io/badger/v4"
)

// Key families (see doc.go for the layout). Each key starts with one family
// byte and '/', except the audit head, which is "a!head" so that it sorts
// outside the "a/" range.
const (
	famRecord     = 'r' // r/<department>\x00<id> → latest version (CBOR credit.Record)
	famVersion    = 'v' // v/<department>\x00<id>\x00<version:be32> → that version
	famSubject    = 's' // s/<subject>\x00<department>\x00<id> → summary fields (encodeFacts) or empty
	famByID       = 'i' // layout 2 only: i/<id>\x00<department> → empty, a by-id index nothing read (dropped by the upgrade to 3)
	famOutboxPage = 'P' // P/<last seq:be64> → an outbox page: marked subjects with their seqs (outbox.go)
	famOutbox     = 'o' // layouts 1–3: o/<subject> → seq:be64 (converted to pages by the upgrade to 4)
	famOutboxSeq  = 'O' // layouts 2–3: O/<seq:be64> → subject (the same markers in sequence order)
	famAudit      = 'a' // a/<seq:be64> → CBOR AuditEntry
	famAuditSubj  = 'A' // A/<pseudonym>\x00<seq:be64> → empty
	famMeta       = 'm' // m/<name> → value

	famPseudonym = 'n' // n/<subject> → pseudonym (16 bytes)
	famDue       = 'e' // e/<date:be32, offset>…<subject> → empty (due.go)
	famJob       = 'j' // j/<job name> → the job's saved status and progress (jobs.go)
	famIssued    = 'u' // u/<district>\x00<at:be64><pseudonym> → empty (custody.go)
	famCustody   = 'U' // U/<district> → CBOR Custody (custody.go)

	// Owned by the consensus package (see doc.go).
	famIndexState = 'x' // Raft FSM replicated state
	// Reserved for later issues.
	famObjection = 'b' // objections
	famRepair    = 'p' // repairs
)

// layoutVersion is the version of the key layout, stored under m/layout.
// 2 added the O/ family; 3 keeps each record's summary fields in its
// subject index entry (encodeFacts) and a record's latest version under
// r/ alone (v/ holds the superseded ones), and writes no i/ family. A layout-2 build refuses a
// layout-3 directory: it would rewrite records without their entries'
// facts, and this build would then believe the stale ones; and it would
// find no v/ entry of a record's latest version. 4 keeps the outbox in
// pages (P/, one per commit's marked subjects) instead of a marker per
// subject in o/ and O/; a layout-3 build would not see the pages, and
// refuses it. 5 acknowledges audit appends in the audit journal
// (auditjournal.go) before they reach a/, A/ and a!head. A layout-4 build
// refuses a layout-5 directory (ErrLayoutVersion), even one stopped
// cleanly: it would not read the journal, and would lose what a crash
// left there. This build writes 5 at its first open, so going back to an
// earlier build takes a restore of a backup taken by that build.
const layoutVersion = "5"

// maxKeyPart bounds each textual key part (department, id, subject).
const maxKeyPart = 256

var (
	metaLayoutKey  = []byte("m/layout")
	metaOutboxSeq  = []byte("m/oseq")
	metaRecordsKey = []byte("m/records")
	metaDueKey     = []byte("m/due")
	auditHeadKey   = []byte("a!head")
)

func prefix(fam byte, n int) []byte {
	b := make([]byte, 0, 2+n)
	return append(b, fam, '/')
}

// checkPart validates one textual key part.
func checkPart(what, s string) error {
	switch {
	case s == "":
		return fmt.Errorf("%w: %s is empty", ErrInvalidRecord, what)
	case len(s) > maxKeyPart:
		return fmt.Errorf("%w: %s is longer than %d bytes", ErrInvalidRecord, what, maxKeyPart)
	case strings.IndexByte(s, 0) >= 0:
		return fmt.Errorf("%w: %s contains a NUL byte", ErrInvalidRecord, what)
	}
	return nil
}

func recordKey(dept, id string) []byte {
	b := prefix(famRecord, len(dept)+1+len(id))
	b = append(b, dept...)
	b = append(b, 0)
	return append(b, id...)
}

func versionPrefix(dept, id string) []byte {
	b := prefix(famVersion, len(dept)+len(id)+6)
	b = append(b, dept...)
	b = append(b, 0)
	b = append(b, id...)
	return append(b, 0)
}

func versionKey(dept, id string, v int) []byte {
	return binary.BigEndian.AppendUint32(versionPrefix(dept, id), uint32(v))
}

func subjectPrefix(subject string) []byte {
	b := prefix(famSubject, len(subject)+1)
	b = append(b, subject...)
	return append(b, 0)
}

func subjectKey(subject, dept, id string) []byte {
	b := subjectPrefix(subject)
	b = append(b, dept...)
	b = append(b, 0)
	return append(b, id...)
}

// splitDeptID splits "<department>\x00<id>".
func splitDeptID(rest []byte) (dept, id string, ok bool) {
	i := bytes.IndexByte(rest, 0)
	if i <= 0 || i == len(rest)-1 {
		return "", "", false
	}
	return string(rest[:i]), string(rest[i+1:]), true
}

func outboxKey(subject string) []byte {
	return append(prefix(famOutbox, len(subject)), subject...)
}

func outboxSeqKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64(prefix(famOutboxSeq, 8), seq)
}

func outboxPageKey(last uint64) []byte {
	return binary.BigEndian.AppendUint64(prefix(famOutboxPage, 8), last)
}

func auditKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64(prefix(famAudit, 8), seq)
}

func auditSubjectPrefix(pseudonym string) []byte {
	b := prefix(famAuditSubj, len(pseudonym)+9)
	b = append(b, pseudonym...)
	return append(b, 0)
}

func auditSubjectKey(pseudonym string, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(auditSubjectPrefix(pseudonym), seq)
}

func be64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

// getBE64 reads the big-endian counter stored under key in txn (outbox
// sequence numbers, due-marker stamps); found is false when there is none.
func getBE64(txn *badger.Txn, key []byte) (v uint64, found bool, err error) {
	item, err := txn.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	err = item.Value(func(b []byte) error {
		v, err = parseBE64(b)
		return err
	})
	return v, err == nil, err
}

func parseBE64(b []byte) (uint64, error) {
	if len(b) != 8 {
		return 0, fmt.Errorf("%w: counter is %d bytes, want 8", ErrCorrupt, len(b))
	}
	return binary.BigEndian.Uint64(b), nil
}
