package guest

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"strings"
	"testing"
)

func TestLoadImage(t *testing.T) {
	k, err := Load(Image())
	if err != nil {
		t.Fatal(err)
	}
	if k.Entry < ImageAddr || k.Entry >= ReplayTableAddr {
		t.Errorf("entry %#x outside the image range", k.Entry)
	}
	if k.MultibootFlags != 3 {
		t.Errorf("multiboot flags %#x, want 0x3", k.MultibootFlags)
	}
	if k.StatusAddr < ImageAddr || k.StatusAddr+PageSize > ReplayTableAddr {
		t.Errorf("status page at %#x outside the image range", k.StatusAddr)
	}
	if len(k.Segments) == 0 {
		t.Fatal("no segments")
	}

	mem := make([]byte, MinMemory)
	for i := range mem[ImageAddr:ReplayTableAddr] {
		mem[ImageAddr+i] = 0xff
	}
	if err := k.LoadInto(mem); err != nil {
		t.Fatal(err)
	}
	for _, s := range k.Segments {
		if !bytes.Equal(mem[s.Addr:s.Addr+uint64(len(s.Data))], s.Data) {
			t.Errorf("segment %#x: data not copied", s.Addr)
		}
		if bss := mem[s.Addr+uint64(len(s.Data)) : s.Addr+s.MemSize]; bytes.Count(bss, []byte{0}) != len(bss) {
			t.Errorf("segment %#x: bss not zeroed", s.Addr)
		}
	}
	st, err := ReadStatus(mem, k.StatusAddr)
	if err != nil || st.State != StateBooting || st.CPUs != 0 {
		t.Errorf("status of a loaded, not started guest = %v, %v; want booting", st, err)
	}
	if err := k.LoadInto(make([]byte, ImageAddr)); err == nil {
		t.Error("LoadInto memory that ends before the image: no error")
	}
}

func TestLoadErrors(t *testing.T) {
	img := Image()
	noMultiboot := bytes.Clone(img)
	i := bytes.Index(noMultiboot, binary.LittleEndian.AppendUint32(nil, multibootMagic))
	noMultiboot[i] = 0
	noStatus := bytes.ReplaceAll(img, []byte(statusSymbol+"\x00"), []byte("pc_statuX\x00"))
	self, err := os.Executable() // the test binary: an ELF64 image
	if err != nil {
		t.Fatal(err)
	}
	elf64, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name    string
		img     []byte
		wantErr string
	}{
		{"empty", nil, "load guest image: EOF"},
		{"not ELF", []byte("#!/bin/sh\necho hello\n"), "load guest image: bad magic number"},
		{"ELF64", elf64, "load guest image: class ELFCLASS64, want ELFCLASS32"},
		{"no multiboot header", noMultiboot, "load guest image: no multiboot header in the first 8 KiB"},
		{"no status symbol", noStatus, "load guest image: symbol pc_status not found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load(tt.img)
			if err == nil || !strings.HasPrefix(err.Error(), tt.wantErr) {
				t.Fatalf("Load error = %v, want prefix %q", err, tt.wantErr)
			}
		})
	}
	if _, err := Load(noMultiboot); !errors.Is(err, ErrNoMultiboot) {
		t.Errorf("Load without multiboot header: %v, want ErrNoMultiboot", err)
	}
}
