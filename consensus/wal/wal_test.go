package wal

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestAppendReopenRepair(t *testing.T) {
	path := filepath.Join(t.TempDir(), "wal")
	w, recs, _, err := Open(path)
	if err != nil || len(recs) != 0 {
		t.Fatal(recs, err)
	}
	want := [][]byte{[]byte("one"), []byte("two"), bytes.Repeat([]byte{7}, 1000)}
	if err := w.Append(want...); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	full, _ := os.ReadFile(path)
	// Every possible torn tail: cut the file at each length inside the
	// last record; Open must return the first two records and repair.
	lastStart := len(full) - headerSize - 1000
	for cut := lastStart + 1; cut < len(full); cut++ {
		if err := os.WriteFile(path, full[:cut], 0o600); err != nil {
			t.Fatal(err)
		}
		w, recs, rep, err := Open(path)
		if err != nil {
			t.Fatalf("cut at %d: %v", cut, err)
		}
		if len(recs) != 2 || !bytes.Equal(recs[1], want[1]) || rep.TornBytes != int64(cut-lastStart) {
			t.Fatalf("cut at %d: %d records, repair %+v", cut, len(recs), rep)
		}
		// The log keeps working after the repair.
		if err := w.Append([]byte("three")); err != nil {
			t.Fatal(err)
		}
		w.Close()
		_, recs, _, err = Open(path)
		if err != nil || len(recs) != 3 || string(recs[2]) != "three" {
			t.Fatalf("after repair: %d records, %v", len(recs), err)
		}
	}
}

func TestCorruptionInTheMiddleIsRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "wal")
	w, _, _, _ := Open(path)
	_ = w.Append([]byte("first record"), []byte("second record"))
	w.Close()
	b, _ := os.ReadFile(path)
	b[headerSize+2] ^= 0xff // inside the first record's payload
	_ = os.WriteFile(path, b, 0o600)
	if _, _, _, err := Open(path); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("corrupt middle record: %v", err)
	}
}

func FuzzOpen(f *testing.F) {
	dir := f.TempDir()
	w, _, _, _ := Open(filepath.Join(dir, "seed"))
	_ = w.Append([]byte("a"), []byte("bc"))
	w.Close()
	seed, _ := os.ReadFile(filepath.Join(dir, "seed"))
	f.Add(seed)
	f.Fuzz(func(t *testing.T, b []byte) {
		path := filepath.Join(t.TempDir(), "wal")
		_ = os.WriteFile(path, b, 0o600)
		w, recs, rep, err := Open(path)
		if err != nil {
			return
		}
		defer w.Close()
		var n int64
		for _, r := range recs {
			n += int64(headerSize + len(r))
		}
		if n+rep.TornBytes != int64(len(b)) {
			t.Fatalf("records %d + torn %d ≠ file %d", n, rep.TornBytes, len(b))
		}
	})
}
