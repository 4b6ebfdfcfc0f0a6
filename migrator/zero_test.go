package migrator

import (
	"bytes"
	"testing"

	"golang.org/x/sys/unix"
)

// TestZeroPages: a run of zero pages in shared memory (a memfd, as every
// live destination's guest RAM is) reads as zero and holds no memory
// after, pages around it untouched; in memory of the Go heap the run is
// cleared.
func TestZeroPages(t *testing.T) {
	const pages = 64
	fd, err := unix.MemfdCreate("pagecast-zero-test", unix.MFD_CLOEXEC)
	if err != nil {
		t.Skipf("memfd: %v", err)
	}
	defer unix.Close(fd)
	if err := unix.Ftruncate(fd, pages*PageSize); err != nil {
		t.Fatal(err)
	}
	shared, err := unix.Mmap(fd, 0, pages*PageSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(shared)
	blocks := func() int64 {
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			t.Fatal(err)
		}
		return st.Blocks * 512
	}
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
