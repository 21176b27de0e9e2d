package credit

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"io"

	"gopkg.in/yaml.v3"
)

// defaultCatalogYAML is the catalog a new federation starts with.
//
//go:embed default_catalog.yaml
var defaultCatalogYAML []byte

// DefaultCatalog returns a fresh copy of the embedded default catalog
// (version 1): the 16 key domains and the extra ones, the key occupational
// groups, record items with their legal bases and periods, purposes, red and
// serious-dishonesty lists, scenarios with their measures, and the
// classification rules and levels. It panics if the embedded file is invalid,
// which the package's tests rule out.
func DefaultCatalog() *Catalog {
	c, err := LoadCatalogYAML(defaultCatalogYAML)
	if err != nil {
		panic("credit: embedded default catalog: " + err.Error())
	}
	return c
}

// DefaultCatalogYAML returns the embedded default catalog's source, for
// operators who start their own catalog from it.
func DefaultCatalogYAML() []byte { return bytes.Clone(defaultCatalogYAML) }

// LoadCatalogYAML decodes a catalog from one YAML document and validates it
// (see Validate). Decoding is strict: unknown fields (typos) are refused, as
// is a second document. Fields YAML may omit get their defaults first: an
// item's subject_kind is person, its severity ordinary; a purpose's
// max_disclosure is authorized.
func LoadCatalogYAML(data []byte) (*Catalog, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var c Catalog
	if err := dec.Decode(&c); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%w: empty document", ErrInvalidCatalog)
		}
		return nil, fmt.Errorf("%w: %v", ErrInvalidCatalog, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: more than one YAML document", ErrInvalidCatalog)
	}
	c.applyDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

func (c *Catalog) applyDefaults() {
	for i := range c.Items {
		it := &c.Items[i]
		if it.SubjectKind == 0 {
			it.SubjectKind = Person
		}
		if it.Severity == "" {
			it.Severity = Ordinary
		}
		if it.Lists == nil {
			it.Lists = []string{}
		}
		if it.Purposes == nil {
			it.Purposes = []string{}
		}
	}
	for i := range c.Purposes {
		if c.Purposes[i].MaxDisclosure == "" {
			c.Purposes[i].MaxDisclosure = Authorized
		}
	}
}
