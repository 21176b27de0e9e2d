package rekey

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"credfed/credit"
)

func TestKeyRingFile(t *testing.T) {
	dir := t.TempDir()
	k2 := credit.PseudonymKey(bytes.Repeat([]byte{0x42}, 32))
	k3 := credit.PseudonymKey(bytes.Repeat([]byte{0x43}, 32))
	enc := bytes.Repeat([]byte{0x11}, 32)
	keys := map[uint32]credit.PseudonymKey{2: k2, 3: k3}
	for name, key := range map[string][]byte{"plain": nil, "sealed": enc} {
		path := filepath.Join(dir, name)
		if got, err := LoadRing(path, key); err != nil || len(got) != 0 {
			t.Fatalf("%s: no file yet: %v %v", name, got, err)
		}
		if err := SaveRing(path, key, keys); err != nil {
			t.Fatal(err)
		}
		got, err := LoadRing(path, key)
		if err != nil || !reflect.DeepEqual(got, keys) {
			t.Fatalf("%s: loaded %v, %v", name, Versions(got), err)
		}
		data, _ := os.ReadFile(path)
		info, _ := os.Stat(path)
		if info.Mode().Perm() != 0o600 {
			t.Fatalf("%s: mode %v", name, info.Mode())
		}
		if key != nil && (bytes.Contains(data, k2) || bytes.Contains(data, k3)) {
			t.Fatalf("the sealed ring holds a key in the clear")
		}
		// A sealed ring refuses any change (a plain one is as safe as the
		// key file beside it: its mode).
		for _, i := range []int{len(fileHeader), len(fileHeader) + 1, len(data) - 1} {
			if key == nil {
				break
			}
			bad := bytes.Clone(data)
			bad[i] ^= 1
			if err := os.WriteFile(path+".bad", bad, 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := LoadRing(path+".bad", key); err == nil {
				t.Errorf("%s: a changed ring (byte %d) loaded", name, i)
			}
		}
	}
	sealed := filepath.Join(dir, "sealed")
	if _, err := LoadRing(sealed, nil); !errors.Is(err, ErrRingKey) {
		t.Fatalf("a sealed ring without the key: %v", err)
	}
	if _, err := LoadRing(sealed, bytes.Repeat([]byte{0x12}, 32)); !errors.Is(err, ErrRingKey) || strings.Contains(err.Error(), "42") {
		t.Fatalf("a sealed ring with another key: %v", err)
	}
	if err := SaveRing(filepath.Join(dir, "v1"), nil, map[uint32]credit.PseudonymKey{1: k2}); err == nil {
		t.Fatal("version 1 (the key file's) was written to the ring")
	}
	if err := os.WriteFile(filepath.Join(dir, "junk"), []byte("not a ring"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadRing(filepath.Join(dir, "junk"), nil); !errors.Is(err, ErrRingCorrupt) {
		t.Fatalf("junk: %v", err)
	}
}
