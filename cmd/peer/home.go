package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/murmur-ml/murmur/storage"
)

// homeFlag adds --home (default $MURMUR_HOME, else ~/.murmur).
func homeFlag(fs *flag.FlagSet) *string {
	def := os.Getenv("MURMUR_HOME")
	if def == "" {
		if h, err := os.UserHomeDir(); err == nil {
			def = filepath.Join(h, ".murmur")
		}
	}
	return fs.String("home", def, "the peer's home folder (env MURMUR_HOME)")
}

// openStore opens the block store of a home, creating it if asked.
func openStore(home string, create bool) (*storage.Store, error) {
	if home == "" {
		return nil, fmt.Errorf("%w: no --home and no home directory", errUsage)
	}
	dir := filepath.Join(home, "store")
	if !create {
		if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("no store at %s (wrong --home?)", dir)
		}
	}
	return storage.Open(dir)
}
