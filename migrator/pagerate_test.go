package migrator

import (
	"context"
	"os"
	"testing"
)

// TestMeasurePageRate: the page rate is that of a real migration of the
// guest's pages on loopback: pages that hold data take longer than the
// holes of its memory file, which it neither reads nor allocates; it
// leaves no descriptor open, and a cancelled context ends it.
func TestMeasurePageRate(t *testing.T) {
	const pages = 8192
	fd, mem, held := memfdGuest(t, pages)
	g := &memfdVM{fd: fd, mem: mem}
	fds := func() int {
		d, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Skip(err)
		}
		return len(d)
	}
	before := fds()
	holes, _, err := MeasurePageRate(context.Background(), g, pages)
	if err != nil {
		t.Fatal(err)
	}
	if held() != 0 {
		t.Fatalf("the probe allocated %d bytes of the guest's holes", held())
	}
	for p := range pages {
		mem[p*PageSize+p%PageSize] = byte(p) | 1
	}
	data, bytes, err := MeasurePageRate(context.Background(), g, pages)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%.0f pages/s of holes, %.0f of data (%.0f bytes/s)", holes, data, bytes)
	if bytes < data*PageSize || bytes > data*(PageSize+64) {
		t.Errorf("%.0f pages/s of data on %.0f bytes/s of the wire: want a page's size and a little each", data, bytes)
	}
	if !(data > 0) || holes < 2*data {
		t.Errorf("%.0f pages/s of holes, %.0f of data: want holes at least twice as fast", holes, data)
	}
	if after := fds(); after > before {
		t.Errorf("%d descriptors open before, %d after", before, after)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := MeasurePageRate(ctx, g, pages); err == nil {
		t.Error("a cancelled context: no error")
	}
}
