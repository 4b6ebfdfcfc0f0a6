package guest

import (
	"runtime"
	"testing"
)

// FuzzLoad reads arbitrary guest images: no panic, allocations bounded by
// the image's size, and an image taken has its segments and its status
// page inside the image's range of guest memory, as LoadInto and
// ReadStatus expect.
func FuzzLoad(f *testing.F) {
	f.Add(Image())
	f.Add(Image()[:1024])
	f.Fuzz(func(t *testing.T, img []byte) {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		k, err := Load(img)
		runtime.ReadMemStats(&after)
		if grew := after.TotalAlloc - before.TotalAlloc; grew > 64<<20+64*uint64(len(img)) {
			t.Fatalf("Load of a %d-byte image allocated %d bytes", len(img), grew)
		}
		if err != nil {
			return
		}
		for _, s := range k.Segments {
			if s.Addr < ImageAddr || s.Addr+s.MemSize > ReplayTableAddr || uint64(len(s.Data)) > s.MemSize {
				t.Fatalf("segment %#x+%#x (%d bytes) outside [%#x, %#x)", s.Addr, s.MemSize, len(s.Data), ImageAddr, ReplayTableAddr)
			}
		}
		if k.StatusAddr%PageSize != 0 || k.StatusAddr < ImageAddr || k.StatusAddr+PageSize > ReplayTableAddr {
			t.Fatalf("status page at %#x outside [%#x, %#x)", k.StatusAddr, ImageAddr, ReplayTableAddr)
		}
	})
}
