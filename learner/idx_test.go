package learner

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func gz(t testing.TB, raw []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	w := gzip.NewWriter(&b)
	if _, err := w.Write(raw); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func idxImages(n, rows, cols int, fill byte) []byte {
	var b bytes.Buffer
	_ = binary.Write(&b, binary.BigEndian, [4]uint32{idxMagicImages, uint32(n), uint32(rows), uint32(cols)})
	b.Write(bytes.Repeat([]byte{fill}, n*rows*cols))
	return b.Bytes()
}

func idxLabels(labels ...byte) []byte {
	var b bytes.Buffer
	_ = binary.Write(&b, binary.BigEndian, [2]uint32{idxMagicLabels, uint32(len(labels))})
	b.Write(labels)
	return b.Bytes()
}

func TestReadIDX(t *testing.T) {
	good := idxImages(3, 28, 28, 255)
	tests := []struct {
		name   string
		images []byte // gzip applied unless raw
		raw    bool
		want   string // substring of the error, "" for success
	}{
		{"ok", good, false, ""},
		{"truncated data", good[:len(good)-10], false, "truncated"},
		{"truncated header", good[:7], false, "truncated"},
		{"wrong magic", idxLabels(1, 2, 3, 4, 5, 6, 7, 8), false, "magic"},
		{"huge count", idxImages(0, 28, 28, 0)[:16], false, ""},
		{"not gzip", good, true, "not a gzip file"},
		{"empty", nil, true, "not a gzip file"},
	}
	tests[4].images = func() []byte { b := idxImages(0, 28, 28, 0); binary.BigEndian.PutUint32(b[4:], 1<<30); return b }()
	tests[4].want = "implausible"
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.images
			if !tc.raw {
				in = gz(t, in)
			}
			pix, n, rows, cols, err := ReadIDXImages(bytes.NewReader(in))
			if tc.want == "" {
				if err != nil || n != 3 || rows != 28 || cols != 28 || len(pix) != 3*784 {
					t.Fatalf("got n=%d %dx%d len=%d err=%v", n, rows, cols, len(pix), err)
				}
				return
			}
			if err == nil || !errors.Is(err, ErrDataset) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want ErrDataset containing %q", err, tc.want)
			}
		})
	}
}

func TestReadIDXLabels(t *testing.T) {
	if l, err := ReadIDXLabels(bytes.NewReader(gz(t, idxLabels(0, 9, 3)))); err != nil || len(l) != 3 || l[1] != 9 {
		t.Fatalf("labels %v, %v", l, err)
	}
	for name, raw := range map[string][]byte{
		"label 10":  idxLabels(0, 10),
		"truncated": idxLabels(1, 2, 3)[:9],
		"magic":     idxImages(1, 1, 1, 0),
	} {
		if _, err := ReadIDXLabels(bytes.NewReader(gz(t, raw))); !errors.Is(err, ErrDataset) {
			t.Errorf("%s: error %v, want ErrDataset", name, err)
		}
	}
}

func TestLoadMNISTErrors(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := LoadMNIST(dir); err == nil || !strings.Contains(err.Error(), mnistTrainImages) {
		t.Fatalf("missing files: %v", err)
	}
	write := func(name string, b []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(mnistTrainImages, gz(t, idxImages(2, 28, 28, 0)))
	write(mnistTrainLabels, gz(t, idxLabels(1, 2, 3)))
	write(mnistTestImages, gz(t, idxImages(1, 28, 28, 0)))
	write(mnistTestLabels, gz(t, idxLabels(1)))
	if _, _, err := LoadMNIST(dir); err == nil || !strings.Contains(err.Error(), "2 images but") {
		t.Fatalf("count mismatch: %v", err)
	}
	write(mnistTrainLabels, gz(t, idxLabels(1, 2)))
	train, test, err := LoadMNIST(dir)
	if err != nil || train.N() != 2 || test.N() != 1 {
		t.Fatalf("small set: %v", err)
	}
	if want := float32((0 - mnistMean) / mnistStd); train.Pixels[0] != want {
		t.Fatalf("normalised pixel %v, want %v", train.Pixels[0], want)
	}
	write(mnistTestImages, []byte("garbage"))
	if _, _, err := LoadMNIST(dir); !errors.Is(err, ErrDataset) {
		t.Fatalf("corrupt file: %v", err)
	}
}

// TestRealMNIST reads the dataset the module ships and checks its shape.
func TestRealMNIST(t *testing.T) {
	dir, err := DefaultMNISTDir()
	if err != nil {
		t.Fatal(err)
	}
	train, test, err := LoadMNIST(dir)
	if err != nil {
		t.Fatal(err)
	}
	if train.N() != 60000 || test.N() != 10000 || train.Rows != 28 || train.Cols != 28 {
		t.Fatalf("train %d, test %d, %dx%d", train.N(), test.N(), train.Rows, train.Cols)
	}
	// Published class counts of the MNIST training set.
	want := [NumClasses]int{5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949}
	if got := train.LabelCounts(); got != want {
		t.Fatalf("label counts %v, want %v", got, want)
	}
}

func FuzzReadIDXImages(f *testing.F) {
	f.Add(gz(f, idxImages(2, 3, 3, 7)))
	f.Add(gz(f, idxLabels(1, 2)))
	f.Add([]byte{0x1f, 0x8b})
	f.Fuzz(func(t *testing.T, b []byte) {
		pix, n, rows, cols, err := ReadIDXImages(bytes.NewReader(b))
		if err == nil && len(pix) != n*rows*cols {
			t.Fatalf("%d pixels for %d×%d×%d", len(pix), n, rows, cols)
		}
	})
}

func FuzzReadIDXLabels(f *testing.F) {
	f.Add(gz(f, idxLabels(1, 2, 3)))
	f.Add(gz(f, idxImages(1, 1, 1, 0)))
	f.Fuzz(func(t *testing.T, b []byte) {
		labels, err := ReadIDXLabels(bytes.NewReader(b))
		for _, l := range labels {
			if err == nil && l >= NumClasses {
				t.Fatalf("label %d accepted", l)
			}
		}
	})
}
