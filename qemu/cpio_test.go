package qemu

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// cpioEntry is one entry read back from a newc archive.
type cpioEntry struct {
	name        string
	mode, nlink uint32
	rmaj, rmin  uint32
	data        []byte
	ino         uint32
}

// readCPIO parses a newc archive up to its trailer, checking the format
// as the kernel's unpacker (init/initramfs.c) reads it: magic, hex
// fields, 4-byte alignment of name and data, NUL-terminated names.
func readCPIO(b []byte) ([]cpioEntry, error) {
	var out []cpioEntry
	off := 0
	align := func(n int) int { return (n + 3) &^ 3 }
	for {
		if off+110 > len(b) {
			return nil, fmt.Errorf("header at %d: archive ends", off)
		}
		h := b[off : off+110]
		if string(h[:6]) != "070701" {
			return nil, fmt.Errorf("header at %d: magic %q", off, h[:6])
		}
		var f [13]uint32
		for i := range f {
			v, err := strconv.ParseUint(string(h[6+8*i:14+8*i]), 16, 32)
			if err != nil {
				return nil, fmt.Errorf("header at %d, field %d: %w", off, i, err)
			}
			f[i] = uint32(v)
		}
		namesize, filesize := int(f[11]), int(f[6])
		nameEnd := off + 110 + namesize
		if namesize == 0 || nameEnd > len(b) || b[nameEnd-1] != 0 {
			return nil, fmt.Errorf("header at %d: bad name of %d bytes", off, namesize)
		}
		e := cpioEntry{name: string(b[off+110 : nameEnd-1]), ino: f[0], mode: f[1], nlink: f[4],
			rmaj: f[9], rmin: f[10]}
		dataStart := align(nameEnd)
		if dataStart+filesize > len(b) {
			return nil, fmt.Errorf("%s: data past the archive", e.name)
		}
		for _, pad := range b[nameEnd:dataStart] {
			if pad != 0 {
				return nil, fmt.Errorf("%s: non-zero padding", e.name)
			}
		}
		e.data = b[dataStart : dataStart+filesize]
		off = align(dataStart + filesize)
		if e.name == "TRAILER!!!" {
			if off != len(b) {
				return nil, fmt.Errorf("%d bytes after the trailer", len(b)-off)
			}
			return out, nil
		}
		out = append(out, e)
	}
}

func TestCPIOWriter(t *testing.T) {
	var buf bytes.Buffer
	c := newCPIOWriter(&buf)
	c.Dir("/bin", 0o755)
	c.File("/bin/busybox", 0o755, []byte("12345")) // 5 bytes: data padding
	c.Symlink("usr/bin/awk", "/bin/busybox")       // creates usr, usr/bin
	c.CharDev("dev/console", 0o600, 5, 1)
	c.File("init", 0o755, nil)
	c.Dir("bin", 0o755) // again: no second entry
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if buf.Len()%4 != 0 {
		t.Errorf("archive of %d bytes, not a multiple of 4", buf.Len())
	}
	entries, err := readCPIO(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		name string
		mode uint32
		data string
	}{
		{"bin", cpioDir | 0o755, ""},
		{"bin/busybox", cpioFile | 0o755, "12345"},
		{"usr", cpioDir | 0o755, ""},
		{"usr/bin", cpioDir | 0o755, ""},
		{"usr/bin/awk", cpioSymlink | 0o777, "/bin/busybox"},
		{"dev", cpioDir | 0o755, ""},
		{"dev/console", cpioCharDev | 0o600, ""},
		{"init", cpioFile | 0o755, ""},
	}
	if len(entries) != len(want) {
		t.Fatalf("%d entries, want %d: %+v", len(entries), len(want), entries)
	}
	inos := map[uint32]bool{}
	for i, w := range want {
		e := entries[i]
		if e.name != w.name || e.mode != w.mode || string(e.data) != w.data {
			t.Errorf("entry %d: %s mode %o %q, want %s mode %o %q", i, e.name, e.mode, e.data, w.name, w.mode, w.data)
		}
		if inos[e.ino] {
			t.Errorf("%s: inode %d used twice (the kernel would link them)", e.name, e.ino)
		}
		inos[e.ino] = true
	}
	if e := entries[6]; e.rmaj != 5 || e.rmin != 1 {
		t.Errorf("dev/console is %d:%d, want 5:1", e.rmaj, e.rmin)
	}

	// GNU cpio, where installed, reads it too.
	cpio, err := exec.LookPath("cpio")
	if err != nil {
		t.Logf("no cpio to cross-check with: %v", err)
		return
	}
	cmd := exec.Command(cpio, "-t", "--quiet")
	cmd.Stdin = bytes.NewReader(buf.Bytes())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("cpio -t: %v: %s", err, out)
	}
	var names []string
	for _, w := range want {
		names = append(names, w.name)
	}
	if got := strings.Fields(string(out)); !slices.Equal(got, names) {
		t.Errorf("cpio -t lists %q, want %q", got, names)
	}
}

