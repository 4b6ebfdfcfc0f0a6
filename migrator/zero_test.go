package migrator

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/pagecast/pagecast/bitmap"
)

// TestZeroPages: a run of zero pages in shared memory (a memfd, as every
// live destination's guest RAM is) reads as zero and holds no memory
// after, pages around it untouched; in memory of the Go heap the run is
// cleared.
func TestZeroPages(t *testing.T) {
	const pages = 64
	_, shared, blocks := memfdGuest(t, pages)
	for name, mem := range map[string][]byte{"memfd": shared, "heap": make([]byte, pages*PageSize)} {
		for i := range mem {
			mem[i] = byte(i/PageSize) | 1
		}
		before := blocks()
		zeroPages(mem[8*PageSize : 40*PageSize])
		freed := before - blocks() // before reading the run, which would fill it
		for p := range pages {
			page := mem[p*PageSize : (p+1)*PageSize]
			zero := bytes.Count(page, []byte{0}) == PageSize
			if want := p >= 8 && p < 40; zero != want {
				t.Fatalf("%s: page %d zero %v, want %v", name, p, zero, want)
			}
		}
		if name == "memfd" {
			// The run was punched out: its 32 pages hold no memory.
			if freed < 32*PageSize {
				t.Errorf("memfd: %d bytes freed by a run of 32 zero pages, want %d", freed, 32*PageSize)
			}
		}
	}
}

// TestPopulate: the pages of a batch not received yet are allocated in the
// destination's memfd before they are written, a run at a time; pages
// received before are left alone, and so are the others.
func TestPopulate(t *testing.T) {
	const pages = 64
	_, mem, held := memfdGuest(t, pages)
	rc := &receiver{mem: mem, seen: bitmap.New(pages), log: slog.New(slog.DiscardHandler)}
	rc.seen.Set(11) // received already: a later round's page
	rc.populate([]uint64{3, 4, 5, 6, 20, 11, 12, 40})
	if rc.noPopulate {
		t.Skip("MADV_POPULATE_WRITE is not supported here (Linux before 5.14)")
	}
	// 3–6, 20 and 40 are allocated; the run starting at 11, received
	// before, is not (12 with it: runs go by their first page).
	if got := held(); got != 6*PageSize {
		t.Fatalf("%d bytes allocated, want %d (6 pages)", got, 6*PageSize)
	}
}

// TestMemoryFault: a destination whose guest RAM cannot be allocated (its
// file system full; here its memfd cut short behind it) fails the
// migration saying so, where it crashed with SIGBUS and a Go stack dump
// (walk 72); the source runs on. A write that faults is an error naming
// the page.
func TestMemoryFault(t *testing.T) {
	cfg := memConfig{Memory: 4 << 20, Hot: 1}
	src, dst := newMemGuest(t, cfg, true), newMemGuest(t, cfg, false)
	fillMixed(src.mem, 3)
	if err := unix.Ftruncate(dst.fd, 1<<20); err != nil {
		t.Fatal(err)
	}
	d := listenDestination(t, dst, ReceiveConfig{})
	m, err := Outgoing(src, d.uri, Config{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Wait(); err == nil {
		t.Error("a migration into memory that cannot be had completed")
	}
	<-d.done
	t.Logf("destination: %v", d.err)
	if d.err == nil || !(strings.Contains(d.err.Error(), "allocate guest pages") || strings.Contains(d.err.Error(), "could not be had")) {
		t.Errorf("destination: %v, want the memory named", d.err)
	}
	if ok, st := src.Running(); !ok {
		t.Fatalf("source is %s after the destination failed", st)
	}

	fd, mem, _ := memfdGuest(t, 64)
	if err := unix.Ftruncate(fd, 32*PageSize); err != nil {
		t.Fatal(err)
	}
	err = guardFaults(mem, func() error {
		mem[40*PageSize+1] = 1 // past the file's end: SIGBUS
		return nil
	}, func() string { return "no room" })
	if err == nil || err.Error() != "guest page 0x28 could not be had (a fault, SIGBUS): no room" {
		t.Errorf("a write past the memory file's end: %v", err)
	}
}
