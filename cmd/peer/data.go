package main

import (
	"flag"
	"fmt"
	"io"

	"github.com/murmur-ml/murmur/learner"
)

// dataFlag adds --data and returns a loader for MNIST from that folder or,
// by default, from the GoMNIST module in the Go module cache.
func dataFlag(fs *flag.FlagSet) func(stderr io.Writer) (train, test *learner.Dataset, err error) {
	dir := fs.String("data", "", "folder with the four MNIST IDX .gz files (default: the GoMNIST module in the Go module cache)")
	return func(stderr io.Writer) (*learner.Dataset, *learner.Dataset, error) {
		d := *dir
		if d == "" {
			var err error
			if d, err = learner.DefaultMNISTDir(); err != nil {
				return nil, nil, err
			}
		}
		train, test, err := learner.LoadMNIST(d)
		if err != nil {
			return nil, nil, fmt.Errorf("loading MNIST from %s: %w", d, err)
		}
		fmt.Fprintf(stderr, "data: %d training and %d test images from %s\n", train.N(), test.N(), d)
		return train, test, nil
	}
}
