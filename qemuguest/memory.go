package qemuguest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/pagecast/pagecast/qemu"
)

// ErrNotShared is wrapped by the error for a QEMU whose guest RAM another
// process cannot map.
var ErrNotShared = errors.New("guest RAM is not shared memory")

// sharedRAMHint names the QEMU options that put guest RAM in shared memory:
// a file, not a memfd, which QEMU 8.1 and later migrate with the device
// state (Source.CanSend).
const sharedRAMHint = "start QEMU with -object memory-backend-file,id=ram,size=SIZE,mem-path=/dev/shm/FILE,share=on -machine memory-backend=ram"

// memdev is one entry of query-memdev.
type memdev struct {
	ID    string `json:"id"`
	Size  uint64 `json:"size"`
	Share bool   `json:"share"`
}

// ramFile finds the file holding the guest RAM of QEMU pid and its size:
// the mem-path of a memory-backend-file, or the memfd of a
// memory-backend-memfd among the process's open files. Either must be
// shared (share=on): a private mapping's writes never reach the file.
// named says whether the backend is a memory-backend-file, as QEMU asks
// (qom-get of its type): the RAM QEMU 8.1 and later leave out of their
// migration under x-ignore-shared (Source.CanSend). Where QEMU does not
// say, a backend whose file is a memfd is taken for a memory-backend-memfd.
func ramFile(mon Monitor, pid int) (path string, size uint64, named bool, err error) {
	id := ""
	path, size, id, err = ramFileOf(mon, pid)
	if err != nil {
		return "", 0, false, err
	}
	var typ string
	if id != "" && qemu.QMP(mon, "qom-get", map[string]any{"path": "/objects/" + id, "property": "type"}, &typ) == nil && typ != "" {
		return path, size, typ == "memory-backend-file", nil
	}
	link, lerr := os.Readlink(path)
	return path, size, !(strings.HasPrefix(path, "/proc/") && lerr == nil && strings.HasPrefix(link, "/memfd:")), nil
}

func ramFileOf(mon Monitor, pid int) (path string, size uint64, id string, err error) {
	var devs []memdev
	if err := qemu.QMP(mon, "query-memdev", nil, &devs); err != nil {
		return "", 0, "", err
	}
	switch {
	case len(devs) == 0:
		return "", 0, "", fmt.Errorf("qemu %d: %w (no memory backend): %s", pid, ErrNotShared, sharedRAMHint)
	case len(devs) > 1:
		return "", 0, "", fmt.Errorf("qemu %d has %d memory backends (NUMA nodes or DIMMs): only one is supported", pid, len(devs))
	}
	d := devs[0]
	if !d.Share {
		return "", 0, "", fmt.Errorf("qemu %d: %w (backend %q has share=off): %s", pid, ErrNotShared, d.ID, sharedRAMHint)
	}
	if d.Size == 0 || d.Size%4096 != 0 {
		return "", 0, "", fmt.Errorf("qemu %d: guest RAM of %d bytes is not a whole number of 4 KiB pages", pid, d.Size)
	}
	var memPath, byPath string
	if d.ID != "" && qemu.QMP(mon, "qom-get", map[string]any{"path": "/objects/" + d.ID, "property": "mem-path"}, &memPath) == nil && memPath != "" {
		// QEMU keeps its mem-path file open: it is found among its open
		// files as a memfd is (a directory mem-path holds an unlinked
		// file QEMU created). The path itself only where those cannot be
		// read, and only at the backend's size: a file put at that path
		// since, or another mount namespace's, was mapped past its end
		// (SIGBUS) or in the guest's place (found by a review walk).
		if st, err := os.Stat(memPath); err == nil && st.Mode().IsRegular() && uint64(st.Size()) == d.Size {
			byPath = memPath
		}
	}
	fds := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(fds)
	if err != nil {
		if byPath != "" {
			return byPath, d.Size, d.ID, nil
		}
		return "", 0, "", fmt.Errorf("find guest RAM of qemu %d: %w", pid, err)
	}
	// A memory-backend-file's own file first: a memfd of the same size
	// open in QEMU too was taken for it (review 113).
	memfd := ""
	for _, e := range ents {
		p := filepath.Join(fds, e.Name())
		link, err := os.Readlink(p)
		if err != nil {
			continue
		}
		own := memPath != "" && strings.HasPrefix(link, memPath)
		if !own && !strings.HasPrefix(link, "/memfd:") {
			continue
		}
		if st, err := os.Stat(p); err == nil && uint64(st.Size()) == d.Size {
			if own || memPath == "" {
				return p, d.Size, d.ID, nil
			}
			if memfd == "" {
				memfd = p
			}
		}
	}
	if memfd != "" && byPath == "" {
		return memfd, d.Size, d.ID, nil
	}
	if byPath != "" {
		return byPath, d.Size, d.ID, nil
	}
	return "", 0, "", fmt.Errorf("qemu %d: %w (backend %q is shared but neither a file nor a memfd of %d bytes among its open files): %s",
		pid, ErrNotShared, d.ID, d.Size, sharedRAMHint)
}

// ReadRAM maps the guest RAM of QEMU pid, whose monitor is mon, read-only
// (the guest RAM shared, as ramFile finds it), for reading what its pages
// hold; unmap releases it.
func ReadRAM(mon Monitor, pid int) (mem []byte, unmap func() error, err error) {
	path, size, _, err := ramFile(mon, pid)
	if err != nil {
		return nil, nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("qemu %d guest RAM: %w", pid, err)
	}
	defer f.Close() // the mapping outlives it
	mem, err = unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, nil, fmt.Errorf("map qemu guest RAM %s: %w", path, err)
	}
	return mem, func() error { return unix.Munmap(mem) }, nil
}

// readLayout reads where QEMU pid puts its RAM (one memory backend, of
// ramBytes) in guest-physical memory: KVM's dirty log names pages by
// frame. (Until 2026-12-05 a pc machine's split was assumed, and a q35 of
// 2.75 GiB or more, which keeps 2 GiB below 4 GiB, was refused.)
func readLayout(mon Monitor, pid int, ramBytes uint64) (qemu.Layout, error) {
	var devs []memdev
	if err := qemu.QMP(mon, "query-memdev", nil, &devs); err != nil {
		return qemu.Layout{}, err
	}
	if len(devs) != 1 {
		return qemu.Layout{}, fmt.Errorf("qemu %d has %d memory backends: only one is supported", pid, len(devs))
	}
	l, err := qemu.ReadLayout(mon, devs[0].ID, ramBytes)
	if err != nil {
		return qemu.Layout{}, fmt.Errorf("qemu %d: %w", pid, err)
	}
	return l, nil
}

// mapRAM maps size bytes of the RAM file f, shared, read-write.
func mapRAM(f *os.File, size uint64) ([]byte, error) {
	mem, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("map qemu guest RAM %s: %w", f.Name(), err)
	}
	return mem, nil
}
