package storage

import (
	"errors"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"

	"credfed/credit"
)

// Objections and repair requests, kept by the district that holds the
// record they name (package rights):
//
//	b/<id> → CBOR Case (objections)
//	p/<id> → CBOR Case (repair requests)
//
// A case names its subject by pseudonym; its reason and evidence are the
// subject's words about a record this district holds, kept beside it.

// Case kinds.
const (
	CaseObjection = "objection"
	CaseRepair    = "repair"
)

// maxCaseEvidence bounds a case's evidence references.
const maxCaseEvidence = 32

// Case is an objection or a repair request.
type Case struct {
	Kind string `cbor:"1,keyasint"`
	ID   string `cbor:"2,keyasint"`
	// Department and Record name the record (this district's).
	Department string `cbor:"3,keyasint"`
	Record     string `cbor:"4,keyasint"`
	// Subject is the subject's pseudonym, lowercase hex.
	Subject string `cbor:"5,keyasint"`
	// Portal is the identity URI of the portal that filed it, and
	// Authentication how it verified the person.
	Portal         string    `cbor:"6,keyasint"`
	Authentication string    `cbor:"7,keyasint,omitempty"`
	Reason         string    `cbor:"8,keyasint,omitempty"` // the objection's reason, the repair's grounds
	Evidence       []string  `cbor:"9,keyasint,omitempty"`
	FiledAt        time.Time `cbor:"10,keyasint"`
	// Deadline is the day by which the collector decides (objections:
	// working days over the calendar).
	Deadline credit.Date `cbor:"11,keyasint,omitempty"`
	// State is open or decided; Outcome the decision (objections: upheld,
	// corrected, revoked; repairs: approved, rejected).
	State     string    `cbor:"12,keyasint"`
	Outcome   string    `cbor:"13,keyasint,omitempty"`
	Decision  string    `cbor:"14,keyasint,omitempty"` // the collector's reasons
	DecidedBy string    `cbor:"15,keyasint,omitempty"` // identity URI
	DecidedAt time.Time `cbor:"16,keyasint,omitzero"`
	// PriorStatus is the record's status before the case (an objection
	// sets it disputed; "upheld" restores it).
	PriorStatus credit.Status `cbor:"17,keyasint,omitempty"`
	// Version is the record version the decision wrote, if any.
	Version int `cbor:"18,keyasint,omitempty"`
	// Notify are the institutions that looked the record up while it was
	// disputed or in the 30 days before (objections, on decision).
	Notify []string `cbor:"19,keyasint,omitempty"`
	// Grounds is a repair's kind of grounds (performance, volunteer
	// service, donation, training).
	Grounds string `cbor:"20,keyasint,omitempty"`
	// Confidential are those of Notify's kind whose lookups were made under
	// a purpose the subject's access log still hides: the collector tells
	// them, the subject's portal does not see them.
	Confidential []string `cbor:"21,keyasint,omitempty"`
}

// Case states.
const (
	CaseOpen    = "open"
	CaseDecided = "decided"
)

func caseKey(kind, id string) ([]byte, error) {
	var fam byte
	switch kind {
	case CaseObjection:
		fam = famObjection
	case CaseRepair:
		fam = famRepair
	default:
		return nil, fmt.Errorf("storage: unknown case kind")
	}
	if err := checkPart("case id", id); err != nil {
		return nil, err
	}
	return append(prefix(fam, len(id)), id...), nil
}

// PutCase stores a case (synced).
func (db *DB) PutCase(c Case) error {
	k, err := caseKey(c.Kind, c.ID)
	if err != nil {
		return err
	}
	if err := checkPseudonym(c.Subject); err != nil {
		return fmt.Errorf("storage: case: %w", err)
	}
	if len(c.Evidence) > maxCaseEvidence {
		return fmt.Errorf("storage: case: %w: more than %d evidence references", ErrInvalidRecord, maxCaseEvidence)
	}
	b, err := encMode.Marshal(&c)
	if err != nil {
		return fmt.Errorf("storage: case: %w", err)
	}
	if int64(len(b))+256 > db.budgetBytes {
		return fmt.Errorf("storage: case: %w", ErrRecordTooLarge)
	}
	if err := db.enter(); err != nil {
		return err
	}
	defer db.leave()
	if err := db.raw.Update(func(txn *badger.Txn) error { return txn.Set(k, b) }); err != nil {
		return fmt.Errorf("storage: case: %w", engine(err))
	}
	return nil
}

// GetCase returns a case; ErrNotFound if there is none.
func (db *DB) GetCase(kind, id string) (Case, error) {
	k, err := caseKey(kind, id)
	if err != nil {
		return Case{}, err
	}
	var c Case
	err = db.view(func(txn *badger.Txn) error {
		item, err := txn.Get(k)
		if errors.Is(err, badger.ErrKeyNotFound) {
			return ErrNotFound
		}
		if err != nil {
			return engine(err)
		}
		return item.Value(func(v []byte) error {
			if err := decMode.Unmarshal(v, &c); err != nil {
				return fmt.Errorf("%w: a case does not decode", ErrCorrupt)
			}
			return nil
		})
	})
	return c, err
}

// Cases returns up to limit cases of a kind that keep returns true for,
// in id order.
func (db *DB) Cases(kind string, limit int, keep func(Case) bool) ([]Case, error) {
	k, err := caseKey(kind, "-")
	if err != nil {
		return nil, err
	}
	pfx := k[:2]
	var out []Case
	errFull := errors.New("full")
	err = db.view(func(txn *badger.Txn) error {
		return scanPrefix(txn, pfx, true, func(_, v []byte) error {
			var c Case
			if err := decMode.Unmarshal(v, &c); err != nil {
				return fmt.Errorf("%w: a case does not decode", ErrCorrupt)
			}
			if keep == nil || keep(c) {
				out = append(out, c)
				if len(out) >= limit {
					return errFull
				}
			}
			return nil
		})
	})
	if errors.Is(err, errFull) {
		err = nil
	}
	return out, err
}
