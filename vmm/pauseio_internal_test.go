package vmm

import (
	"bytes"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pagecast/pagecast/guest"
	"github.com/pagecast/pagecast/internal/testutil"
)

// lines collects a VM's complete serial lines.
type lines struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lines) first() (string, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s, _, ok := strings.Cut(l.b.String(), "\n")
	return s, ok
}

// TestPauseCompletesIO: a vCPU paused just after an I/O exit has its I/O
// completed (KVM_RUN with immediate_exit) before it parks, so the state
// SaveVCPUs takes is past the instruction: KVM advances RIP past an OUT
// only when KVM_RUN is entered again, and a guest saved before that ran
// the OUT again where it was restored (its banner had a character twice,
// argued by a review walk). The guest is paused at moments spread over
// its banner's printing, the state moved to a second VM, and what the two
// printed, joined, must be the banner once.
func TestPauseCompletesIO(t *testing.T) {
	testutil.RequiresKVM(t)
	w, err := guest.ParseWorkload("idle")
	if err != nil {
		t.Fatal(err)
	}
	boot := func() (*VM, *lines) {
		t.Helper()
		out := &lines{}
		vm, err := New(Config{MemoryBytes: 16 << 20, Cmdline: w.Cmdline(1), Serial: out})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { vm.Close() })
		return vm, out
	}
	waitLine := func(vm *VM, out *lines) (string, time.Duration) {
		t.Helper()
		start := time.Now()
		for deadline := start.Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Microsecond) {
			if s, ok := out.first(); ok {
				return s, time.Since(start)
			}
		}
		st, serr := vm.State()
		t.Fatalf("no serial line in 10 s (%s, %v)", st, serr)
		return "", 0
	}
	ref, refOut := boot()
	if err := ref.Start(); err != nil {
		t.Fatal(err)
	}
	banner, took := waitLine(ref, refOut)
	ref.Close()
	t.Logf("banner %q in %v", banner, took)

	informative := 0
	for try := 0; try < 60 && informative < 25; try++ {
		a, aOut := boot()
		if err := a.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(took * time.Duration(try%20) / 20)
		if err := a.Pause(); err != nil {
			t.Fatal(err)
		}
		a.serial.mu.Lock()
		partial := a.serial.line.String()
		a.serial.mu.Unlock()
		if _, done := aOut.first(); done || partial == "" {
			a.Close()
			continue // paused before or after the banner's printing
		}
		informative++
		states, err := a.SaveVCPUs()
		if err != nil {
			t.Fatal(err)
		}
		b, bOut := boot()
		copy(b.Memory(), a.Memory())
		a.Close()
		if err := b.RestoreVCPUs(states); err != nil {
			t.Fatal(err)
		}
		if err := b.Start(); err != nil {
			t.Fatal(err)
		}
		rest, _ := waitLine(b, bOut)
		b.Close()
		if partial+rest != banner {
			t.Fatalf("try %d: paused after %q, the restored VM printed %q: joined %q, want %q", try, partial, rest, partial+rest, banner)
		}
	}
	if informative < 5 {
		t.Fatalf("only %d pauses landed within the banner's printing", informative)
	}
	t.Logf("%d pauses within the banner", informative)
}
