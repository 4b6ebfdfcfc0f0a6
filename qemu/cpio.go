package qemu

import (
	"fmt"
	"io"
	"io/fs"
	"path"
	"strings"
)

// cpioWriter writes a cpio archive in the "newc" format, the one the
// Linux kernel unpacks as an initramfs (Documentation/driver-api/
// early-userspace/buffer-format.rst): per entry a 110-byte ASCII header
// ("070701" and thirteen 8-digit hex fields), the NUL-terminated name
// padded to 4 bytes, the data padded to 4 bytes; a "TRAILER!!!" entry
// ends the archive. The kernel does not create missing parent
// directories, so callers add directories before what they hold (Dir
// and the other methods do it for them, once per directory).
type cpioWriter struct {
	w    io.Writer
	n    int64 // bytes written, for the padding
	ino  uint32
	dirs map[string]bool
	err  error
}

func newCPIOWriter(w io.Writer) *cpioWriter {
	return &cpioWriter{w: w, ino: 1, dirs: map[string]bool{".": true, "": true}}
}

// Mode bits of newc headers (the kernel's S_IF* values).
const (
	cpioDir     = 0o040000
	cpioFile    = 0o100000
	cpioSymlink = 0o120000
	cpioCharDev = 0o020000
)

// Dir adds directory name (and its missing parents) with permissions perm.
func (c *cpioWriter) Dir(name string, perm fs.FileMode) {
	name = cpioName(name)
	if c.dirs[name] {
		return
	}
	c.parents(name)
	c.dirs[name] = true
	c.entry(name, cpioDir|uint32(perm.Perm()), 2, 0, 0, nil)
}

// File adds a regular file holding data.
func (c *cpioWriter) File(name string, perm fs.FileMode, data []byte) {
	name = cpioName(name)
	c.parents(name)
	c.entry(name, cpioFile|uint32(perm.Perm()), 1, 0, 0, data)
}

// Symlink adds a symbolic link name pointing at target.
func (c *cpioWriter) Symlink(name, target string) {
	name = cpioName(name)
	c.parents(name)
	c.entry(name, cpioSymlink|0o777, 1, 0, 0, []byte(target))
}

// CharDev adds a character device node.
func (c *cpioWriter) CharDev(name string, perm fs.FileMode, major, minor uint32) {
	name = cpioName(name)
	c.parents(name)
	c.entry(name, cpioCharDev|uint32(perm.Perm()), 1, major, minor, nil)
}

// Close writes the trailer. It does not close the underlying writer.
func (c *cpioWriter) Close() error {
	c.ino = 0
	c.entry("TRAILER!!!", 0, 1, 0, 0, nil)
	return c.err
}

func (c *cpioWriter) parents(name string) {
	if dir := path.Dir(name); !c.dirs[dir] {
		c.Dir(dir, 0o755)
	}
}

// cpioName is an archive path: relative, cleaned ("/bin/sh" → "bin/sh").
func cpioName(name string) string {
	return path.Clean(strings.TrimLeft(name, "/"))
}

func (c *cpioWriter) entry(name string, mode, nlink, rmajor, rminor uint32, data []byte) {
	if c.err != nil {
		return
	}
	ino := c.ino
	if ino != 0 {
		c.ino++
	}
	hdr := fmt.Sprintf("070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rmajor, rminor, len(name)+1, 0)
	c.write([]byte(hdr))
	c.write([]byte(name + "\x00"))
	c.pad()
	c.write(data)
	c.pad()
}

func (c *cpioWriter) write(b []byte) {
	if c.err != nil {
		return
	}
	n, err := c.w.Write(b)
	c.n += int64(n)
	c.err = err
}

func (c *cpioWriter) pad() {
	if r := c.n % 4; r != 0 {
		c.write(make([]byte, 4-r))
	}
}
