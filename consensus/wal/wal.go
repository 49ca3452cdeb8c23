// Package wal is the write-ahead log a consensus shell keeps: an
// append-only file of length-prefixed records, each with a CRC-32C, that
// is fsynced before anything it records is sent.
//
// Opening a log reads every record back. A torn tail — a record cut short
// by a crash mid-write — is cut off and the file truncated to its last
// whole record; that is the only repair made. A record whose checksum fails
// with more data after it is corruption, not a torn write, and Open refuses
// the file: dropping it could forget a signed vote and lead to a double
// sign.
package wal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
)

// ErrCorrupt reports a log damaged somewhere other than its tail.
var ErrCorrupt = errors.New("wal: corrupt")

// MaxRecord bounds one record (a commit with its certificate and value).
const MaxRecord = 8 << 20

const headerSize = 8

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// WAL is an open log. It is not safe for concurrent use: one goroutine (the
// consensus shell) owns it.
type WAL struct {
	f *os.File
}

// Repair says what Open had to cut off.
type Repair struct {
	TornBytes int64 // bytes of an incomplete last record, removed
}

// Open opens (creating) the log at path and returns its records.
func Open(path string) (*WAL, [][]byte, Repair, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, nil, Repair{}, fmt.Errorf("wal: %w", err)
	}
	recs, good, size, err := scan(f)
	if err != nil {
		f.Close()
		return nil, nil, Repair{}, fmt.Errorf("%s: %w", path, err)
	}
	rep := Repair{TornBytes: size - good}
	if rep.TornBytes > 0 {
		if err := f.Truncate(good); err != nil {
			f.Close()
			return nil, nil, Repair{}, fmt.Errorf("wal: truncating torn tail: %w", err)
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return nil, nil, Repair{}, fmt.Errorf("wal: %w", err)
		}
	}
	if _, err := f.Seek(good, io.SeekStart); err != nil {
		f.Close()
		return nil, nil, Repair{}, fmt.Errorf("wal: %w", err)
	}
	return &WAL{f: f}, recs, rep, nil
}

// scan reads records until the end; good is the offset after the last whole
// record.
func scan(f *os.File) (recs [][]byte, good, size int64, err error) {
	st, err := f.Stat()
	if err != nil {
		return nil, 0, 0, err
	}
	size = st.Size()
	data := make([]byte, size)
	if _, err := io.ReadFull(f, data); err != nil {
		return nil, 0, 0, err
	}
	off := int64(0)
	for off < size {
		if size-off < headerSize {
			return recs, off, size, nil // torn header
		}
		n := int64(binary.LittleEndian.Uint32(data[off:]))
		sum := binary.LittleEndian.Uint32(data[off+4:])
		if n > MaxRecord {
			if off+headerSize+n > size {
				return recs, off, size, nil // a torn header read as a length
			}
			return nil, 0, 0, fmt.Errorf("%w: record at %d claims %d bytes", ErrCorrupt, off, n)
		}
		end := off + headerSize + n
		if end > size {
			return recs, off, size, nil // torn payload
		}
		payload := data[off+headerSize : end]
		if crc32.Checksum(payload, castagnoli) != sum {
			if end == size {
				return recs, off, size, nil // the last record, half written
			}
			return nil, 0, 0, fmt.Errorf("%w: checksum of the record at byte %d fails and %d bytes follow it", ErrCorrupt, off, size-end)
		}
		recs = append(recs, payload)
		off = end
	}
	return recs, off, size, nil
}

// Append writes records (not yet durable: call Sync).
func (w *WAL) Append(recs ...[]byte) error {
	var buf []byte
	for _, r := range recs {
		if len(r) > MaxRecord {
			return fmt.Errorf("wal: record of %d bytes exceeds %d", len(r), MaxRecord)
		}
		buf = binary.LittleEndian.AppendUint32(buf, uint32(len(r)))
		buf = binary.LittleEndian.AppendUint32(buf, crc32.Checksum(r, castagnoli))
		buf = append(buf, r...)
	}
	_, err := w.f.Write(buf)
	return err
}

// Sync makes every appended record durable.
func (w *WAL) Sync() error { return w.f.Sync() }

// Close syncs and closes the file.
func (w *WAL) Close() error {
	if err := w.f.Sync(); err != nil {
		w.f.Close()
		return err
	}
	return w.f.Close()
}