func TestBuildInitramfs(t *testing.T) {
	if _, err := os.Stat("/bin/busybox"); err != nil {
		t.Skipf("needs /bin/busybox (Debian package busybox-static): %v", err)
	}
	dir := t.TempDir()
	extra := filepath.Join(dir, "tool")
	if err := os.WriteFile(extra, []byte("#!/bin/sh\necho hi\n"), 0o750); err != nil {
		t.Fatal(err)
	}
	path, err := BuildInitramfs(dir, InitramfsOptions{Command: "echo hello", Files: map[string]string{"/opt/x/tool": extra}})
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	entries, err := readCPIO(raw)
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]cpioEntry{}
	for _, e := range entries {
		if _, dup := byName[e.name]; dup {
			t.Errorf("%s twice", e.name)
		}
		byName[e.name] = e
	}
	busybox, _ := os.ReadFile("/bin/busybox")
	for _, c := range []struct {
		name string
		mode uint32
		data string
	}{
		{"init", cpioFile | 0o755, ""},
		{"bin/busybox", cpioFile | 0o755, string(busybox)},
		{"bin/sh", cpioSymlink | 0o777, "/bin/busybox"},
		{"sbin/poweroff", cpioSymlink | 0o777, "/bin/busybox"},
		{"bin/dd", cpioSymlink | 0o777, "/bin/busybox"},
		{"pagecast/command", cpioFile | 0o644, "echo hello\n"},
		{"opt/x/tool", cpioFile | 0o750, "#!/bin/sh\necho hi\n"},
		{"dev/console", cpioCharDev | 0o600, ""},
		{"proc", cpioDir | 0o755, ""},
		{"opt/x", cpioDir | 0o755, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			e, ok := byName[c.name]
			if !ok {
				t.Fatal("missing")
			}
			if e.mode != c.mode {
				t.Errorf("mode %o, want %o", e.mode, c.mode)
			}
			if c.data != "" && string(e.data) != c.data {
				t.Errorf("content differs (%d bytes, want %d)", len(e.data), len(c.data))
			}
		})
	}
	init := string(byName["init"].data)
	for _, s := range []string{LinuxStartMarker, LinuxDoneMarker, "sh /pagecast/command", "poweroff -f", "mount -t devtmpfs"} {
		if !strings.Contains(init, s) {
			t.Errorf("/init lacks %q:\n%s", s, init)
		}
	}
}

func TestBuildInitramfsNoBusybox(t *testing.T) {
	_, err := BuildInitramfs(t.TempDir(), InitramfsOptions{Busybox: "/nonexistent/busybox"})
	if err == nil || !strings.Contains(err.Error(), "busybox-static") {
		t.Errorf("err = %v, want one naming busybox-static", err)
	}
}

func TestCompareVersions(t *testing.T) {
	sorted := []string{"vmlinuz-5.10.0-9-amd64", "vmlinuz-6.1.0-9-amd64", "vmlinuz-6.1.0-10-amd64",
		"vmlinuz-6.1.0-57-amd64", "vmlinuz-6.9.0-1-amd64", "vmlinuz-6.10.0-1-amd64"}
	got := slices.Clone(sorted)
	slices.Reverse(got)
	slices.SortFunc(got, compareVersions)
	if !slices.Equal(got, sorted) {
		t.Errorf("sorted %q, want %q", got, sorted)
	}
}

func TestNewestKernel(t *testing.T) {
	dir := t.TempDir()
	if _, err := newestKernel(dir); err == nil || !strings.Contains(err.Error(), "linux-image-amd64") {
		t.Errorf("empty /boot: err = %v, want one naming linux-image-amd64", err)
	}
	for _, v := range []string{"6.1.0-9-amd64", "6.1.0-10-amd64"} {
		if err := os.WriteFile(filepath.Join(dir, "vmlinuz-"+v), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := newestKernel(dir); err != nil || filepath.Base(got) != "vmlinuz-6.1.0-10-amd64" {
		t.Errorf("newestKernel = %q, %v; want vmlinuz-6.1.0-10-amd64", got, err)
	}
}

// TestBzImagePayload builds a bzImage-shaped file around a gzip payload
// and gets the payload back, decompressed.
func TestBzImagePayload(t *testing.T) {
	const setupSects = 3
	img := make([]byte, (setupSects+1)*512+100)
	img[0x1f1] = setupSects
	copy(img[0x202:], "HdrS")
	binary.LittleEndian.PutUint16(img[0x206:], 0x20f)
	var z bytes.Buffer
	zw := gzip.NewWriter(&z)
	zw.Write([]byte("vmlinux"))
	zw.Close()
	z.Write([]byte{7, 0, 0, 0}) // the decompressed size the kernel's build appends
	binary.LittleEndian.PutUint32(img[0x248:], 40)
	binary.LittleEndian.PutUint32(img[0x24c:], uint32(z.Len()))
	img = append(img[:(setupSects+1)*512+40], z.Bytes()...)
	p, err := bzImagePayload(img)
	if err != nil {
		t.Fatal(err)
	}
	got, err := decompress(p)
	if err != nil || string(got) != "vmlinux" {
		t.Errorf("decompress = %q, %v; want vmlinux", got, err)
	}
	if err := checkPVH(got); err == nil {
		t.Error("checkPVH accepted a non-ELF")
	}
	if _, err := bzImagePayload(make([]byte, 4096)); err == nil {
		t.Error("bzImagePayload accepted a file without a setup header")
	}
}
